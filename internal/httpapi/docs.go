package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/tapline/tapline/internal/httpapi/apigen"
)

// apiDocs renders the embedded OpenAPI document as one static HTML page, once, at start.
// It needs no script and no outside asset, so it is served under the strictest CSP.
type apiDocs struct {
	page []byte
}

type docOperation struct {
	Method, Path, ID, Summary, Description, Role string
	Params                                       []docParam
	Body                                         string
	Responses                                    []docResponse
}

type docParam struct{ Name, In, Type, Description string }

type docResponse struct{ Status, Description string }

type docTag struct {
	Name       string
	Operations []docOperation
}

func newAPIDocs() (*apiDocs, error) {
	spec, err := apigen.GetSwagger()
	if err != nil {
		return nil, err
	}
	tags := map[string]*docTag{}
	var order []string
	for _, path := range spec.Paths.InMatchingOrder() {
		item := spec.Paths.Value(path)
		for method, op := range item.Operations() {
			tag := "other"
			if len(op.Tags) > 0 {
				tag = op.Tags[0]
			}
			if tags[tag] == nil {
				tags[tag] = &docTag{Name: tag}
				order = append(order, tag)
			}
			d := docOperation{Method: method, Path: path, ID: op.OperationID, Summary: op.Summary, Description: op.Description}
			if role, ok := op.Extensions["x-required-role"]; ok {
				d.Role = fmt.Sprint(role)
			}
			for _, p := range append(item.Parameters, op.Parameters...) {
				if p.Value == nil {
					continue
				}
				d.Params = append(d.Params, docParam{Name: p.Value.Name, In: p.Value.In, Type: schemaType(p.Value.Schema), Description: p.Value.Description})
			}
			if op.RequestBody != nil && op.RequestBody.Value != nil {
				for ct, mt := range op.RequestBody.Value.Content {
					d.Body = ct + ": " + schemaSummary(mt.Schema)
				}
			}
			if op.Responses != nil {
				for status, r := range op.Responses.Map() {
					desc := ""
					if r.Value != nil && r.Value.Description != nil {
						desc = *r.Value.Description
					}
					d.Responses = append(d.Responses, docResponse{Status: status, Description: desc})
				}
				slices.SortFunc(d.Responses, func(a, b docResponse) int { return strings.Compare(a.Status, b.Status) })
			}
			tags[tag].Operations = append(tags[tag].Operations, d)
		}
	}
	var list []docTag
	for _, name := range order {
		t := tags[name]
		slices.SortStableFunc(t.Operations, func(a, b docOperation) int {
			if c := strings.Compare(a.Path, b.Path); c != 0 {
				return c
			}
			return strings.Compare(a.Method, b.Method)
		})
		list = append(list, *t)
	}
	var buf bytes.Buffer
	data := map[string]any{"Title": spec.Info.Title, "Version": spec.Info.Version, "Description": spec.Info.Description, "Tags": list}
	if err := docsTemplate.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("render api docs: %w", err)
	}
	return &apiDocs{page: buf.Bytes()}, nil
}

func (d *apiDocs) serve(c echo.Context) error {
	h := c.Response().Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'sha256-"+docsStyleHash+"'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("Cache-Control", "public, max-age=300")
	return c.HTMLBlob(http.StatusOK, d.page)
}

func schemaType(ref *openapi3.SchemaRef) string {
	if ref == nil || ref.Value == nil {
		return ""
	}
	if ref.Ref != "" {
		return ref.Ref[strings.LastIndex(ref.Ref, "/")+1:]
	}
	if ref.Value.Type != nil {
		return strings.Join(ref.Value.Type.Slice(), "|")
	}
	return ""
}

// schemaSummary names a request body: its component name, or its top-level fields.
func schemaSummary(ref *openapi3.SchemaRef) string {
	if ref == nil || ref.Value == nil {
		return ""
	}
	if ref.Ref != "" {
		return schemaType(ref)
	}
	var names []string
	for name := range ref.Value.Properties {
		names = append(names, name)
	}
	slices.Sort(names)
	b, _ := json.Marshal(names)
	return "object " + string(b)
}

// docsStyle is the page's only style; the CSP allows exactly it by hash.
const docsStyle = `body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d2330}
h1{margin-bottom:.2rem}h2{margin-top:2.5rem;border-bottom:1px solid #ccd;text-transform:capitalize}
.op{border:1px solid #dde;border-radius:6px;padding:.6rem .9rem;margin:.8rem 0}
.m{display:inline-block;min-width:4.2rem;font:600 13px ui-monospace,monospace}.p{font:14px ui-monospace,monospace}
.role{float:right;font-size:12px;background:#eef;border-radius:4px;padding:0 .4rem}
table{border-collapse:collapse;font-size:13px;margin:.3rem 0}td{padding:.1rem .6rem .1rem 0;vertical-align:top}
pre{white-space:pre-wrap;background:#f6f7f9;padding:.8rem;border-radius:6px;font-size:13px}
@media(prefers-color-scheme:dark){body{background:#14171c;color:#dde}.op{border-color:#334}pre{background:#1d2128}.role{background:#2a2f45}}`

var docsStyleHash = cspHash(docsStyle) //nolint:gochecknoglobals // derived constant

var docsTemplate = template.Must(template.New("docs").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{.Title}} reference</title><style>` + docsStyle + `</style></head><body>
<h1>{{.Title}}</h1><p>Version {{.Version}} · <a href="/openapi.yaml">openapi.yaml</a></p>
<pre>{{.Description}}</pre>
{{range .Tags}}<h2 id="{{.Name}}">{{.Name}}</h2>
{{range .Operations}}<div class="op" id="{{.ID}}"><span class="m">{{.Method}}</span> <span class="p">{{.Path}}</span>{{if .Role}}<span class="role">role: {{.Role}}</span>{{end}}
<div><strong>{{.Summary}}</strong></div>{{if .Description}}<div>{{.Description}}</div>{{end}}
{{if .Params}}<table>{{range .Params}}<tr><td class="p">{{.Name}}</td><td>{{.In}}</td><td>{{.Type}}</td><td>{{.Description}}</td></tr>{{end}}</table>{{end}}
{{if .Body}}<div>Body: <span class="p">{{.Body}}</span></div>{{end}}
<table>{{range .Responses}}<tr><td class="p">{{.Status}}</td><td>{{.Description}}</td></tr>{{end}}</table></div>
{{end}}{{end}}</body></html>
`)) //nolint:gochecknoglobals // parsed once

func cspHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base64.StdEncoding.EncodeToString(sum[:])
}
