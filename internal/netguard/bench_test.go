package netguard_test

import (
	"context"
	"testing"

	"github.com/tapline/tapline/internal/netguard"
)

func BenchmarkCheckURL(b *testing.B) {
	g := newGuard(b, netguard.Config{})
	ctx := context.Background()
	for _, u := range []string{"https://public.test/mcp", "https://[2606:4700::1111]/mcp", "http://0x7f.1/"} {
		b.Run(u, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = g.CheckURL(ctx, u)
			}
		})
	}
}
