package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/auditlog"
	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/gate"
	"github.com/moatmcp/moat/internal/secrets"
)

// secretTimeout bounds reading one ${secret:NAME} while loading a config;
// the store itself bounds each keychain call.
const secretTimeout = 10 * time.Second

// lazyStore opens the secret store on first use, so a config without
// ${secret:...} never touches the keychain.
type lazyStore struct {
	backend string // from the config's secrets.backend; "" is auto
	require bool   // the config's secrets.require_encryption
	// opened, if set, is told once which store opened (serve logs it).
	opened func(*secrets.Store)
	once   sync.Once
	store  *secrets.Store
	err    error
}

func (l *lazyStore) get(ctx context.Context) (*secrets.Store, error) {
	l.once.Do(func() {
		l.store, l.err = secrets.Open(ctx, &secrets.Options{Backend: l.backend, RequireEncryption: l.require})
		if l.err == nil && l.opened != nil {
			l.opened(l.store)
		}
	})
	return l.store, l.err
}

// use makes s the process's store, when nothing opened one yet (a secret
// command shares its store with the audit keys, so a passphrase is read once).
func (l *lazyStore) use(s *secrets.Store) {
	l.once.Do(func() { l.store = s })
}

// protectionNote is one line on what protects the secrets at rest, with
// the advice that goes with it.
func protectionNote(s *secrets.Store) string {
	switch s.Protection() {
	case secrets.PermissionsOnly:
		return "secrets: " + s.Backend() + " (no keychain and no key source: only the 0600/0700 modes keep other users out; " +
			"to encrypt, set MOAT_PASSPHRASE or the systemd credential moat-passphrase and run `moat secret encrypt`)"
	case secrets.Encrypted:
		if src := s.KeySource(); src != "" {
			return "secrets: " + s.Backend() + " (encrypted at rest; key from " + src + ")"
		}
		return "secrets: " + s.Backend() + " (encrypted at rest)"
	default:
		return "secrets: " + s.Backend()
	}
}

var processStore lazyStore

// secretSink learns every secret value the config resolves (serve points it
// at the redactor).
var secretSink = func(name, value string) {}

// loadOptions resolves ${VAR} from the environment and ${secret:NAME} from
// the secret store. A gateway's shared load (gateway true) resolves no
// secret of a per-user server: it never runs them (each identity's load
// does, see identityLoadOptions), and a gateway must not need secrets that
// only its users hold. The placeholder keeps such a server's url valid.
func loadOptions(gateway bool) *config.LoadOptions {
	o := &config.LoadOptions{Getenv: os.LookupEnv, Secret: sharedSecret}
	if gateway {
		o.UserSecret = func(string, string) (string, error) { return "per-user", nil }
	}
	return o
}

// loadForCommand loads path for a command that serves neither way (config
// validate, pins): per-user servers' secrets are each identity's own when
// the config names gateway identities, and shared ones (what stdio serve
// uses) when it names none.
func loadForCommand(path string) (*config.Config, error) {
	cfg, err := config.Load(path, loadOptions(true))
	if err != nil || len(cfg.Gateway.Identities) > 0 {
		return cfg, err
	}
	for _, s := range cfg.Servers {
		if s.PerUser {
			return config.Load(path, loadOptions(false))
		}
	}
	return cfg, nil
}

// identityLoadOptions load the config as identity's per-user servers see
// it: their ${secret:NAME} is identity's own (secrets.ForIdentity).
func identityLoadOptions(identity string) *config.LoadOptions {
	return &config.LoadOptions{
		Getenv: os.LookupEnv,
		Secret: sharedSecret,
		UserSecret: func(_, name string) (string, error) {
			return storedSecret(secrets.ForIdentity(name, identity), func(backend string) error {
				return fmt.Errorf("identity %q has no secret %q of its own in the %s: run `moat secret set --identity %s %s` as the gateway's user", identity, name, backend, identity, name)
			})
		},
	}
}

func sharedSecret(name string) (string, error) {
	return storedSecret(name, func(backend string) error { return fmt.Errorf("no secret %q in the %s", name, backend) })
}

// storedSecret reads a secret from the process's store, and tells the
// redactor its value; missing says what is wrong when there is none.
func storedSecret(name string, missing func(backend string) error) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), secretTimeout)
	defer cancel()
	store, err := processStore.get(ctx)
	if err != nil {
		return "", fmt.Errorf("the secret store cannot be opened: %w", err)
	}
	s, err := store.Get(ctx, name)
	if errors.Is(err, secrets.ErrNotFound) {
		return "", missing(store.Backend())
	}
	if err != nil {
		return "", err
	}
	secretSink(name, s.Reveal())
	return s.Reveal(), nil
}

// storedAudit is what `moat audit` reads from the process's secret store.
type storedAudit struct{}

// Keys reads the audit log's keys; it never creates them (the commands that
// write the log do: serve, tools, call and the audited commands).
func (storedAudit) Keys(ctx context.Context) (audit.Keys, error) {
	store, err := processStore.get(ctx)
	if err != nil {
		return audit.Keys{}, fmt.Errorf("the secret store cannot be opened: %w", err)
	}
	return auditlog.Keys(ctx, store, false)
}

// Anchor reads the anchor of the log at path (auditlog.ReadAnchor).
func (storedAudit) Anchor(ctx context.Context, path string) (uint64, string, bool, error) {
	store, err := processStore.get(ctx)
	if err != nil {
		return 0, "", false, fmt.Errorf("the secret store cannot be opened: %w", err)
	}
	return auditlog.ReadAnchor(ctx, store, path)
}

// peekSecrets reads secrets.backend and secrets.require_encryption before
// the config is loaded: loading resolves ${secret:...} from the store they
// name. require is also set by the managed policy's
// secrets.require_encryption, which no user config can undo. Errors are left
// to the full load to report (a managed policy that does not load fails
// every call closed there).
func peekSecrets(path string) (backend string, require bool) {
	if m, err := gate.ReadManaged(); err == nil && m != nil {
		require = m.Policy.RequireEncryption
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", require
	}
	var c struct {
		Secrets struct {
			Backend           string
			RequireEncryption bool `json:"require_encryption"`
		} `json:"secrets"`
	}
	_ = json.Unmarshal(data, &c)
	return c.Secrets.Backend, require || c.Secrets.RequireEncryption
}
