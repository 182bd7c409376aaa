package httpapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

func TestEchoPath(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/sessions":                                  "/v1/sessions",
		"/v1/sessions/{id}":                             "/v1/sessions/:id",
		"/v1/sessions/{id}/calls/{call_id}":             "/v1/sessions/:id/calls/:call_id",
		"/v1/sessions/{id}/pending/{request_id}/answer": "/v1/sessions/:id/pending/:request_id/answer",
		"/broken/{id":                                   "/broken/{id",
	} {
		if got := echoPath(in); got != want {
			t.Errorf("echoPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// Every operation is found from echo's route, and a route echo serves without an operation
// (or the reverse) stops the server from starting.
func TestOperationsMatchRoutes(t *testing.T) {
	ops, err := newOperations()
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	noop := func(echo.Context) error { return nil }
	for key := range ops.byRoute {
		method, path, _ := strings.Cut(key, " ")
		e.Add(method, path, noop)
	}
	if err := ops.checkRoutes(e); err != nil {
		t.Fatal(err)
	}
	e.Add(http.MethodGet, "/v1/unspecified", noop)
	if err := ops.checkRoutes(e); err == nil || !strings.Contains(err.Error(), "GET /v1/unspecified") {
		t.Fatalf("a route outside the spec = %v", err)
	}
	// find resolves a routed request with its decoded path parameters.
	req, _ := http.NewRequest(http.MethodGet, "/v1/sessions/0192f1c2-0000-7000-8000-000000000001/calls/abc%20def", nil)
	c := e.NewContext(req, nil)
	e.Router().Find(http.MethodGet, req.URL.EscapedPath(), c)
	route, params, ok := ops.find(c)
	if !ok || route.Path != "/v1/sessions/{id}/calls/{call_id}" || params["call_id"] != "abc def" {
		t.Fatalf("find = %v %v %v", route, params, ok)
	}
}
