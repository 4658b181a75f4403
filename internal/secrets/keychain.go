package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/zalando/go-keyring"
)

// The keychain holds one item per secret (service = Options.Service, user =
// the secret's name) plus an index item, because go-keyring cannot list.
// The index holds names only, as a JSON array, under indexUser, which no
// valid secret name can equal (names never start with ".").
//
// The index is read-modify-written under Store.mu and the store's
// cross-process flock (see lockStore), so no writer, in this process or
// another moat, loses an update. Using go-keyring's Secret Service search would be
// exact on Linux only; the index works on every keychain go-keyring serves.
const indexUser = ".moat-index"

// keychainSlot lets one go-keyring call run at a time in this process. A
// call that times out keeps the slot until go-keyring returns (if ever), so
// at most one goroutine is ever abandoned inside go-keyring, and later calls
// fail fast instead of piling up more. godbus serializes the session bus
// behind one lock anyway, so the slot costs no parallelism.
var (
	keychainSlot = make(chan struct{}, 1)
	abandonedMu  sync.Mutex
	abandoned    *keychainCall // the timed-out call still holding the slot, if any
)

type keychainCall struct{ finished bool } // guarded by abandonedMu

type keychain struct {
	service string
	timeout time.Duration
	lock    string
}

func newKeychain(service string, timeout time.Duration, lock string) *keychain {
	return &keychain{service: service, timeout: timeout, lock: lock}
}

func (k *keychain) protection() Protection { return Keychain }
func (k *keychain) lockPath() string       { return k.lock }

func (k *keychain) describe() string {
	switch runtime.GOOS {
	case "darwin":
		return "keychain (macOS Keychain)"
	case "windows":
		return "keychain (Windows Credential Manager)"
	default:
		return "keychain (Secret Service)"
	}
}

// errKeychainTimeout is wrapped by every error for a keychain call that did
// not return in time.
var errKeychainTimeout = errors.New("the keychain did not answer")

func (k *keychain) unusable(err error) error {
	return &HintError{
		Err: fmt.Errorf("secrets: %s: %w", k.describe(), err),
		hints: []string{
			"start and unlock your keyring (gnome-keyring or KeePassXC with Secret Service on Linux), or",
			`use the encrypted file store: set secrets.backend to "file" and export MOAT_PASSPHRASE`,
		},
	}
}

// call runs f under the deadline, in the process-wide keychain slot.
func (k *keychain) call(ctx context.Context, f func() error) error {
	abandonedMu.Lock()
	stuck := abandoned != nil
	abandonedMu.Unlock()
	if stuck {
		return k.unusable(fmt.Errorf("%w: an earlier call is still blocked in the keychain", errKeychainTimeout))
	}
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	select {
	case keychainSlot <- struct{}{}:
	case <-ctx.Done():
		return k.timedOut(ctx)
	}
	c := &keychainCall{}
	done := make(chan error, 1)
	go func() {
		err := f()
		abandonedMu.Lock()
		c.finished = true
		if abandoned == c {
			abandoned = nil
		}
		abandonedMu.Unlock()
		<-keychainSlot
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		abandonedMu.Lock()
		if !c.finished {
			abandoned = c
		}
		abandonedMu.Unlock()
		return k.timedOut(ctx)
	}
}

func (k *keychain) timedOut(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("secrets: keychain call: %w", ctx.Err())
	}
	return k.unusable(fmt.Errorf("%w within %v", errKeychainTimeout, k.timeout))
}

// probe checks that the keychain answers and is unlocked, by reading the index.
func (k *keychain) probe(ctx context.Context) error {
	_, err := k.readIndex(ctx)
	return err
}

func (k *keychain) rawGet(ctx context.Context, user string) (string, error) {
	var v string
	err := k.call(ctx, func() error {
		var err error
		v, err = keyring.Get(k.service, user)
		return err
	})
	if errors.Is(err, keyring.ErrNotFound) {
		return "", ErrNotFound
	}
	var he *HintError
	if err != nil && !errors.As(err, &he) && !errors.Is(err, context.Canceled) {
		return "", k.unusable(err)
	}
	return v, err
}

func (k *keychain) rawSet(ctx context.Context, user, v string) error {
	err := k.call(ctx, func() error { return keyring.Set(k.service, user, v) })
	var he *HintError
	if err != nil && !errors.As(err, &he) && !errors.Is(err, context.Canceled) {
		return k.unusable(err)
	}
	return err
}

func (k *keychain) rawDelete(ctx context.Context, user string) error {
	err := k.call(ctx, func() error { return keyring.Delete(k.service, user) })
	if errors.Is(err, keyring.ErrNotFound) {
		return ErrNotFound
	}
	var he *HintError
	if err != nil && !errors.As(err, &he) && !errors.Is(err, context.Canceled) {
		return k.unusable(err)
	}
	return err
}

func (k *keychain) readIndex(ctx context.Context) ([]string, error) {
	raw, err := k.rawGet(ctx, indexUser)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	if err := json.Unmarshal([]byte(raw), &names); err != nil {
		return nil, &HintError{
			Err:   fmt.Errorf("secrets: the index item %q of service %q in the keychain is corrupt: %v", indexUser, k.service, err),
			hints: []string{"delete that item with your keyring tool; the secrets stay, and `moat secret set` lists them again"},
		}
	}
	return names, nil
}

func (k *keychain) writeIndex(ctx context.Context, names []string) error {
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		err := k.rawDelete(ctx, indexUser)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	raw, err := json.Marshal(names)
	if err != nil {
		return err
	}
	return k.rawSet(ctx, indexUser, string(raw))
}

func (k *keychain) get(ctx context.Context, name string) (Secret, error) {
	v, err := k.rawGet(ctx, name)
	if err != nil {
		return Secret{}, err
	}
	return NewSecret(v), nil
}

func (k *keychain) set(ctx context.Context, name string, v Secret) error {
	if err := k.rawSet(ctx, name, v.Reveal()); err != nil {
		return err
	}
	names, err := k.readIndex(ctx)
	if err != nil {
		return fmt.Errorf("secrets: stored %q, but could not list it: %w", name, err)
	}
	if slices.Contains(names, name) {
		return nil
	}
	if err := k.writeIndex(ctx, append(names, name)); err != nil {
		return fmt.Errorf("secrets: stored %q, but could not list it: %w", name, err)
	}
	return nil
}

func (k *keychain) delete(ctx context.Context, name string) error {
	derr := k.rawDelete(ctx, name)
	if derr != nil && !errors.Is(derr, ErrNotFound) {
		return derr
	}
	names, err := k.readIndex(ctx)
	if err != nil {
		return err
	}
	if i := slices.Index(names, name); i >= 0 {
		if err := k.writeIndex(ctx, slices.Delete(names, i, i+1)); err != nil {
			return err
		}
	}
	return derr
}

func (k *keychain) list(ctx context.Context) ([]string, error) {
	return k.readIndex(ctx)
}
