package httpapi

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tapline/tapline/internal/httpapi/apigen"
)

// jsonSchema2020Only are the schema keywords whose meaning needs the JSON Schema 2020-12
// validator: kin-openapi's own validator, which checks requests (validationDialect), would
// ignore or misread them.
var jsonSchema2020Only = []string{ //nolint:gochecknoglobals // test table
	"const", "prefixItems", "contains", "minContains", "maxContains", "patternProperties",
	"dependentSchemas", "dependentRequired", "propertyNames", "unevaluatedItems",
	"unevaluatedProperties", "if", "then", "else", "$defs", "$dynamicRef", "$dynamicAnchor",
	"$anchor", "contentMediaType", "contentEncoding", "contentSchema",
}

// TestSpecNeedsNoJSONSchema2020 holds openapi.yaml to the keywords that mean the same to
// both of kin-openapi's validators, so checking requests with the faster one loses nothing.
// Adding a 3.1-only keyword fails here; the fix is to express the rule differently or to
// give up validationDialect.
func TestSpecNeedsNoJSONSchema2020(t *testing.T) {
	spec, err := apigen.GetSwagger()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	found := schema2020Keywords(doc)
	if len(found) > 0 {
		t.Errorf("openapi.yaml uses JSON Schema 2020-12 keywords the request validator does not apply:\n  %s",
			strings.Join(found, "\n  "))
	}
	// The walk itself finds what it looks for.
	var probe any
	_ = json.Unmarshal([]byte(`{"components":{"schemas":{"A":{"type":["string","null"],"properties":{"if":{"const":1}}}}}}`), &probe)
	if got := schema2020Keywords(probe); len(got) != 2 {
		t.Errorf("the probe schema gave %q, want the list type and the const", got)
	}
}

// schema2020Keywords returns the paths in doc where a JSON Schema 2020-12 keyword is used.
func schema2020Keywords(doc any) []string {
	var found []string
	var walk func(path string, v any, underProperties bool)
	walk = func(path string, v any, underProperties bool) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				p := path + "/" + k
				if !underProperties {
					switch {
					case slices.Contains(jsonSchema2020Only, k):
						found = append(found, p)
					case k == "type":
						if _, one := child.(string); !one {
							found = append(found, fmt.Sprintf("%s = %v (a list of types)", p, child))
						}
					case k == "exclusiveMinimum" || k == "exclusiveMaximum":
						if _, flag := child.(bool); !flag {
							found = append(found, p+" (a number, not a flag)")
						}
					}
				}
				walk(p, child, k == "properties" && !underProperties)
			}
		case []any:
			for i, child := range v {
				walk(fmt.Sprintf("%s/%d", path, i), child, false)
			}
		}
	}
	walk("", doc, false)
	return found
}
