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
	"github.com/moatmcp/moat/internal/secrets"
)

// secretTimeout bounds reading one ${secret:NAME} while loading a config;
// the store itself bounds each keychain call.
const secretTimeout = 10 * time.Second

// lazyStore opens the secret store on first use, so a config without
// ${secret:...} never touches the keychain.
type lazyStore struct {
	backend string // from the config's secrets.backend; "" is auto
	once    sync.Once
	store   *secrets.Store
	err     error
}

// adopt makes s the store get returns, unless get has already run.
func (l *lazyStore) adopt(s *secrets.Store) {
	l.once.Do(func() { l.store = s })
}

func (l *lazyStore) get(ctx context.Context) (*secrets.Store, error) {
	l.once.Do(func() {
		l.store, l.err = secrets.Open(ctx, &secrets.Options{Backend: l.backend})
	})
	return l.store, l.err
}

var processStore lazyStore

// secretSink learns every secret value the config resolves (serve points it
// at the redactor).
var secretSink = func(name, value string) {}

// loadOptions resolves ${VAR} from the environment and ${secret:NAME} from
// the secret store.
func loadOptions() *config.LoadOptions {
	return &config.LoadOptions{
		Getenv: os.LookupEnv,
		Secret: func(name string) (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), secretTimeout)
			defer cancel()
			store, err := processStore.get(ctx)
			if err != nil {
				return "", fmt.Errorf("the secret store cannot be opened: %w", err)
			}
			s, err := store.Get(ctx, name)
			if errors.Is(err, secrets.ErrNotFound) {
				return "", fmt.Errorf("no secret %q in the %s", name, store.Backend())
			}
			if err != nil {
				return "", err
			}
			secretSink(name, s.Reveal())
			return s.Reveal(), nil
		},
	}
}

// storedAuditKeys reads the audit log's keys for `moat audit`; it never
// creates them (only serve does, when it first writes a log).
func storedAuditKeys(ctx context.Context) (audit.Keys, error) {
	store, err := processStore.get(ctx)
	if err != nil {
		return audit.Keys{}, fmt.Errorf("the secret store cannot be opened: %w", err)
	}
	return auditlog.Keys(ctx, store, false)
}

// peekSecretsBackend reads secrets.backend before the config is loaded:
// loading resolves ${secret:...} from the store that key names. Errors are
// left to the full load to report.
func peekSecretsBackend(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var c struct {
		Secrets struct{ Backend string } `json:"secrets"`
	}
	_ = json.Unmarshal(data, &c)
	return c.Secrets.Backend
}
