package inspector

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// The persister encodes the events it publishes by hand; readers must decode exactly what
// json.Marshal would have produced.
func TestAppendEventJSONDecodesLikeMarshal(t *testing.T) {
	at := time.Date(2026, 7, 28, 12, 34, 56, 789012345, time.UTC)
	cases := []Event{
		{Seq: 1, Type: EventFrame, At: at, Data: json.RawMessage(`{"dir":"recv","message":{"jsonrpc":"2.0","id":1}}`)},
		{Seq: 42, Type: EventCallResult, At: at.Add(time.Hour), Data: json.RawMessage("{\n  \"call_id\": \"x\",\n  \"text\": \"<b>&amp;\\u00e9\"\n}")},
		{Seq: 7, Type: EventStatus, At: at.Truncate(time.Second), Data: nil},
		{Seq: 9, Type: EventType(`odd "type"`), At: at, Data: json.RawMessage(`[1,2,3]`)},
	}
	for _, want := range cases {
		got := appendEventJSON(nil, want.Seq, want.Type, want.At, want.Data)
		var fromHand, fromMarshal Event
		if err := json.Unmarshal(got, &fromHand); err != nil {
			t.Fatalf("%s: not JSON: %v", got, err)
		}
		marshalled, _ := json.Marshal(want)
		_ = json.Unmarshal(marshalled, &fromMarshal)
		if fromHand.Seq != fromMarshal.Seq || fromHand.Type != fromMarshal.Type || !fromHand.At.Equal(fromMarshal.At) {
			t.Fatalf("hand %s\nmarshal %s", got, marshalled)
		}
		var x, y any
		_ = json.Unmarshal(fromHand.Data, &x)
		_ = json.Unmarshal(fromMarshal.Data, &y)
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("data differs: hand %s, marshal %s", fromHand.Data, fromMarshal.Data)
		}
	}
}
