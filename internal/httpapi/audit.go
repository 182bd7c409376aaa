package httpapi

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/tapline/tapline/internal/audit"
	"github.com/tapline/tapline/internal/auth"
	"github.com/tapline/tapline/internal/httpapi/apigen"
	"github.com/tapline/tapline/internal/tenant"
)

// auditMiddleware puts the request's client address, user agent and id, and the caller as
// an audit actor, into the request context, so audit.Recorder.Record fills them in wherever
// it is called from. It runs after authentication.
func (s *Server) auditMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		ctx := audit.WithRequestMeta(req.Context(), audit.RequestMeta{
			ClientIP:  c.RealIP(),
			UserAgent: req.UserAgent(),
			RequestID: c.Response().Header().Get(echo.HeaderXRequestID),
		})
		if p, ok := auth.FromContext(ctx); ok {
			ctx = audit.WithActor(ctx, actorOf(p))
		}
		ctx = context.WithValue(ctx, acceptKey{}, req.Header.Get("Accept"))
		c.SetRequest(req.WithContext(ctx))
		return next(c)
	}
}

type acceptKey struct{}

func actorOf(p *auth.Principal) audit.Actor {
	return audit.Actor{Kind: string(p.Kind), ID: p.ID(), Name: p.Name}
}

// auditAfter returns a store hook that records action on the object a store method changed,
// in the same transaction as the change.
func auditAfter[T any](s *Server, tenantID, action string, describe func(*T) (audit.Target, map[string]any)) tenant.After[T] {
	return func(ctx context.Context, tx pgx.Tx, changed *T) error {
		target, details := describe(changed)
		_, err := s.cfg.Audit.Record(ctx, tx, audit.Entry{TenantID: tenantID, Action: action, Target: target, Details: details})
		return err
	}
}

// ListAudit answers a page of the audit log, or streams the whole range as JSON lines or CSV.
func (s *Server) ListAudit(ctx context.Context, req apigen.ListAuditRequestObject) (apigen.ListAuditResponseObject, error) {
	p, err := auth.Require(ctx, tenant.RoleAdmin)
	if err != nil {
		return nil, err
	}
	prm := req.Params
	f := audit.Filter{From: prm.From, To: prm.To, Action: deref(prm.Action), Actor: deref(prm.Actor)}
	// A filter Export would refuse is refused here: once the export is recorded and its
	// 200 started, a refusal could only drop the connection and leave a false record.
	if err := f.Validate(); err != nil {
		return nil, err
	}
	format := string(deref(prm.Format))
	if format == "" {
		accept, _ := ctx.Value(acceptKey{}).(string)
		format = formatFromAccept(accept)
	}
	if format == "json" {
		page, err := s.cfg.Audit.List(ctx, p.TenantID, f, audit.PageParams{
			Limit: deref(prm.Limit), Cursor: deref(prm.Cursor), Descending: deref(prm.Order) == apigen.ListAuditParamsOrderDesc,
		})
		if err != nil {
			return nil, err
		}
		return auditPage{Items: page.Items, NextCursor: page.NextCursor}, nil
	}
	// The export is itself audited, before a byte is sent: no record, no export.
	details := map[string]any{"format": format, "action": f.Action, "actor": f.Actor}
	if f.From != nil {
		details["from"] = f.From.UTC().Format(time.RFC3339Nano)
	}
	if f.To != nil {
		details["to"] = f.To.UTC().Format(time.RFC3339Nano)
	}
	if _, err := s.cfg.Audit.Record(ctx, nil, audit.Entry{
		TenantID: p.TenantID, Action: audit.ActionAuditExport, Target: audit.Target{Type: "audit_log", ID: p.TenantID}, Details: details,
	}); err != nil {
		return nil, err
	}
	return &auditExport{ctx: ctx, s: s, tenantID: p.TenantID, filter: f, format: format}, nil
}

// formatFromAccept picks jsonl or csv when the Accept header prefers them, else json.
func formatFromAccept(accept string) string {
	for part := range strings.SplitSeq(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "application/x-ndjson", "application/jsonl", "application/jsonlines":
			return audit.FormatJSONL
		case "text/csv":
			return audit.FormatCSV
		case "application/json", "*/*", "application/*":
			return "json"
		}
	}
	return "json"
}

// auditPage writes events in their export form, so times keep the six fractional digits
// that were hashed.
type auditPage struct {
	Items      []audit.Event `json:"items"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

func (pg auditPage) VisitListAuditResponse(w http.ResponseWriter) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	return json.NewEncoder(w).Encode(pg)
}

// auditExport streams a range of the log. Once the first byte is out, a failure can no longer
// become a problem response, so it aborts the connection: the client sees a truncated
// transfer, never a short export that looks complete.
type auditExport struct {
	ctx      context.Context
	s        *Server
	tenantID string
	filter   audit.Filter
	format   string
}

func (ex *auditExport) VisitListAuditResponse(w http.ResponseWriter) error {
	ext, ctype := "jsonl", "application/x-ndjson"
	if ex.format == audit.FormatCSV {
		ext, ctype = "csv", "text/csv; charset=utf-8"
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="tapline-audit-%s.%s"`, ex.tenantID, ext))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flush := func() {}
	if f, ok := w.(http.Flusher); ok {
		flush = f.Flush
	}
	n, err := ex.s.cfg.Audit.Export(ex.ctx, w, ex.tenantID, ex.filter, audit.ExportOptions{Format: ex.format, Flush: flush})
	if err != nil {
		ex.s.logger.WarnContext(ex.ctx, "audit export aborted", slog.Int64("rows", n), slog.Any("error", err))
		panic(http.ErrAbortHandler)
	}
	return nil
}

// VerifyAudit checks the tenant's hash chain over a range.
func (s *Server) VerifyAudit(ctx context.Context, req apigen.VerifyAuditRequestObject) (apigen.VerifyAuditResponseObject, error) {
	p, err := auth.Require(ctx, tenant.RoleAdmin)
	if err != nil {
		return nil, err
	}
	res, err := s.cfg.Audit.Verify(ctx, p.TenantID, req.Params.From, req.Params.To)
	if err != nil {
		return nil, err
	}
	out := apigen.VerifyAudit200JSONResponse{Ok: res.OK, Checked: res.Checked}
	if !res.OK {
		out.FirstBadID, out.FirstBadSeq, out.Reason = &res.FirstBadID, &res.FirstBadSeq, &res.Reason
	}
	if res.HeadHash != nil {
		head := hex.EncodeToString(res.HeadHash)
		out.LastSeq, out.HeadHash = &res.LastSeq, &head
	}
	return out, nil
}

// clientIPExtractor trusts X-Forwarded-For only from the configured proxies; with none, the
// peer address is the client, so a caller cannot choose its own address for the audit log or
// the per-address rate limits. Behind trusted proxies the client is the rightmost address
// that is not one of them, walking the header from the peer back; entries may carry a port
// (203.0.113.7:4711, [2001:db8::1]:4711), as some proxies write them, and count as their
// address. An entry that is no address at all makes the whole header untrustworthy: the
// peer is the client.
func clientIPExtractor(trusted []netip.Prefix) echo.IPExtractor {
	direct := echo.ExtractIPDirect()
	if len(trusted) == 0 {
		return direct
	}
	proxies := make([]netip.Prefix, len(trusted))
	for i, p := range trusted {
		proxies[i] = unmapPrefix(p)
	}
	isProxy := func(a netip.Addr) bool {
		for _, p := range proxies {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return func(req *http.Request) string {
		peer := direct(req)
		addr, ok := forwardedAddr(peer)
		if !ok || !isProxy(addr) {
			return peer
		}
		hops := strings.Split(strings.Join(req.Header.Values(echo.HeaderXForwardedFor), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, ok := forwardedAddr(hops[i])
			if !ok {
				return peer
			}
			if !isProxy(a) {
				return a.String()
			}
			addr = a
		}
		// Every hop is a trusted proxy: the farthest one is the nearest to the client.
		return addr.String()
	}
}

// forwardedAddr reads one X-Forwarded-For entry: an address, bracketed or not, with or
// without a port. An IPv4 address mapped into IPv6 is read as the IPv4 address, and a zone,
// meaningless off the host that wrote it, is dropped.
func forwardedAddr(entry string) (netip.Addr, bool) {
	entry = strings.TrimSpace(entry)
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(entry, "["), "]"))
	if err != nil {
		ap, perr := netip.ParseAddrPort(entry)
		if perr != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.Unmap().WithZone(""), true
}

// unmapPrefix writes a prefix of IPv4 addresses mapped into IPv6 as the IPv4 prefix, so it
// contains the unmapped addresses forwardedAddr reads.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}
