package importer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/moatmcp/moat/internal/lazyregexp"
	"github.com/moatmcp/moat/internal/secrets"
)

// A Literal is a credential written literally in an imported server. It
// names the place and why it looks like a credential, never the value.
type Literal struct {
	Server string
	Where  string // "env GITHUB_TOKEN", "header Authorization", "args[3]", "url"
	Reason string // e.g. "the name says it is a token", "looks like a GitHub token"

	kind string // "env", "header", "arg", "url"
	key  string // env or header name
	idx  int    // arg index
}

// Movable reports whether MoveSecrets can put the credential in the secret
// store: one in env or a header can. One in a url cannot be split out
// safely, and one in args must not be: Moat refuses ${secret:NAME} on a
// command line, which every local user can read.
func (l Literal) Movable() bool { return l.kind == "env" || l.kind == "header" }

// Fix says what the user can do about a literal MoveSecrets left.
func (l Literal) Fix() string {
	if l.kind == "arg" {
		return "on the command line every local user can read it (/proc/PID/cmdline); if the server reads it from an " +
			"environment variable, store it with `moat secret set NAME` and pass it in \"env\" as ${secret:NAME}"
	}
	return "store it with `moat secret set NAME` and write ${secret:NAME} in its place"
}

var (
	refRE = lazyregexp.New(`\$\{[^}]*\}`)
	// secretishName matches env and header names that hold credentials.
	secretishName = lazyregexp.New(`(?i)token|key|secret|passw(or)?d|credential|^authorization$|^proxy-authorization$|^cookie$`)
	tokenFormats  = []struct {
		re  *lazyregexp.Regexp
		why string
	}{
		{lazyregexp.New(`\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}`), "looks like a GitHub token"},
		{lazyregexp.New(`\bgithub_pat_[A-Za-z0-9_]{20,}`), "looks like a GitHub token"},
		{lazyregexp.New(`\bglpat-[A-Za-z0-9_-]{16,}`), "looks like a GitLab token"},
		{lazyregexp.New(`\bsk-[A-Za-z0-9_-]{16,}`), "looks like an API secret key (sk-...)"},
		{lazyregexp.New(`\b[sr]k_(live|test)_[A-Za-z0-9]{16,}`), "looks like a Stripe key"},
		{lazyregexp.New(`\bxox[abposr]-[A-Za-z0-9-]{10,}`), "looks like a Slack token"},
		{lazyregexp.New(`\b(AKIA|ASIA)[A-Z0-9]{16}\b`), "looks like an AWS access key"},
		{lazyregexp.New(`\bAIza[A-Za-z0-9_-]{35}`), "looks like a Google API key"},
		{lazyregexp.New(`\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*`), "looks like a JWT"},
		{lazyregexp.New(`(?i)^(bearer|basic|token)\s+\S{8,}`), "an Authorization value"},
	}
	urlPassword = lazyregexp.New(`^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@`)
	highEntropy = lazyregexp.New(`^[A-Za-z0-9+/=_\-.~]{24,}$`)
)

// credentialReason says why v looks like a credential, or "". keyName is
// the env or header name ("" for args and urls).
func credentialReason(keyName, v string) string {
	literal := refRE.ReplaceAllString(v, "")
	if strings.TrimSpace(literal) == "" {
		return ""
	}
	for _, f := range tokenFormats {
		if f.re.MatchString(literal) {
			return f.why
		}
	}
	if urlPassword.MatchString(v) && !strings.Contains(v[:strings.IndexByte(v, '@')], "${") {
		return "a URL with a password in it"
	}
	if literal != v { // partly a reference, e.g. "Bearer ${TOKEN}"
		return ""
	}
	if keyName != "" && secretishName.MatchString(keyName) && !harmless(v) {
		return fmt.Sprintf("the name %q says it holds a credential", keyName)
	}
	if highEntropy.MatchString(v) && !pathLike(v) && entropy(v) >= 4.0 && hasMixedClasses(v) {
		return "a long random-looking value"
	}
	return ""
}

// harmless reports whether a value under a credential-sounding name is
// plainly not a credential: a flag, a small number, a path or a URL.
func harmless(v string) bool {
	switch strings.ToLower(v) {
	case "true", "false", "yes", "no", "on", "off", "none", "null", "":
		return true
	}
	if _, err := strconv.Atoi(v); err == nil && len(v) < 6 {
		return true
	}
	if strings.HasPrefix(v, "/") || strings.HasPrefix(v, "~") || strings.HasPrefix(v, "./") {
		return true
	}
	if u, err := url.Parse(v); err == nil && u.Scheme != "" && u.Host != "" && u.User == nil && u.RawQuery == "" {
		return true
	}
	return false
}

// pathLike reports whether v reads as a file path rather than a token.
func pathLike(v string) bool {
	return strings.HasPrefix(v, "/") || strings.HasPrefix(v, "~") || strings.HasPrefix(v, ".")
}

func entropy(s string) float64 {
	counts := map[rune]int{}
	for _, r := range s {
		counts[r]++
	}
	var h float64
	n := float64(len(s))
	for _, c := range counts {
		p := float64(c) / n
		h -= p * math.Log2(p)
	}
	return h
}

func hasMixedClasses(s string) bool {
	var lower, upper, digit bool
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z':
			lower = true
		case r >= 'A' && r <= 'Z':
			upper = true
		case r >= '0' && r <= '9':
			digit = true
		}
	}
	return digit && (lower || upper)
}

// findLiterals lists every literal credential in servers, sorted.
func findLiterals(servers map[string]*Server) []Literal {
	var out []Literal
	for _, name := range slices.Sorted(maps.Keys(servers)) {
		s := servers[name]
		for _, k := range slices.Sorted(maps.Keys(s.Env)) {
			if why := credentialReason(k, s.Env[k]); why != "" {
				out = append(out, Literal{Server: name, Where: "env " + k, Reason: why, kind: "env", key: k})
			}
		}
		for _, k := range slices.Sorted(maps.Keys(s.Headers)) {
			if why := credentialReason(k, s.Headers[k]); why != "" {
				out = append(out, Literal{Server: name, Where: "header " + k, Reason: why, kind: "header", key: k})
			}
		}
		for i, a := range s.Args {
			key := ""
			if k, _, ok := strings.Cut(strings.TrimLeft(a, "-"), "="); ok {
				key = k // --api-key=VALUE
			} else if i > 0 && strings.HasPrefix(s.Args[i-1], "-") {
				key = strings.TrimLeft(s.Args[i-1], "-") // --api-key VALUE
			}
			if why := credentialReason(key, argValue(a)); why != "" {
				out = append(out, Literal{Server: name, Where: fmt.Sprintf("args[%d]", i), Reason: why, kind: "arg", idx: i})
			}
		}
		if s.URL != "" {
			if why := urlCredential(s.URL); why != "" {
				out = append(out, Literal{Server: name, Where: "url", Reason: why, kind: "url"})
			}
		}
	}
	return out
}

// argValue is the part of an argument that may be a credential: VALUE in
// --flag=VALUE, else the whole argument.
func argValue(a string) string {
	if strings.HasPrefix(a, "-") {
		if _, v, ok := strings.Cut(a, "="); ok {
			return v
		}
		return ""
	}
	return a
}

// urlCredential finds a password or a credential-named query parameter.
func urlCredential(raw string) string {
	if why := credentialReason("", raw); why != "" {
		return why
	}
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	for k, vs := range u.Query() {
		for _, v := range vs {
			if why := credentialReason(k, v); why != "" {
				return "query parameter " + strconv.Quote(k) + ": " + why
			}
		}
	}
	return ""
}

// Redacted returns s's value at place where for display: "[literal
// credential]" if a Literal names it, else the value itself.
func (im *Imported) Redacted(server, where, value string) string {
	for _, l := range im.Literals {
		if l.Server == server && l.Where == where {
			return "[literal credential]"
		}
	}
	return value
}

// A SecretStore keeps named secrets; *secrets.Store is one.
type SecretStore interface {
	Get(ctx context.Context, name string) (secrets.Secret, error)
	Set(ctx context.Context, name string, value secrets.Secret) error
}

// A Moved literal now lives in the secret store under Name.
type Moved struct {
	Server, Where, Name string
}

// MoveSecrets stores every literal credential in env and headers in store,
// as "<server>-<key>", and replaces it in the config with ${secret:NAME}.
// An existing secret with the same value is reused; one with a different
// value is never overwritten (a "-2" name is used instead). Literals that
// are not Movable (in urls and args) stay in im.Literals.
func MoveSecrets(ctx context.Context, im *Imported, store SecretStore) ([]Moved, error) {
	var moved []Moved
	var kept []Literal
	for _, l := range im.Literals {
		s := im.Servers[l.Server]
		var cur, base string
		switch l.kind {
		case "env":
			cur, base = s.Env[l.key], l.Server+"-"+l.key
		case "header":
			cur, base = s.Headers[l.key], l.Server+"-"+l.key
		default:
			kept = append(kept, l)
			continue
		}
		prefix, value := splitScheme(cur)
		name, err := storeOnce(ctx, store, secretName(base), value)
		if err != nil {
			return moved, fmt.Errorf("import: storing %s of server %q: %w", l.Where, l.Server, err)
		}
		ref := prefix + "${secret:" + name + "}"
		switch l.kind {
		case "env":
			s.Env[l.key] = ref
		case "header":
			s.Headers[l.key] = ref
		}
		moved = append(moved, Moved{Server: l.Server, Where: l.Where, Name: name})
	}
	im.Literals = kept
	return moved, nil
}

// splitScheme keeps an Authorization scheme ("Bearer ") out of the secret.
func splitScheme(v string) (prefix, value string) {
	for _, s := range []string{"Bearer ", "Basic ", "Token ", "bearer ", "token "} {
		if rest, ok := strings.CutPrefix(v, s); ok && strings.TrimSpace(rest) != "" {
			return s, rest
		}
	}
	return "", v
}

func storeOnce(ctx context.Context, store SecretStore, base, value string) (string, error) {
	want := secrets.NewSecret(value)
	for i := 1; i < 100; i++ {
		name := base
		if i > 1 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		old, err := store.Get(ctx, name)
		switch {
		case err == nil && old.Equal(want):
			return name, nil
		case err == nil:
			continue // taken by another value: never overwrite
		case !errors.Is(err, secrets.ErrNotFound):
			return "", err
		}
		return name, store.Set(ctx, name, want)
	}
	return "", fmt.Errorf("secrets %s to %s-99 all exist", base, base)
}
