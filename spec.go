// Package tapline is the root of the Tapline module. It holds only the embedded OpenAPI
// document; the code lives under cmd/ and internal/.
package tapline

import _ "embed"

// OpenAPISpec is openapi.yaml, the source of truth for the REST API.
//
//go:embed openapi.yaml
var OpenAPISpec []byte
