package secretbox_test

import (
	"net/http"
	"reflect"
	"testing"

	"github.com/tapline/tapline/internal/secretbox"
)

func TestIsSensitiveHeader(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		"Authorization":        true,
		"authorization":        true,
		"Proxy-Authorization":  true,
		"Cookie":               true,
		"Set-Cookie":           true,
		"X-Api-Key":            true,
		"x-api-key":            true,
		"X-Auth-Token":         true,
		"X-Client-Secret":      true,
		"Api-Key":              true,
		"X-Password":           true,
		"X-Amz-Security-Token": true,
		"X-OAuth-Credential":   true,
		"X-Tenant-Flavour":     true, // named in the caller's secret set below
		"WWW-Authenticate":     true, // "auth": harmless to hide
		"Content-Type":         false,
		"Accept":               false,
		"Mcp-Session-Id":       false,
		"Mcp-Protocol-Version": false,
		"User-Agent":           false,
		"Last-Event-ID":        false,
	} {
		if got := secretbox.IsSensitiveHeader(name, "x-tenant-flavour"); got != want {
			t.Errorf("IsSensitiveHeader(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestRedactHTTPHeader(t *testing.T) {
	t.Parallel()
	in := http.Header{
		"Authorization":  {"Bearer s3cr3t"},
		"Set-Cookie":     {"a=1", "b=2"},
		"Content-Type":   {"application/json"},
		"Mcp-Session-Id": {"abc"},
		"X-Custom":       {"hunter2"},
		"X-Empty-Token":  {},
		"X-Request-Id":   {"r1"},
	}
	got := secretbox.Redact(in, "X-CUSTOM")
	want := http.Header{
		"Authorization":  {"[redacted]"},
		"Set-Cookie":     {"[redacted]", "[redacted]"},
		"Content-Type":   {"application/json"},
		"Mcp-Session-Id": {"abc"},
		"X-Custom":       {"[redacted]"},
		"X-Empty-Token":  {},
		"X-Request-Id":   {"r1"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Redact = %v, want %v", got, want)
	}
	if in.Get("Authorization") != "Bearer s3cr3t" || in.Get("X-Custom") != "hunter2" {
		t.Fatal("Redact modified its argument")
	}
	got["Content-Type"][0] = "changed"
	if in.Get("Content-Type") != "application/json" {
		t.Fatal("Redact's result shares slices with its argument")
	}
}

func TestRedactStringMap(t *testing.T) {
	t.Parallel()
	in := map[string]string{
		"authorization": "Bearer s3cr3t",
		"x-api-key":     "k",
		"accept":        "text/event-stream",
		"X-Db-Password": "pw",
	}
	got := secretbox.Redact(in)
	want := map[string]string{
		"authorization": "[redacted]",
		"x-api-key":     "[redacted]",
		"accept":        "text/event-stream",
		"X-Db-Password": "[redacted]",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Redact = %v, want %v", got, want)
	}
	if in["authorization"] != "Bearer s3cr3t" {
		t.Fatal("Redact modified its argument")
	}
	if secretbox.Redact(map[string]string(nil)) != nil {
		t.Fatal("Redact(nil) != nil")
	}
	if secretbox.Redact(http.Header(nil)) != nil {
		t.Fatal("Redact(nil header) != nil")
	}
}
