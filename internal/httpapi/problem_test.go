package httpapi

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tapline/tapline/internal/db"
)

func TestDatabaseRefusedValueIsInvalidInput(t *testing.T) {
	for _, code := range []string{"22021", "22P05", "22P02"} {
		err := fmt.Errorf("insert session: %w", db.InterpretError(&pgconn.PgError{Code: code, Message: "refused"}))
		p := problemFor(err)
		if p.Status != http.StatusBadRequest || p.Type != problemTypeBase+"invalid-input" || p.Detail == "" {
			t.Fatalf("SQLSTATE %s: problem = %+v, want a 400 invalid-input with a detail", code, p)
		}
	}
}

// TestBinderMessagesNameTheirParameter reads every 400 the generated binder can return, so a
// newer oapi-codegen that words them otherwise fails here rather than naming "body".
func TestBinderMessagesNameTheirParameter(t *testing.T) {
	src, err := os.ReadFile("apigen/apigen.gen.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`echo\.NewHTTPError\(http\.StatusBadRequest, (?:fmt\.Sprintf\()?"((?:[^"\\]|\\.)*)"`)
	found := re.FindAllSubmatch(src, -1)
	if len(found) == 0 {
		t.Fatal("no binder errors found in apigen.gen.go")
	}
	for _, m := range found {
		tmpl, err := strconv.Unquote(`"` + string(m[1]) + `"`)
		if err != nil {
			t.Fatal(err)
		}
		// As the runtime fills them in: its own errors hold ": " too.
		msg := strings.NewReplacer("%s", "error parsing 'x' as RFC3339: bad", "%d", "2").Replace(tmpl)
		fp, ok := binderProblem(msg)
		if !ok || fp.Field == "" || fp.Reason == "" || !strings.Contains(tmpl, fp.Field) {
			t.Fatalf("binder message %q gives %+v, %v; want its parameter named", msg, fp, ok)
		}
	}
	// Shapes oapi-codegen's echo templates can also produce, for parameters the spec does
	// not have yet.
	for msg, want := range map[string]FieldProblem{
		"Invalid format for parameter limit: multiple values for single value parameter 'limit'": {Field: "limit", Reason: "must be given once"},
		"Expected one value for Last-Event-ID, got 2":                                            {Field: "Last-Event-ID", Reason: "must be given once, got 2"},
		"Query argument after_seq is required, but not found":                                    {Field: "after_seq", Reason: "is required"},
		"Header parameter Idempotency-Key is required, but not found":                            {Field: "Idempotency-Key", Reason: "is required"},
		"Error unmarshaling parameter 'filter' as JSON":                                          {Field: "filter", Reason: "is not valid JSON"},
		"Error unescaping cookie parameter 'session'":                                            {Field: "session", Reason: "cannot be unescaped"},
	} {
		if got, ok := binderProblem(msg); !ok || got != want {
			t.Errorf("binderProblem(%q) = %+v, %v; want %+v", msg, got, ok, want)
		}
	}
	if _, ok := binderProblem("Unmarshal type error: expected=string"); ok {
		t.Error("a body decoding error was taken for a parameter's")
	}
}
