package secretbox_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tapline/tapline/internal/secretbox"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testKey returns a random key, raw and in standard base64.
func testKey(t testing.TB) ([]byte, string) {
	t.Helper()
	raw := make([]byte, secretbox.KeySize)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	return raw, base64.StdEncoding.EncodeToString(raw)
}

func mustParse(t testing.TB, s string) *secretbox.Keyring {
	t.Helper()
	k, err := secretbox.ParseKeyring(s)
	if err != nil {
		t.Fatalf("ParseKeyring: %v", err)
	}
	return k
}

var (
	adTenantA = secretbox.AssociatedData("target-secret", "tenant-a", "session-1")
	adTenantB = secretbox.AssociatedData("target-secret", "tenant-b", "session-1")
)

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	_, b64 := testKey(t)
	k := mustParse(t, b64)
	for _, pt := range [][]byte{nil, {}, []byte("Bearer s3cr3t"), bytes.Repeat([]byte{0xff}, 1<<16)} {
		ct, err := k.Seal(pt, adTenantA)
		if err != nil {
			t.Fatal(err)
		}
		if len(pt) > 4 && bytes.Contains(ct, pt) {
			t.Fatal("ciphertext contains the plaintext")
		}
		got, err := k.Open(ct, adTenantA)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("Open = %q, want %q", got, pt)
		}
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	t.Parallel()
	_, b64 := testKey(t)
	k := mustParse(t, b64)
	a, _ := k.Seal([]byte("same"), nil)
	b, _ := k.Seal([]byte("same"), nil)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are equal")
	}
}

func TestEnvelopeLayout(t *testing.T) {
	t.Parallel()
	_, b64 := testKey(t)
	k := mustParse(t, "k1:"+b64)
	ct, err := k.Seal([]byte("abc"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// version | len(kid) | kid | nonce(12) | ciphertext(3) + tag(16)
	if ct[0] != 0x01 || ct[1] != 2 || string(ct[2:4]) != "k1" || len(ct) != 4+12+3+16 {
		t.Fatalf("envelope % x", ct)
	}
	if id, err := secretbox.KeyIDOf(ct); err != nil || id != "k1" {
		t.Fatalf("KeyIDOf = %q, %v", id, err)
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	_, oldKey := testKey(t)
	_, newKey := testKey(t)

	before := mustParse(t, oldKey)
	oldID := before.ActiveKeyID()
	sealedBefore, err := before.Seal([]byte("token-1"), adTenantA)
	if err != nil {
		t.Fatal(err)
	}

	// The operator puts a new key in front; the old bare key keeps its
	// derived id, so envelopes sealed before still open.
	after := mustParse(t, "2026-11:"+newKey+","+oldKey)
	if got := after.ActiveKeyID(); got != "2026-11" {
		t.Fatalf("active key %q, want 2026-11", got)
	}
	if got := after.KeyIDs(); len(got) != 2 || got[0] != "2026-11" || got[1] != oldID {
		t.Fatalf("KeyIDs = %q", got)
	}
	pt, err := after.Open(sealedBefore, adTenantA)
	if err != nil || string(pt) != "token-1" {
		t.Fatalf("old envelope after rotation: %q, %v", pt, err)
	}
	sealedAfter, err := after.Seal([]byte("token-2"), adTenantA)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := secretbox.KeyIDOf(sealedAfter); id != "2026-11" {
		t.Fatalf("new envelope sealed with %q", id)
	}

	// Once the old key is removed, old envelopes report the unknown id.
	newOnly := mustParse(t, "2026-11:"+newKey)
	if _, err := newOnly.Open(sealedBefore, adTenantA); !errors.Is(err, secretbox.ErrUnknownKey) {
		t.Fatalf("Open with the old key removed: %v, want ErrUnknownKey", err)
	}
	if pt, err := newOnly.Open(sealedAfter, adTenantA); err != nil || string(pt) != "token-2" {
		t.Fatalf("Open new envelope: %q, %v", pt, err)
	}
}

func TestDerivedKeyID(t *testing.T) {
	t.Parallel()
	raw, b64 := testKey(t)
	sum := sha256.Sum256(raw)
	want := hex.EncodeToString(sum[:])[:8]
	if got := mustParse(t, b64).ActiveKeyID(); got != want {
		t.Fatalf("derived id %q, want %q", got, want)
	}
	if got := secretbox.DeriveKeyID(raw); got != want {
		t.Fatalf("DeriveKeyID = %q, want %q", got, want)
	}
	// Every base64 flavour of the same key gets the same id.
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if got := mustParse(t, enc.EncodeToString(raw)).ActiveKeyID(); got != want {
			t.Fatalf("derived id %q for another encoding, want %q", got, want)
		}
	}
}

func TestWrongAssociatedDataFails(t *testing.T) {
	t.Parallel()
	_, b64 := testKey(t)
	k := mustParse(t, b64)
	ct, err := k.Seal([]byte("Bearer s3cr3t"), adTenantA)
	if err != nil {
		t.Fatal(err)
	}
	for _, ad := range [][]byte{
		adTenantB,
		nil,
		secretbox.AssociatedData("target-secret", "tenant-a", "session-2"),
		secretbox.AssociatedData("target-secret", "tenant-a", "session-", "1"),
	} {
		if _, err := k.Open(ct, ad); !errors.Is(err, secretbox.ErrDecrypt) {
			t.Errorf("Open with associated data %q: %v, want ErrDecrypt", ad, err)
		}
	}
}

func TestAssociatedDataIsUnambiguous(t *testing.T) {
	t.Parallel()
	if bytes.Equal(secretbox.AssociatedData("ab", "c"), secretbox.AssociatedData("a", "bc")) {
		t.Fatal(`("ab","c") and ("a","bc") encode the same`)
	}
	if bytes.Equal(secretbox.AssociatedData("a", ""), secretbox.AssociatedData("a")) {
		t.Fatal(`("a","") and ("a") encode the same`)
	}
}

func TestTamperedEnvelopeFails(t *testing.T) {
	t.Parallel()
	_, b64a := testKey(t)
	_, b64b := testKey(t)
	k := mustParse(t, "ka:"+b64a+",kb:"+b64b)
	ct, err := k.Seal([]byte("Bearer s3cr3t"), adTenantA)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ct {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(ct)
			bad[i] ^= mask
			_, err := k.Open(bad, adTenantA)
			if !errors.Is(err, secretbox.ErrDecrypt) && !errors.Is(err, secretbox.ErrUnknownKey) {
				t.Fatalf("byte %d ^ %#x: Open = %v, want an error", i, mask, err)
			}
		}
	}
	// Swapping the key id for the other held key must fail too.
	swapped := bytes.Clone(ct)
	swapped[3] = 'b'
	if _, err := k.Open(swapped, adTenantA); !errors.Is(err, secretbox.ErrDecrypt) {
		t.Fatalf("kid swapped: %v, want ErrDecrypt", err)
	}
	for n := range len(ct) {
		if _, err := k.Open(ct[:n], adTenantA); err == nil {
			t.Fatalf("truncated to %d bytes: opened", n)
		}
	}
	if _, err := k.Open(append(bytes.Clone(ct), 0), adTenantA); !errors.Is(err, secretbox.ErrDecrypt) {
		t.Fatalf("extended: %v, want ErrDecrypt", err)
	}
}

func TestUnknownKey(t *testing.T) {
	t.Parallel()
	_, b64a := testKey(t)
	_, b64b := testKey(t)
	ct, err := mustParse(t, "a:"+b64a).Seal([]byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = mustParse(t, "b:"+b64b).Open(ct, nil)
	if !errors.Is(err, secretbox.ErrUnknownKey) {
		t.Fatalf("Open = %v, want ErrUnknownKey", err)
	}
	if !strings.Contains(err.Error(), `"a"`) {
		t.Fatalf("error %q does not name the key id", err)
	}
}

func TestParseKeyringErrors(t *testing.T) {
	t.Parallel()
	raw, b64 := testKey(t)
	short := base64.StdEncoding.EncodeToString(raw[:16])
	long := base64.StdEncoding.EncodeToString(append(bytes.Clone(raw), 0))
	for name, in := range map[string]string{
		"empty":             "",
		"blank":             "  ",
		"empty entry":       b64 + ",",
		"empty middle":      "a:" + b64 + ",,b:" + b64,
		"bad base64":        "not base64!",
		"bad base64 in kid": "k1:" + b64[:10] + "*" + b64[11:],
		"hex key":           hex.EncodeToString(raw),
		"short key":         short,
		"long key":          long,
		"empty kid":         ":" + b64,
		"bad kid":           "k 1:" + b64,
		"long kid":          strings.Repeat("k", 65) + ":" + b64,
		"no key after kid":  "k1:",
		"duplicate kid":     "k1:" + b64 + ",k1:" + base64.StdEncoding.EncodeToString(make([]byte, 32)),
		"duplicate derived": b64 + "," + base64.RawURLEncoding.EncodeToString(raw),
	} {
		k, err := secretbox.ParseKeyring(in)
		if err == nil {
			t.Errorf("%s: ParseKeyring = %v, want error", name, k)
			continue
		}
		if !errors.Is(err, secretbox.ErrKeyConfig) {
			t.Errorf("%s: error %v does not wrap ErrKeyConfig", name, err)
		}
		msg := err.Error()
		if strings.Contains(msg, b64[:12]) || strings.Contains(msg, hex.EncodeToString(raw)[:12]) || strings.Contains(msg, short[:12]) {
			t.Errorf("%s: error %q repeats key material", name, msg)
		}
	}
}

func TestParseKeyringAcceptsSpacing(t *testing.T) {
	t.Parallel()
	_, a := testKey(t)
	_, b := testKey(t)
	k := mustParse(t, " k1 : "+a+" , k2:"+b+" ")
	if got := k.KeyIDs(); len(got) != 2 || got[0] != "k1" || got[1] != "k2" {
		t.Fatalf("KeyIDs = %q", got)
	}
}

// TestKeyringNeverPrintsKeyMaterial formats and logs a keyring in every
// way we can think of and looks for the key in any encoding.
func TestKeyringNeverPrintsKeyMaterial(t *testing.T) {
	t.Parallel()
	raw, b64 := testKey(t)
	k := mustParse(t, "live:"+b64)

	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		outputs = append(outputs, fmt.Sprintf(verb, k), fmt.Sprintf(verb, *k))
	}
	outputs = append(outputs, fmt.Sprint(k), fmt.Sprintln(*k), k.String(), k.GoString())
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		slog.New(h(&buf)).Info("config", "keyring", k, "value", *k)
		outputs = append(outputs, buf.String())
	}
	js, err := json.Marshal(struct{ K *secretbox.Keyring }{k})
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, string(js))

	forbidden := []string{
		b64, b64[:16],
		hex.EncodeToString(raw)[:16],
		strings.ToUpper(hex.EncodeToString(raw)[:16]),
		string(raw[:8]),
		fmt.Sprint(raw)[1:20],
	}
	for _, out := range outputs {
		if !strings.Contains(out, "live") {
			t.Errorf("output %q does not name the key id", out)
		}
		for _, f := range forbidden {
			if strings.Contains(out, f) {
				t.Errorf("output %q contains key material", out)
			}
		}
	}
}

func TestGenerateKey(t *testing.T) {
	t.Parallel()
	a, err := secretbox.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := secretbox.GenerateKey()
	if a == b {
		t.Fatal("two generated keys are equal")
	}
	mustParse(t, a)
}

func TestNilKeyring(t *testing.T) {
	t.Parallel()
	var k *secretbox.Keyring
	if _, err := k.Seal([]byte("x"), nil); err == nil {
		t.Fatal("nil keyring sealed")
	}
	if _, err := k.Open([]byte{1, 1, 'a'}, nil); err == nil {
		t.Fatal("nil keyring opened")
	}
	if k.ActiveKeyID() != "" || k.KeyIDs() != nil {
		t.Fatal("nil keyring has keys")
	}
}

func BenchmarkSealOpen(b *testing.B) {
	_, b64 := testKey(b)
	k := mustParse(b, b64)
	pt := []byte("Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.payload.signature")
	b.ReportAllocs()
	for b.Loop() {
		ct, err := k.Seal(pt, adTenantA)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := k.Open(ct, adTenantA); err != nil {
			b.Fatal(err)
		}
	}
}
