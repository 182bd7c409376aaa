package httpapi_test

import (
	"strings"
	"testing"

	"github.com/tapline/tapline/internal/httpapi/apigen"
)

func TestDocsRendersEveryOperation(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.do(t, "GET", "/docs", "", nil)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("docs = %d %s", r.status, r.header.Get("Content-Type"))
	}
	csp := r.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe") {
		t.Fatalf("docs CSP = %q", csp)
	}
	if strings.Contains(r.raw, "<script") {
		t.Fatal("the docs page carries a script")
	}
	spec, err := apigen.GetSwagger()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, path := range spec.Paths.InMatchingOrder() {
		for _, op := range spec.Paths.Value(path).Operations() {
			n++
			if !strings.Contains(r.raw, `id="`+op.OperationID+`"`) {
				t.Errorf("operation %s missing from /docs", op.OperationID)
			}
		}
	}
	if n < 40 || !strings.Contains(r.raw, "role: member") || !strings.Contains(r.raw, "/v1/sessions/{id}/events/stream") {
		t.Fatalf("docs lists %d operations or lacks roles/paths", n)
	}
}
