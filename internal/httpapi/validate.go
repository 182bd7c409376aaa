package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/labstack/echo/v4"
)

// validationDialect is the OpenAPI version the request validator reads the spec as.
const validationDialect = "3.0.3"

// validationOptions are the same for every request; kin-openapi only reads them.
var validationOptions = &openapi3filter.Options{ //nolint:gochecknoglobals // read-only options
	AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
	MultiError:         true,
}

// specValidator checks every request against openapi.yaml before a handler sees it, so
// handlers can trust shapes, enums, lengths and required fields.
type specValidator struct {
	ops *operations
}

func (v *specValidator) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		route, params, ok := v.ops.find(c)
		if !ok {
			// Not an API operation (web assets, /metrics) or a wrong method: the router answers.
			return next(c)
		}
		req := c.Request()
		in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: validationOptions}
		if err := openapi3filter.ValidateRequest(req.Context(), in); err != nil {
			if he, ok := bodyTooLarge(err); ok {
				return he
			}
			return specProblem(err)
		}
		if fp, ok := unstorableInput(c, route, params); ok {
			return invalidInput(fp)
		}
		return next(c)
	}
}

// Why unstorableInput refuses a value.
const (
	reasonNUL     = "must not contain the NUL character"
	reasonNotUTF8 = "must be valid UTF-8"
)

// unstorableInput finds text PostgreSQL would refuse in a request the schema accepted: a NUL
// character anywhere (neither text nor jsonb can hold one) or, in a parameter, bytes that are
// not UTF-8 (a JSON body's are replaced when it is decoded). Refused here, the answer names
// the field; refused by the database, it could not (db.ErrInvalidInput).
func unstorableInput(c echo.Context, route *routers.Route, pathParams map[string]string) (FieldProblem, bool) {
	for _, params := range []openapi3.Parameters{route.PathItem.Parameters, route.Operation.Parameters} {
		for _, ref := range params {
			p := ref.Value
			if p == nil {
				continue
			}
			var values []string
			switch p.In {
			case openapi3.ParameterInPath:
				values = []string{pathParams[p.Name]}
			case openapi3.ParameterInQuery:
				// echo keeps this parse for the generated binder.
				values = c.QueryParams()[p.Name]
			default:
				// net/http refuses NUL in headers, and header parameters are not stored.
				continue
			}
			for _, v := range values {
				switch {
				case strings.IndexByte(v, 0) >= 0:
					return FieldProblem{Field: p.Name, Reason: reasonNUL}, true
				case !utf8.ValidString(v):
					return FieldProblem{Field: p.Name, Reason: reasonNotUTF8}, true
				}
			}
		}
	}
	return unstorableBody(c.Request(), route.Operation.RequestBody)
}

// nulEscape is how a JSON body spells NUL: JSON strings cannot hold control characters raw.
var nulEscape = []byte(`\u0000`) //nolint:gochecknoglobals // read-only

// unstorableBody looks for a NUL in a JSON body the validator has read (and left on
// GetBody). Only a body that spells \u0000 somewhere is decoded again, to name the field.
func unstorableBody(req *http.Request, body *openapi3.RequestBodyRef) (FieldProblem, bool) {
	if body == nil || body.Value == nil || req.GetBody == nil {
		return FieldProblem{}, false
	}
	rc, err := req.GetBody()
	if err != nil {
		return FieldProblem{}, false
	}
	defer rc.Close()
	var buf bytes.Buffer
	buf.Grow(int(max(req.ContentLength, 0)))
	if _, err := io.Copy(&buf, rc); err != nil || !bytes.Contains(buf.Bytes(), nulEscape) {
		return FieldProblem{}, false
	}
	var v any
	if json.Unmarshal(buf.Bytes(), &v) != nil {
		return FieldProblem{}, false
	}
	var schema *openapi3.Schema
	if mt := body.Value.Content.Get(req.Header.Get(echo.HeaderContentType)); mt != nil && mt.Schema != nil {
		schema = mt.Schema.Value
	}
	path, ok := nulPath(v, schema, nil)
	if !ok {
		// "\\u0000": an escaped backslash before u0000, which is text, not NUL.
		return FieldProblem{}, false
	}
	field := strings.Join(path, ".")
	if field == "" {
		field = "body"
	}
	return FieldProblem{Field: field, Reason: reasonNUL}, true
}

// nulPath names where v holds a NUL, as the validator names fields ("roots.0.name"): down
// through the members and items the schema declares, stopping at free-form JSON (tool
// arguments, JSON-RPC params), whose keys are the caller's data rather than field names, and
// at an object whose key holds the NUL. Members are visited in order, so the answer is stable.
func nulPath(v any, s *openapi3.Schema, path []string) ([]string, bool) {
	switch x := v.(type) {
	case string:
		return path, strings.IndexByte(x, 0) >= 0
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(x)) {
			member := memberSchema(s, k)
			if member == nil || strings.IndexByte(k, 0) >= 0 {
				if strings.IndexByte(k, 0) >= 0 || holdsNUL(x[k]) {
					return path, true
				}
				continue
			}
			if p, ok := nulPath(x[k], member, append(path, k)); ok {
				return p, true
			}
		}
	case []any:
		items := itemSchema(s)
		for i, e := range x {
			if items == nil {
				if holdsNUL(e) {
					return path, true
				}
				continue
			}
			if p, ok := nulPath(e, items, append(path, strconv.Itoa(i))); ok {
				return p, true
			}
		}
	}
	return nil, false
}

// holdsNUL reports whether any string or key in v holds a NUL.
func holdsNUL(v any) bool {
	switch x := v.(type) {
	case string:
		return strings.IndexByte(x, 0) >= 0
	case map[string]any:
		for k, e := range x {
			if strings.IndexByte(k, 0) >= 0 || holdsNUL(e) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if holdsNUL(e) {
				return true
			}
		}
	}
	return false
}

// memberSchema is the schema s declares for member k, as a property or as a typed map's
// values; nil means k is not a declared field (free-form JSON).
func memberSchema(s *openapi3.Schema, k string) *openapi3.Schema {
	if s == nil {
		return nil
	}
	if p := s.Properties[k]; p != nil && p.Value != nil {
		return p.Value
	}
	if ap := s.AdditionalProperties.Schema; ap != nil && ap.Value != nil {
		return ap.Value
	}
	for _, sub := range slices.Concat(s.AllOf, s.OneOf, s.AnyOf) {
		if m := memberSchema(sub.Value, k); m != nil {
			return m
		}
	}
	return nil
}

// itemSchema is the schema s declares for its array items, or nil.
func itemSchema(s *openapi3.Schema) *openapi3.Schema {
	if s == nil {
		return nil
	}
	if s.Items != nil && s.Items.Value != nil {
		return s.Items.Value
	}
	for _, sub := range slices.Concat(s.AllOf, s.OneOf, s.AnyOf) {
		if it := itemSchema(sub.Value); it != nil {
			return it
		}
	}
	return nil
}

// bodyTooLarge finds the body limit's refusal among the validator's errors. A body without
// Content-Length (chunked) is only found too large while the validator reads it, and
// kin-openapi reports the read error as a body it could not read: that is a 413, not a 400.
func bodyTooLarge(err error) (*echo.HTTPError, bool) {
	var he *echo.HTTPError
	if errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge {
		return he, true
	}
	return nil, false
}

// specProblem turns kin-openapi's validation errors into a 400 naming each field.
func specProblem(err error) *Problem {
	var out []FieldProblem
	collectFieldProblems(err, &out)
	if len(out) == 0 {
		out = append(out, FieldProblem{Field: "body", Reason: "does not match the API schema"})
	}
	return invalidInput(out...)
}

func collectFieldProblems(err error, out *[]FieldProblem) {
	// RequestError unwraps to its inner errors, so it must be matched before MultiError.
	var reqErr *openapi3filter.RequestError
	if errors.As(err, &reqErr) {
		switch {
		case reqErr.Parameter != nil:
			*out = append(*out, FieldProblem{Field: reqErr.Parameter.Name, Reason: reasonOf(reqErr.Err, reqErr.Reason)})
		case reqErr.RequestBody != nil && reqErr.Err != nil:
			var m openapi3.MultiError
			if errors.As(reqErr.Err, &m) {
				for _, e := range m {
					*out = append(*out, bodyProblem(e))
				}
			} else {
				*out = append(*out, bodyProblem(reqErr.Err))
			}
		case reqErr.RequestBody != nil:
			*out = append(*out, FieldProblem{Field: "body", Reason: firstLine(reqErr.Reason)})
		default:
			*out = append(*out, FieldProblem{Field: "request", Reason: firstLine(reqErr.Error())})
		}
		return
	}
	var multi openapi3.MultiError
	if errors.As(err, &multi) {
		for _, e := range multi {
			collectFieldProblems(e, out)
		}
		return
	}
	var secErr *openapi3filter.SecurityRequirementsError
	if errors.As(err, &secErr) {
		return
	}
	var se *openapi3.SchemaError
	if errors.As(err, &se) {
		*out = append(*out, bodyProblem(se))
		return
	}
	*out = append(*out, FieldProblem{Field: "request", Reason: firstLine(err.Error())})
}

// firstLine keeps validation messages short: kin-openapi appends the schema and value.
func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if i := strings.Index(s, "\": "); i >= 0 && strings.HasPrefix(s, "Error at \"") {
		s = s[i+3:]
	}
	if strings.HasPrefix(s, "at '': ") {
		s = strings.TrimPrefix(s, "at '': ")
	}
	return s
}

func bodyProblem(err error) FieldProblem {
	var se *openapi3.SchemaError
	if errors.As(err, &se) {
		ptr := se.JSONPointer()
		field := strings.Join(ptr, ".")
		withName := func(name string) string {
			if len(ptr) > 0 && ptr[len(ptr)-1] == name {
				return field
			}
			return strings.Trim(field+"."+name, ".")
		}
		reason := firstLine(se.Reason)
		// A missing required property is reported on its parent object; name the property.
		if strings.HasPrefix(reason, "property \"") && strings.HasSuffix(reason, "\" is missing") {
			field = withName(strings.TrimSuffix(strings.TrimPrefix(reason, "property \""), "\" is missing"))
			reason = "is required"
		}
		if strings.HasPrefix(reason, "property \"") && strings.HasSuffix(reason, "\" is unsupported") {
			field = withName(strings.TrimSuffix(strings.TrimPrefix(reason, "property \""), "\" is unsupported"))
			reason = "is not a known field"
		}
		// The JSON Schema 2020 validator (schemas with raw-JSON members) words them so.
		if name, ok := quotedIn(reason, "missing property '", "'"); ok {
			field, reason = withName(name), "is required"
		}
		if name, ok := quotedIn(reason, "additional properties '", "' not allowed"); ok {
			field, reason = withName(name), "is not a known field"
		}
		if field == "" {
			field = "body"
		}
		return FieldProblem{Field: field, Reason: reason}
	}
	msg := err.Error()
	if strings.Contains(msg, "failed to decode request body") || strings.Contains(msg, "invalid character") {
		return FieldProblem{Field: "body", Reason: "not valid JSON"}
	}
	return FieldProblem{Field: "body", Reason: firstLine(msg)}
}

func reasonOf(err error, fallback string) string {
	var se *openapi3.SchemaError
	if errors.As(err, &se) {
		return firstLine(se.Reason)
	}
	if err != nil {
		if errors.Is(err, openapi3filter.ErrInvalidRequired) {
			return "is required"
		}
		var pe *openapi3filter.ParseError
		if errors.As(err, &pe) {
			return "cannot be parsed: " + pe.Reason
		}
		return firstLine(err.Error())
	}
	if fallback != "" {
		return fallback
	}
	return http.StatusText(http.StatusBadRequest)
}

// quotedIn returns the single name between prefix and suffix in s, if s has that shape.
func quotedIn(s, prefix, suffix string) (string, bool) {
	name, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return "", false
	}
	name, ok = strings.CutSuffix(name, suffix)
	if !ok || name == "" || strings.Contains(name, "'") {
		return "", false
	}
	return name, true
}
