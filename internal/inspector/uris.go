package inspector

import (
	"encoding/json"
	"strings"
)

// uriFields are where a forwarded request carries resource URIs: the operation's own params
// and, for a raw JSON-RPC request, the params it sends.
type uriFields struct {
	URI string `json:"uri"`
	Ref struct {
		URI string `json:"uri"`
	} `json:"ref"`
}

// checkRequestURIs refuses a forwarded request whose resource URI holds a control character
// (U+0000 to U+001F or U+007F), which no URI or IRI may contain. Sent to go-sdk's server, a
// resources/read of one went unanswered and the session's event stream could not be resumed
// after it ("failed to replay events"): the request answered 502 and the session lost its
// connection, and the calls running on it. Refused here, it is a 400 naming the field before
// it leaves the api.
func checkRequestURIs(op Op, params json.RawMessage) error {
	switch op {
	case OpReadResource, OpSubscribe, OpUnsubscribe, OpComplete, OpRPC:
	default:
		return nil // no resource URI: nothing to decode
	}
	var p struct {
		uriFields
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	if json.Unmarshal(params, &p) != nil {
		// The worker names what is wrong with params it cannot read.
		return nil
	}
	prefix := ""
	if op == OpRPC {
		if p.Method != "resources/read" && p.Method != "completion/complete" {
			return nil
		}
		var inner uriFields
		if json.Unmarshal(p.Params, &inner) != nil {
			return nil
		}
		p.uriFields, prefix = inner, "params."
	}
	for _, f := range [...]struct{ field, uri string }{{"uri", p.URI}, {"ref.uri", p.Ref.URI}} {
		if strings.IndexFunc(f.uri, isControl) >= 0 {
			return &ValidationError{Field: prefix + f.field, Reason: "must not contain control characters"}
		}
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
