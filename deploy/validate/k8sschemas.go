package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// runK8sSchemas converts the Kubernetes OpenAPI v2 document (api/openapi-spec/swagger.json
// of the k8s.io/kubernetes module) into the files kubeconform looks up with its default
// template, <kind><kindSuffix>.json: "deployment-apps-v1.json", "service-v1.json". Each file
// is standalone (it carries the definitions it reaches) and strict (objects refuse fields
// they do not declare, as kubectl's client-side validation does), with the two Kubernetes
// scalar quirks applied: IntOrString takes a string or an integer and Quantity a string or a
// number. Descriptions are dropped; they are most of the size and no validator reads them.
func runK8sSchemas(args []string) error {
	fs := flag.NewFlagSet("k8s-schemas", flag.ContinueOnError)
	swagger := fs.String("swagger", "", "Kubernetes OpenAPI v2 document (swagger.json)")
	out := fs.String("out", "", "output directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *swagger == "" || *out == "" {
		return errors.New("need -swagger and -out")
	}
	raw, err := os.ReadFile(*swagger)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("%s: %w", *swagger, err)
	}
	defs, ok := doc["definitions"].(map[string]any)
	if !ok || len(defs) == 0 {
		return fmt.Errorf("%s has no definitions", *swagger)
	}
	for name, d := range defs {
		m, ok := d.(map[string]any)
		if !ok {
			return fmt.Errorf("definition %s is not an object", name)
		}
		stripDescriptions(m)
		switch {
		case strings.HasSuffix(name, ".util.intstr.IntOrString"):
			defs[name] = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
		case strings.HasSuffix(name, ".api.resource.Quantity"):
			defs[name] = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
		default:
			strict(m)
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(defs))
	for name := range defs {
		names = append(names, name)
	}
	sort.Strings(names)
	written := 0
	for _, name := range names {
		def := defs[name].(map[string]any)
		gvks, _ := def["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			gvk, _ := g.(map[string]any)
			group, _ := gvk["group"].(string)
			version, _ := gvk["version"].(string)
			kind, _ := gvk["kind"].(string)
			if kind == "" || version == "" {
				continue
			}
			file := filepath.Join(*out, strings.ToLower(kind)+kindSuffix(group, version)+".json")
			if _, err := os.Stat(file); err == nil {
				continue // two groups share a first label; the first definition wins
			}
			schema := make(map[string]any, len(def)+2)
			for k, v := range def {
				schema[k] = v
			}
			schema["$schema"] = "http://json-schema.org/draft-04/schema#"
			reach := map[string]any{}
			collectRefs(def, defs, reach)
			if len(reach) > 0 {
				schema["definitions"] = reach
			}
			b, err := json.Marshal(schema)
			if err != nil {
				return err
			}
			if err := os.WriteFile(file, b, 0o644); err != nil {
				return err
			}
			written++
		}
	}
	if written == 0 {
		return fmt.Errorf("%s: no definition carries x-kubernetes-group-version-kind", *swagger)
	}
	fmt.Printf("wrote %d schemas to %s\n", written, *out)
	return nil
}

// kindSuffix mirrors kubeconform's template variable: "-v1" for the core group, else
// "-<first label of the group>-<version>".
func kindSuffix(group, version string) string {
	if group == "" {
		return "-" + strings.ToLower(version)
	}
	first, _, _ := strings.Cut(group, ".")
	return "-" + strings.ToLower(first) + "-" + strings.ToLower(version)
}

const refPrefix = "#/definitions/"

// collectRefs adds every definition reachable from node to reach.
func collectRefs(node any, defs, reach map[string]any) {
	switch n := node.(type) {
	case map[string]any:
		if ref, ok := n["$ref"].(string); ok && strings.HasPrefix(ref, refPrefix) {
			name := strings.TrimPrefix(ref, refPrefix)
			if _, seen := reach[name]; !seen {
				if d, ok := defs[name]; ok {
					reach[name] = d
					collectRefs(d, defs, reach)
				}
			}
		}
		for _, v := range n {
			collectRefs(v, defs, reach)
		}
	case []any:
		for _, v := range n {
			collectRefs(v, defs, reach)
		}
	}
}

// strict sets additionalProperties: false on every object schema that lists properties and
// says nothing about others. It walks schema positions only, so a property that happens to
// be named "properties" is not mistaken for a keyword.
func strict(s map[string]any) {
	if props, ok := s["properties"].(map[string]any); ok {
		for _, p := range props {
			if m, ok := p.(map[string]any); ok {
				strict(m)
			}
		}
		if _, set := s["additionalProperties"]; !set {
			s["additionalProperties"] = false
		}
	}
	for _, k := range []string{"additionalProperties", "items", "not"} {
		if m, ok := s[k].(map[string]any); ok {
			strict(m)
		}
	}
	for _, k := range []string{"allOf", "anyOf", "oneOf"} {
		if l, ok := s[k].([]any); ok {
			for _, v := range l {
				if m, ok := v.(map[string]any); ok {
					strict(m)
				}
			}
		}
	}
}

// stripDescriptions removes "description" keywords, again only at schema positions.
func stripDescriptions(s map[string]any) {
	delete(s, "description")
	if props, ok := s["properties"].(map[string]any); ok {
		for _, p := range props {
			if m, ok := p.(map[string]any); ok {
				stripDescriptions(m)
			}
		}
	}
	for _, k := range []string{"additionalProperties", "items", "not"} {
		if m, ok := s[k].(map[string]any); ok {
			stripDescriptions(m)
		}
	}
	for _, k := range []string{"allOf", "anyOf", "oneOf"} {
		if l, ok := s[k].([]any); ok {
			for _, v := range l {
				if m, ok := v.(map[string]any); ok {
					stripDescriptions(m)
				}
			}
		}
	}
}
