package httpapi

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tapline/tapline/internal/db"
)

func TestDatabaseRefusedValueIsInvalidInput(t *testing.T) {
	for _, code := range []string{"22021", "22P05", "22P02"} {
		err := fmt.Errorf("insert session: %w", db.InterpretError(&pgconn.PgError{Code: code, Message: "refused"}))
		p := problemFor(err)
		if p.Status != http.StatusBadRequest || p.Type != problemTypeBase+"invalid-input" || p.Detail == "" {
			t.Fatalf("SQLSTATE %s: problem = %+v, want a 400 invalid-input with a detail", code, p)
		}
	}
}
