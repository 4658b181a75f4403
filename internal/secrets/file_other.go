//go:build !unix

package secrets

import (
	"context"
	"errors"
	"time"
)

// The encrypted file store relies on Unix modes, owners and O_NOFOLLOW; on
// other systems only the keychain is offered.
type fileStore struct{}

func openFileStore(Options) (*fileStore, error) {
	return nil, errors.New("secrets: the encrypted file store is only available on Unix; use the keychain")
}

func (*fileStore) describe() string                            { return "encrypted file" }
func (*fileStore) get(context.Context, string) (Secret, error) { return Secret{}, ErrNotFound }
func (*fileStore) set(context.Context, string, Secret) error   { return errors.ErrUnsupported }
func (*fileStore) delete(context.Context, string) error        { return ErrNotFound }
func (*fileStore) list(context.Context) ([]string, error)      { return nil, nil }
func (*fileStore) protection() Protection                      { return Encrypted }
func (*fileStore) lockPath() string                            { return "" }
func (*fileStore) rekey(context.Context, []byte) error         { return errors.ErrUnsupported }

// LockPath returns the cross-process lock file of the store in dir.
func LockPath(dir string) string { return dir + ".lock" }

const oNoFollow = 0

func isLoop(error) bool { return false }

func (*fileStore) keySource() string                 { return "" }
func (*fileStore) unlockKeyring(time.Duration) error { return errors.ErrUnsupported }
func lockFileStore(Options) (bool, error)            { return false, nil }

// UseCheapKDFInTests does nothing where there is no file store.
func UseCheapKDFInTests() {}
