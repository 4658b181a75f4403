// Package auditlog connects Moat to its audit log: the log's keys, kept in
// the secret store; the guard layer that records every call before its
// result goes back to the client; and the events of the proxy's life
// (start, stop, reloads, upstreams, child processes).
//
// The log opens in the background so that serving tools/list never waits
// for a keychain or a passphrase derivation; every call waits until the log
// is open, and is refused when it cannot be (fail closed), unless the
// config says audit.on_failure: continue.
package auditlog

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/safepath"
	"github.com/moatmcp/moat/internal/secrets"
)

// Names of the log's keys in the secret store.
const (
	macItem    = "moat-audit-mac-key"
	signerItem = "moat-audit-signing-key"
)

// Keys reads the log's keys from store. With create, keys that do not exist
// yet are generated and stored; without, their absence is an error.
func Keys(ctx context.Context, store *secrets.Store, create bool) (audit.Keys, error) {
	mac, err := key(ctx, store, macItem, 32, create)
	if err != nil {
		return audit.Keys{}, err
	}
	seed, err := key(ctx, store, signerItem, ed25519.SeedSize, create)
	if err != nil {
		return audit.Keys{}, err
	}
	return audit.Keys{MAC: mac, Signer: ed25519.NewKeyFromSeed(seed)}, nil
}

func key(ctx context.Context, store *secrets.Store, name string, size int, create bool) ([]byte, error) {
	b, err := store.Key(ctx, name, size, create)
	switch {
	case errors.Is(err, secrets.ErrNotFound) && !create:
		return nil, fmt.Errorf("no audit key %q in the %s: this machine's moat has never written an audit log", name, store.Backend())
	case err != nil:
		return nil, fmt.Errorf("audit key: %w", err)
	}
	return b, nil
}

// DefaultPath is $XDG_STATE_HOME/moat/audit.jsonl, else
// ~/.local/state/moat/audit.jsonl.
func DefaultPath() (string, error) {
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "moat", "audit.jsonl"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no audit.path configured and no home directory: %w", err)
	}
	return filepath.Join(home, ".local", "state", "moat", "audit.jsonl"), nil
}

// Log is the process's audit log.
type Log struct {
	onFailure audit.FailureMode
	log       *slog.Logger
	pid       int
	user      string

	ready chan struct{} // closed once the first opening finished, either way
	w     atomic.Pointer[audit.Writer]

	// A log that could not be opened (its directory or file not writable,
	// a bad tail) is opened again by a later call, at most once per
	// reopenEvery, so fixing the cause needs no restart. Guarded by mu
	// once ready is closed.
	mu      sync.Mutex
	opts    audit.Options
	keys    *audit.Keys // nil when the keys could not be read: not retried
	first   []*audit.Record
	openErr error
	retryAt time.Time

	warned sync.Once

	// pending counts the writes waiting to be in the log (Pending);
	// observe, when set, is told how long each took (Observe).
	pending atomic.Int64
	observe atomic.Pointer[func(time.Duration)]
}

// Observe has f told how long each record took to write (to be durable,
// or in the file for WriteBehind), so that a slow disk or a contended log
// shows in the metrics; the audit log itself knows nothing of them.
func (l *Log) Observe(f func(time.Duration)) { l.observe.Store(&f) }

// Pending is how many records are waiting to be written: the log's queue,
// as the callers waiting on it see it.
func (l *Log) Pending() int64 { return l.pending.Load() }

// reopenEvery spaces the attempts to open a log that could not be opened.
const reopenEvery = time.Second

// Open starts opening the log in the background: keys come from keys (which
// may block on a keychain or a passphrase), then audit.Open, then the first
// records (the server's start). Records written meanwhile wait, and come
// after those.
func Open(opts audit.Options, keys func() (audit.Keys, error), log *slog.Logger, first ...*audit.Record) *Log {
	l := &Log{onFailure: opts.OnFailure, log: log, pid: os.Getpid(), user: userName(), ready: make(chan struct{}), opts: opts, first: first}
	go func() {
		defer close(l.ready)
		k, err := keys()
		if err != nil {
			l.openErr = fmt.Errorf("audit log keys: %w", err)
			l.log.Error("the audit log cannot be opened", "err", l.openErr)
			return
		}
		l.keys = &k
		if err := l.open(); err != nil {
			l.log.Error("the audit log cannot be opened; calls are refused until it can be", "err", err)
		}
	}()
	return l
}

// open opens the log and writes the first records. l.mu is held, or the
// opening goroutine runs alone.
func (l *Log) open() error {
	w, err := openLog(l.opts, *l.keys)
	for _, r := range l.first {
		if err != nil {
			break
		}
		r.PID, r.User = l.pid, l.user
		err = w.Write(context.Background(), r)
	}
	if err != nil {
		if w != nil {
			w.Close()
		}
		l.openErr, l.retryAt = err, time.Now().Add(reopenEvery)
		return err
	}
	l.openErr = nil
	l.w.Store(w)
	return nil
}

// RecordCommand records one event of a moat command (secret set, pins
// approve, auth login, …). Serving moats may hold the same log: writers take
// turns, so the event joins the one chain.
func RecordCommand(ctx context.Context, opts audit.Options, keys func() (audit.Keys, error), r *audit.Record) error {
	k, err := keys()
	if err != nil {
		return fmt.Errorf("audit log keys: %w", err)
	}
	w, err := openLog(opts, k)
	if err != nil {
		return err
	}
	r.PID, r.User = os.Getpid(), userName()
	if werr := w.Write(ctx, r); werr != nil {
		w.Close()
		return werr
	}
	return w.Close()
}

// openLog is audit.Open after checking the log's directory and every
// directory above it (package safepath): whoever can change one of them
// can replace the log. audit.Open checks the directory and file themselves.
func openLog(opts audit.Options, k audit.Keys) (*audit.Writer, error) {
	dir := filepath.Dir(opts.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: creating log directory: %w", err)
	}
	if err := safepath.Check(dir, safepath.Trusted); err != nil {
		return nil, fmt.Errorf("audit: log %s: %w", opts.Path, err)
	}
	return audit.Open(opts, k)
}

func userName() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return fmt.Sprint(os.Getuid())
}

// ErrNotOpen wraps the reason the log could not be opened.
var ErrNotOpen = errors.New("audit log not open")

// wait returns the writer once the log is open.
func (l *Log) wait(ctx context.Context) (*audit.Writer, error) {
	select {
	case <-l.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if w := l.w.Load(); w != nil {
		return w, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if w := l.w.Load(); w != nil {
		return w, nil
	}
	if l.keys != nil && !time.Now().Before(l.retryAt) {
		if err := l.open(); err == nil {
			l.log.Info("the audit log is open", "path", l.opts.Path)
			return l.w.Load(), nil
		}
	}
	return nil, fmt.Errorf("%w: %w", ErrNotOpen, l.openErr)
}

// Write records r, filling in the process fields. It returns nil only when
// r is durable, or when the config accepts losing records (continue), in
// which case the loss is logged.
func (l *Log) Write(ctx context.Context, r *audit.Record) error {
	return l.write(ctx, r, (*audit.Writer).Write)
}

// WriteBehind records r like Write, but returns once r is in the file; it
// is durable within audit.BehindDelay (see audit.Writer.WriteBehind).
func (l *Log) WriteBehind(ctx context.Context, r *audit.Record) error {
	return l.write(ctx, r, (*audit.Writer).WriteBehind)
}

func (l *Log) write(ctx context.Context, r *audit.Record, write func(*audit.Writer, context.Context, *audit.Record) error) error {
	l.pending.Add(1)
	start := time.Now()
	w, err := l.wait(ctx)
	if err == nil {
		r.PID, r.User = l.pid, l.user
		err = write(w, ctx, r)
	}
	l.pending.Add(-1)
	if f := l.observe.Load(); f != nil {
		(*f)(time.Since(start))
	}
	if err != nil {
		if l.onFailure == audit.FailContinue {
			l.warned.Do(func() {
				l.log.Error("audit log unavailable; going on without it because audit.on_failure is continue", "err", err)
			})
			return nil
		}
		return err
	}
	return nil
}

// Event records a non-call event with its details.
func (l *Log) Event(ctx context.Context, event string, detail map[string]string) error {
	return l.Write(ctx, &audit.Record{Event: event, Detail: detail})
}

// Close writes the final signed checkpoint.
func (l *Log) Close() error {
	<-l.ready
	l.mu.Lock()
	defer l.mu.Unlock()
	if w := l.w.Load(); w != nil {
		return w.Close()
	}
	return nil
}
