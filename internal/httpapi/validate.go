package httpapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
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
			return specProblem(err)
		}
		return next(c)
	}
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
