package secrets

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
)

// redacted is what every text form of a Secret prints.
const redacted = "REDACTED"

// A Secret holds a credential. Every way of turning it into text (fmt verbs
// including %#v and %d, encoding/json, encoding.TextMarshaler, log/slog)
// yields "REDACTED"; [Secret.Reveal] is the one way to get the value, so each
// use can be found with grep and reviewed.
//
// Secrets are not comparable with == (which would not be constant-time and
// would compare only identity); use [Secret.Equal]. The zero Secret is empty.
type Secret struct {
	_ [0]func() // not comparable: use Equal, which is constant-time
	// The value sits behind a pointer so that fmt, which prints unexported
	// fields of an enclosing struct by reflection without calling our
	// methods, shows an address there and never the value.
	p *string
}

// NewSecret wraps v.
func NewSecret(v string) Secret { return Secret{p: &v} }

// Reveal returns the secret value. Callers must not log, print or persist it
// outside the store.
func (s Secret) Reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

// IsZero reports whether s is empty.
func (s Secret) IsZero() bool { return s.Reveal() == "" }

// Equal reports whether s and o hold the same value, in time that depends
// only on the lengths.
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare([]byte(s.Reveal()), []byte(o.Reveal())) == 1
}

// String returns "REDACTED".
func (Secret) String() string { return redacted }

// GoString returns "REDACTED", for %#v.
func (Secret) GoString() string { return redacted }

// Format prints "REDACTED" for every verb, so that %d, %x or %q cannot reach
// the value by reflection either.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON returns the JSON string "REDACTED".
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "REDACTED".
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue returns "REDACTED" to log/slog.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }
