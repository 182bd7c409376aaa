package httpapi_test

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tapline/tapline/internal/db"
	"github.com/tapline/tapline/internal/dbtest"
	"github.com/tapline/tapline/internal/tenant"
)

func (e *env) get(t *testing.T, path, token, accept string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var sb strings.Builder
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		sb.WriteString(sc.Text() + "\n")
	}
	return res, sb.String()
}

func auditActions(t *testing.T, r response) []string {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("audit = %d %s", r.status, r.raw)
	}
	var out []string
	for _, it := range r.body["items"].([]any) {
		out = append(out, it.(map[string]any)["action"].(string))
	}
	return out
}

func TestAuditEndpoints(t *testing.T) {
	t.Parallel()
	t.Run("IdentityChangesAreRecordedWithRequestMetadata", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		k := e.do(t, "POST", "/v1/api-keys", e.a.Secret, map[string]any{"name": "ci", "role": "viewer"})
		e.do(t, "DELETE", "/v1/api-keys/"+k.body["id"].(string), e.a.Secret, nil)
		m := e.do(t, "POST", "/v1/members", e.a.Secret, map[string]any{"email": "aud@team.test", "role": "member"})
		e.do(t, "PATCH", "/v1/members/"+m.body["id"].(string), e.a.Secret, map[string]any{"role": "viewer"})
		e.do(t, "DELETE", "/v1/members/"+m.body["id"].(string), e.a.Secret, nil)
		// A refused change leaves no trace.
		e.do(t, "PATCH", "/v1/members/"+e.a.User.ID, e.a.Secret, map[string]any{"role": "viewer"})

		r := e.do(t, "GET", "/v1/audit", e.a.Secret, nil)
		got := strings.Join(auditActions(t, r), ",")
		if got != "api_key.create,api_key.revoke,member.add,member.update,member.remove" {
			t.Fatalf("actions = %s", got)
		}
		first := r.body["items"].([]any)[0].(map[string]any)
		actor := first["actor"].(map[string]any)
		if actor["id"] != "key:"+e.a.Key.ID || first["client_ip"] != "127.0.0.1" || first["user_agent"] == "" ||
			first["request_id"] == "" || first["seq"].(float64) != 1 || len(first["row_hash"].(string)) != 64 {
			t.Fatalf("first event = %v", first)
		}
		if strings.Contains(r.raw, k.body["secret"].(string)) {
			t.Fatal("audit log contains a key secret")
		}
		filtered := e.do(t, "GET", "/v1/audit?action=member.*&order=desc&limit=2", e.a.Secret, nil)
		if got := strings.Join(auditActions(t, filtered), ","); got != "member.remove,member.update" || filtered.body["next_cursor"] == nil {
			t.Fatalf("filtered = %s %s", got, filtered.raw)
		}
		v := e.do(t, "GET", "/v1/audit/verify", e.a.Secret, nil)
		if v.status != 200 || v.body["ok"] != true || v.body["checked"].(float64) != 5 || v.body["head_hash"] == nil {
			t.Fatalf("verify = %d %s", v.status, v.raw)
		}
	})
	t.Run("ExportStreamsJSONLinesAndCSVAndIsAudited", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		for range 3 {
			e.do(t, "POST", "/v1/api-keys", e.a.Secret, map[string]any{"role": "viewer"})
		}
		res, body := e.get(t, "/v1/audit?format=jsonl", e.a.Secret, "")
		lines := strings.Split(strings.TrimSpace(body), "\n")
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/x-ndjson" || len(lines) != 4 {
			t.Fatalf("jsonl = %d %s %q", res.StatusCode, res.Header.Get("Content-Type"), body)
		}
		var last map[string]any
		if err := json.Unmarshal([]byte(lines[3]), &last); err != nil || last["action"] != "audit.export" {
			t.Fatalf("the export's own event is not last: %s (%v)", lines[3], err)
		}
		res, body = e.get(t, "/v1/audit", e.a.Secret, "text/csv")
		recs, err := csv.NewReader(strings.NewReader(body)).ReadAll()
		if err != nil || res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/csv") || len(recs) != 6 {
			t.Fatalf("csv = %d %v (%v)", res.StatusCode, recs, err)
		}
		if !strings.Contains(res.Header.Get("Content-Disposition"), "attachment") {
			t.Fatal("csv export is not an attachment")
		}
		if a := auditActions(t, e.do(t, "GET", "/v1/audit?action=audit.export", e.a.Secret, nil)); len(a) != 2 {
			t.Fatalf("export events = %v", a)
		}
	})
	t.Run("VerifyNamesATamperedEvent", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		for range 5 {
			e.do(t, "POST", "/v1/api-keys", e.a.Secret, map[string]any{"role": "viewer"})
		}
		list := e.do(t, "GET", "/v1/audit", e.a.Secret, nil)
		third := list.body["items"].([]any)[2].(map[string]any)
		err := db.WithTx(context.Background(), dbtest.OwnerPool(t), func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "set local session_replication_role = replica"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `update audit_events set details = details || '{"role":"owner"}' where id = $1`, third["id"])
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		v := e.do(t, "GET", "/v1/audit/verify", e.a.Secret, nil)
		if v.status != 200 || v.body["ok"] != false || v.body["first_bad_id"] != third["id"] || v.body["first_bad_seq"].(float64) != 3 {
			t.Fatalf("verify = %s, want event %v named", v.raw, third["id"])
		}
		if other := e.do(t, "GET", "/v1/audit/verify", e.b.Secret, nil); other.body["ok"] != true {
			t.Fatalf("tenant b's verify = %s", other.raw)
		}
	})
	t.Run("InvalidInputNamesField", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		for name, tc := range map[string]struct{ path, field string }{
			"Format":       {"/v1/audit?format=xml", "format"},
			"Limit":        {"/v1/audit?limit=5000", "limit"},
			"Cursor":       {"/v1/audit?cursor=zzz", "cursor"},
			"From":         {"/v1/audit?from=yesterday", "from"},
			"EmptyRange":   {"/v1/audit?from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z", "to"},
			"VerifyRange":  {"/v1/audit/verify?from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z", "to"},
			"Order":        {"/v1/audit?order=sideways", "order"},
			"ActionLength": {"/v1/audit?action=" + strings.Repeat("a", 201), "action"},
		} {
			t.Run(name, func(t *testing.T) {
				requireProblem(t, e.do(t, "GET", tc.path, e.a.Secret, nil), 400, tc.field)
			})
		}
	})
	t.Run("AdminsOnly", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		member := e.keyWithRole(t, tenant.RoleMember)
		requireProblem(t, e.do(t, "GET", "/v1/audit", member, nil), 403, "")
		requireProblem(t, e.do(t, "GET", "/v1/audit?format=csv", member, nil), 403, "")
		requireProblem(t, e.do(t, "GET", "/v1/audit/verify", member, nil), 403, "")
	})
	t.Run("CrossTenantReturnsNotFound", func(t *testing.T) {
		t.Parallel()
		e := setup(t)
		k := e.do(t, "POST", "/v1/api-keys", e.a.Secret, map[string]any{"role": "viewer"})
		for _, path := range []string{"/v1/audit", "/v1/audit?format=jsonl", "/v1/audit?action=api_key.create"} {
			_, body := e.get(t, path, e.b.Secret, "")
			if strings.Contains(body, k.body["id"].(string)) || strings.Contains(body, e.a.Tenant.ID) {
				t.Fatalf("tenant b's %s shows tenant a's events: %s", path, body)
			}
		}
	})
}
