package httpapi

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
	"github.com/labstack/echo/v4"

	"github.com/tapline/tapline/internal/httpapi/apigen"
)

// operations finds the openapi.yaml operation of a request from the route echo matched, so
// the middlewares that need it (the role gate, the validator) do not route it again: kin's
// own router matched every path against regular expressions, twice per request, which cost
// more than the rest of both middlewares.
type operations struct {
	// spec is the embedded spec the routes belong to.
	spec *openapi3.T
	// byRoute maps "METHOD /echo/:path" to the operation's route.
	byRoute map[string]*routers.Route
}

// newOperations indexes the embedded spec's operations, which the request validator checks
// requests against (validationDialect).
func newOperations() (*operations, error) {
	spec, err := apigen.GetSwagger()
	if err != nil {
		return nil, fmt.Errorf("load embedded spec: %w", err)
	}
	// Match on paths only: the server URL in the spec is relative and hosts vary.
	spec.Servers = nil
	// For a 3.1 document kin-openapi builds and compiles a JSON Schema 2020-12 validator on
	// every value it checks, about 0.4 ms of CPU per request. The spec uses only keywords
	// that mean the same in 3.0 and 3.1 (TestSpecNeedsNoJSONSchema2020 holds it to that), so
	// requests are checked by kin-openapi's own validator, which walks the parsed schema.
	spec.OpenAPI = validationDialect
	ops := &operations{spec: spec, byRoute: map[string]*routers.Route{}}
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			ops.byRoute[method+" "+echoPath(path)] = &routers.Route{Spec: spec, Path: path, PathItem: item, Method: method, Operation: op}
		}
	}
	return ops, nil
}

// echoPath writes an OpenAPI path template as echo's route: {id} becomes :id.
func echoPath(path string) string {
	var b strings.Builder
	for {
		open := strings.IndexByte(path, '{')
		if open < 0 {
			b.WriteString(path)
			return b.String()
		}
		end := strings.IndexByte(path[open:], '}')
		if end < 0 {
			b.WriteString(path)
			return b.String()
		}
		b.WriteString(path[:open])
		b.WriteByte(':')
		b.WriteString(path[open+1 : open+end])
		path = path[open+end+1:]
	}
}

// find returns the operation echo routed c to and its path parameters, or false for a
// request that is not an API operation (web assets, /metrics, an unknown path or method),
// which echo's router answers.
func (o *operations) find(c echo.Context) (*routers.Route, map[string]string, bool) {
	route, ok := o.byRoute[c.Request().Method+" "+c.Path()]
	if !ok {
		return nil, nil, false
	}
	names := c.ParamNames()
	params := make(map[string]string, len(names))
	for i, v := range c.ParamValues() {
		if i < len(names) {
			if u, err := url.PathUnescape(v); err == nil {
				v = u
			}
			params[names[i]] = v
		}
	}
	return route, params, true
}

// checkRoutes fails when echo serves an API path the index does not know, or the other way
// round: the middlewares would let such a request through unchecked.
func (o *operations) checkRoutes(e *echo.Echo) error {
	served := map[string]bool{}
	for _, r := range e.Routes() {
		served[r.Method+" "+r.Path] = true
	}
	var missing []string
	for key := range o.byRoute {
		if !served[key] {
			missing = append(missing, key)
		}
	}
	for key := range served {
		if _, path, _ := strings.Cut(key, " "); strings.HasPrefix(path, "/v1/") && o.byRoute[key] == nil {
			missing = append(missing, key)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("routes and spec operations differ: %s", strings.Join(missing, ", "))
	}
	return nil
}
