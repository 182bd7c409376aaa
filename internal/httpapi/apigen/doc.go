// Package apigen is generated from openapi.yaml by oapi-codegen (`make generate`): request
// and response types, the echo routes and the strict server interface that package httpapi
// implements. Never edit apigen.gen.go by hand.
package apigen

//go:generate go tool oapi-codegen -config config.yaml ../../../openapi.yaml
