package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// minAttemptTimeout keeps the first of several addresses from being left
// with a uselessly short share of the dial deadline.
const minAttemptTimeout = 2 * time.Second

// DialContext connects to address ("host:port") over TCP after resolving the
// host with the Guard's Resolver and judging every address. It dials the
// judged addresses themselves, in the resolver's order, and the dialer's
// Control hook judges each one again just before connect(2). A refusal is
// a *RefusedError in the returned chain.
//
// Its signature matches http.Transport.DialContext.
func (g *Guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var lookupNetwork string
	switch network {
	case "tcp":
		lookupNetwork = "ip"
	case "tcp4":
		lookupNetwork = "ip4"
	case "tcp6":
		lookupNetwork = "ip6"
	default:
		return nil, g.refuse(ctx, &RefusedError{Host: address, Reason: reasonNetwork})
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("netguard: dial %s: %w", network, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, g.refuse(ctx, &RefusedError{Host: host, Reason: reasonInvalidPort})
	}

	ctx, cancel := context.WithTimeout(ctx, g.dialTimeout)
	defer cancel()

	ips, err := g.resolve(ctx, lookupNetwork, host)
	if err != nil {
		if refused := (*RefusedError)(nil); errors.As(err, &refused) {
			return nil, err
		}
		return nil, fmt.Errorf("netguard: dial %s %s: %w", network, address, err)
	}

	d := &net.Dialer{
		KeepAlive: 30 * time.Second,
		ControlContext: func(ctx context.Context, network, address string, _ syscall.RawConn) error {
			return g.control(ctx, host, network, address)
		},
	}
	var firstErr error
	for i, ip := range ips {
		conn, err := dialOne(ctx, d, network, netip.AddrPortFrom(ip.Unmap(), uint16(port)), len(ips)-i)
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// dialOne dials one address with a fair share of what is left of the
// deadline, so that a black-holed first address leaves time for the next.
func dialOne(ctx context.Context, d *net.Dialer, network string, ap netip.AddrPort, remaining int) (net.Conn, error) {
	if remaining > 1 {
		if deadline, ok := ctx.Deadline(); ok {
			share := time.Until(deadline) / time.Duration(remaining)
			if share < minAttemptTimeout {
				share = minAttemptTimeout
			}
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, share)
			defer cancel()
		}
	}
	return d.DialContext(ctx, network, ap.String())
}

// control is the dialer's last check, run after the socket exists and
// before connect(2), on the address really being connected to.
func (g *Guard) control(ctx context.Context, host, network, address string) error {
	if network != "tcp4" && network != "tcp6" {
		return g.refuse(ctx, &RefusedError{Host: host, Reason: reasonNetwork})
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return g.refuse(ctx, &RefusedError{Host: host, Reason: reasonInvalidLiteral})
	}
	if reason := g.verdict(ap.Addr()); reason != "" {
		return g.refuse(ctx, &RefusedError{Host: host, IP: ap.Addr(), Reason: reason})
	}
	return nil
}
