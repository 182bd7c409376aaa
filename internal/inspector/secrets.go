package inspector

import (
	"encoding/json"
	"fmt"

	"github.com/tapline/tapline/internal/secretbox"
)

// targetSecrets is what is sealed in sessions.secrets.
type targetSecrets struct {
	Headers     map[string]string `json:"headers,omitempty"`
	BearerToken string            `json:"bearer_token,omitempty"`
}

// secretsAD binds sealed secrets to their tenant and session, so a ciphertext copied to
// another row does not open.
func secretsAD(tenantID, sessionID string) []byte {
	return secretbox.AssociatedData("session-target-secrets", tenantID, sessionID)
}

func sealSecrets(keys *secretbox.Keyring, tenantID, sessionID string, t Target) ([]byte, error) {
	if len(t.Headers) == 0 && t.BearerToken == "" {
		return nil, nil
	}
	plain, err := json.Marshal(targetSecrets{Headers: t.Headers, BearerToken: t.BearerToken})
	if err != nil {
		return nil, err
	}
	sealed, err := keys.Seal(plain, secretsAD(tenantID, sessionID))
	if err != nil {
		return nil, fmt.Errorf("seal target secrets: %w", err)
	}
	return sealed, nil
}

func openSecrets(keys *secretbox.Keyring, tenantID, sessionID string, sealed []byte) (targetSecrets, error) {
	var ts targetSecrets
	if len(sealed) == 0 {
		return ts, nil
	}
	plain, err := keys.Open(sealed, secretsAD(tenantID, sessionID))
	if err != nil {
		return ts, fmt.Errorf("open target secrets: %w", err)
	}
	err = json.Unmarshal(plain, &ts)
	return ts, err
}
