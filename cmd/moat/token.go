package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/secrets"
)

const tokenUsage = `usage:
  moat token create NAME   make a gateway token: printed once on stdout, only its SHA-256 is kept
  moat token list          token names, when each was made, and a short fingerprint (never the token)
  moat token revoke NAME   remove a token: a running gateway refuses it within 2 seconds
A token lets an HTTP client of moat serve --listen HOST:PORT act as the identity whose
gateway.identities.NAME.tokens lists its NAME, and a Prometheus scrape reach /metrics when
metrics.tokens lists it; it is kept in the secret store of the config
named by MOAT_CONFIG (its secrets.backend), as item ` + tokensItem + `.
exit status: 0 ok, 1 runtime failure, 2 usage`

// tokensItem names the secret-store item that holds the gateway's tokens:
// their names, SHA-256 hashes and creation times, never the tokens.
const tokensItem = "moat-gateway-tokens"

// tokenPrefix starts every gateway token, so that a leaked one is
// recognisable (and found by secret scanners).
const tokenPrefix = "moat_"

// storedToken is one gateway token as the store keeps it.
type storedToken struct {
	Name string `json:"name"`
	// SHA256 is the hex SHA-256 of the whole token, prefix included.
	SHA256  string    `json:"sha256"`
	Created time.Time `json:"created"`
}

// readTokens returns the stored tokens; none when the item is absent.
func readTokens(ctx context.Context, s *secrets.Store) ([]storedToken, error) {
	v, err := s.Get(ctx, tokensItem)
	if errors.Is(err, secrets.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeTokens(v)
}

// tokenList is the stored item's form.
type tokenList struct {
	Tokens []storedToken `json:"tokens"`
}

func decodeTokens(v secrets.Secret) ([]storedToken, error) {
	var doc tokenList
	if err := json.Unmarshal([]byte(v.Reveal()), &doc); err != nil {
		return nil, fmt.Errorf("token: the secret-store item %s is not a token list: %w", tokensItem, err)
	}
	return doc.Tokens, nil
}

// updateTokens replaces the stored tokens with what f makes of them, under
// the store's cross-process lock: two commands changing the list at once
// each keep the other's change.
func updateTokens(ctx context.Context, s *secrets.Store, f func([]storedToken) ([]storedToken, error)) error {
	return s.Update(ctx, tokensItem, func(cur secrets.Secret, found bool) (secrets.Secret, error) {
		var toks []storedToken
		if found {
			var err error
			if toks, err = decodeTokens(cur); err != nil {
				return secrets.Secret{}, err
			}
		}
		toks, err := f(toks)
		if err != nil {
			return secrets.Secret{}, err
		}
		b, err := json.Marshal(tokenList{Tokens: toks})
		if err != nil {
			return secrets.Secret{}, err
		}
		return secrets.NewSecret(string(b)), nil
	})
}

// newToken returns a fresh gateway token: the prefix and 32 random bytes
// in unpadded base64url.
func newToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// tokenHash is the hex SHA-256 of a token, as stored.
func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// fingerprint is the short form of a stored hash that `list` shows.
func fingerprint(hash string) string { return "sha256:" + hash[:min(12, len(hash))] }

func tokenCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	usageErr := func(msg string, hints ...string) int { return usageFailure(stderr, tokenUsage, msg, hints...) }
	if len(args) == 0 {
		return usageErr("moat token needs a subcommand: create, list or revoke")
	}
	if wantsHelp(args) {
		fmt.Fprintln(stdout, tokenUsage)
		return exitOK
	}
	fail := func(err error) int {
		printError(stderr, err)
		return exitFailure
	}
	open := func() (*secrets.Store, error) {
		if cfgPath, _, err := config.ResolvePath("", os.LookupEnv); err == nil {
			processStore.backend, processStore.require = peekSecrets(cfgPath)
		}
		return processStore.get(ctx)
	}
	sub, pos := args[0], args[1:]
	switch sub {
	case "create":
		if len(pos) != 1 {
			return usageErr("moat token create takes exactly one NAME")
		}
		name := pos[0]
		if !config.ValidTokenName(name) {
			return usageErr(fmt.Sprintf("invalid token name %q", name), "use 1 to 64 letters, digits, '_', '.' or '-', such as laptop or ci-runner")
		}
		s, err := open()
		if err != nil {
			return fail(err)
		}
		tok := newToken()
		errExists := fmt.Errorf("token: a token named %q exists", name)
		err = updateTokens(ctx, s, func(toks []storedToken) ([]storedToken, error) {
			if slices.ContainsFunc(toks, func(t storedToken) bool { return t.Name == name }) {
				return nil, errExists
			}
			return append(toks, storedToken{Name: name, SHA256: tokenHash(tok), Created: time.Now().UTC().Truncate(time.Second)}), nil
		})
		if errors.Is(err, errExists) {
			printError(stderr, err)
			fmt.Fprintf(stderr, "moat: hint: revoke it first (`moat token revoke %s`), or choose another name\n", name)
			return exitFailure
		}
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, tok)
		fmt.Fprintf(stderr, "moat: token %q created; it is shown once, only its hash is kept (in the %s). "+
			"List it under gateway.identities.NAME.tokens (or metrics.tokens, for a Prometheus scrape), and give it to the client as the header Authorization: Bearer TOKEN\n", name, s.Backend())
		commandEvent(ctx, stderr, "token_create", "", map[string]string{"name": name, "backend": s.Backend()})
		return exitOK

	case "list", "ls":
		if len(pos) != 0 {
			return usageErr("moat token list takes no arguments")
		}
		s, err := open()
		if err != nil {
			return fail(err)
		}
		toks, err := readTokens(ctx, s)
		if err != nil {
			return fail(err)
		}
		if len(toks) == 0 {
			fmt.Fprintln(stderr, "no gateway tokens; make one with `moat token create NAME`")
			return exitOK
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tCREATED\tFINGERPRINT")
		for _, t := range toks {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", t.Name, t.Created.Format(time.RFC3339), fingerprint(t.SHA256))
		}
		tw.Flush()
		return exitOK

	case "revoke", "rm":
		if len(pos) != 1 {
			return usageErr("moat token revoke takes exactly one NAME")
		}
		name := pos[0]
		s, err := open()
		if err != nil {
			return fail(err)
		}
		err = updateTokens(ctx, s, func(toks []storedToken) ([]storedToken, error) {
			i := slices.IndexFunc(toks, func(t storedToken) bool { return t.Name == name })
			if i < 0 {
				return nil, fmt.Errorf("token: no token named %q (see `moat token list`)", name)
			}
			return slices.Delete(toks, i, i+1), nil
		})
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "revoked token %q; a running gateway refuses it within %v\n", name, 2*tokenCacheTTL)
		commandEvent(ctx, stderr, "token_revoke", "", map[string]string{"name": name, "backend": s.Backend()})
		return exitOK
	}
	return usageErr(fmt.Sprintf("unknown subcommand %q of moat token", sub), "the subcommands are create, list and revoke")
}

// tokenCacheTTL is how long the gateway trusts its copy of the stored
// tokens: a revoked token works at most this long (plus one store read).
const tokenCacheTTL = time.Second

// tokenReadTimeout bounds one read of the stored tokens (a keychain may
// hang).
const tokenReadTimeout = 10 * time.Second

// tokenVerifier checks bearer tokens against the stored hashes, reading the
// store at most once per tokenCacheTTL.
type tokenVerifier struct {
	read func(context.Context) ([]storedToken, error)
	now  func() time.Time

	mu   sync.Mutex
	at   time.Time
	toks []storedToken
	err  error
}

// storeTokens verifies tokens against the process's secret store.
func storeTokens() *tokenVerifier {
	return &tokenVerifier{now: time.Now, read: func(ctx context.Context) ([]storedToken, error) {
		s, err := processStore.get(ctx)
		if err != nil {
			return nil, err
		}
		return readTokens(ctx, s)
	}}
}

// verify returns the name of the stored token tok is, or an error saying
// why none (never naming tok or a hash). Every stored hash is compared,
// in constant time each, so the time taken does not say which matched.
func (v *tokenVerifier) verify(ctx context.Context, tok string) (string, error) {
	toks, err := v.current(ctx)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(tok))
	name := ""
	for _, t := range toks {
		want, err := hex.DecodeString(t.SHA256)
		if err != nil || len(want) != len(sum) {
			continue
		}
		if subtle.ConstantTimeCompare(sum[:], want) == 1 {
			name = t.Name
		}
	}
	if name == "" {
		return "", errors.New("the token is not one of the gateway's (unknown or revoked)")
	}
	return name, nil
}

// current is the stored token list, read again once tokenCacheTTL has
// passed since the last read.
func (v *tokenVerifier) current(ctx context.Context) ([]storedToken, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	if v.at.IsZero() || now.Sub(v.at) >= tokenCacheTTL {
		// The list read serves every request until the next read: the
		// request that happens to trigger it (anyone's, a token or not)
		// must not end it by going away.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tokenReadTimeout)
		toks, err := v.read(rctx)
		cancel()
		v.at = now
		if err != nil {
			// A store that cannot be read refuses every token: fail closed.
			v.toks, v.err = nil, fmt.Errorf("the gateway's tokens cannot be read from the secret store: %w", err)
		} else {
			v.toks, v.err = toks, nil
		}
	}
	return v.toks, v.err
}

// bearer is the token of an Authorization header "Bearer TOKEN"; ok is
// false when there is none.
func bearer(h string) (tok string, ok bool) {
	scheme, rest, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	rest = strings.TrimSpace(rest)
	return rest, rest != ""
}
