package secretbox

import (
	"slices"
	"strings"
)

// Redacted replaces the value of a sensitive header.
const Redacted = "[redacted]"

// sensitiveHeaders are always redacted, compared case-insensitively.
var sensitiveHeaders = []string{
	"Authorization",
	"Proxy-Authorization",
	"Cookie",
	"Set-Cookie",
	"X-Api-Key",
}

// sensitiveWords redact any header whose name contains one of them,
// case-insensitively: X-Auth-Token, X-Client-Secret, Api-Key, …
var sensitiveWords = []string{"token", "secret", "key", "auth", "password", "passwd", "cookie", "credential"}

// IsSensitiveHeader reports whether a header of that name must be redacted:
// a well-known credential header, a name containing a sensitive word
// (token, secret, key, auth, password, passwd, cookie, credential), or a
// name in secret, which callers fill with the names of the headers a target
// was configured with as secrets. All comparisons ignore case.
func IsSensitiveHeader(name string, secret ...string) bool {
	for _, s := range secret {
		if strings.EqualFold(name, s) {
			return true
		}
	}
	for _, s := range sensitiveHeaders {
		if strings.EqualFold(name, s) {
			return true
		}
	}
	lower := strings.ToLower(name)
	for _, w := range sensitiveWords {
		if strings.Contains(lower, w) {
			return true
		}
	}
	return false
}

// Redact returns a copy of headers in which the value of every sensitive
// header (see IsSensitiveHeader) is replaced by Redacted; each value of a
// multi-valued header is replaced, keeping the count. It works on
// http.Header, map[string][]string and map[string]string alike, and never
// modifies its argument. A nil map gives nil.
func Redact[M ~map[string]V, V string | []string](headers M, secret ...string) M {
	if headers == nil {
		return nil
	}
	out := make(M, len(headers))
	for name, v := range headers {
		if !IsSensitiveHeader(name, secret...) {
			out[name] = cloneValue(v)
			continue
		}
		var redacted V
		switch p := any(&redacted).(type) {
		case *string:
			*p = Redacted
		case *[]string:
			vs := any(v).([]string)
			if vs != nil {
				*p = make([]string, len(vs))
				for i := range vs {
					(*p)[i] = Redacted
				}
			}
		}
		out[name] = redacted
	}
	return out
}

// cloneValue copies slices so the result shares nothing with the input.
func cloneValue[V string | []string](v V) V {
	if vs, ok := any(v).([]string); ok {
		return any(slices.Clone(vs)).(V)
	}
	return v
}
