//go:build !linux

package secrets

import (
	"errors"
	"time"
)

// Only Linux has the kernel keyring; elsewhere `moat unlock` explains, and
// no key is ever found.

var errNoKernelKeyring = &HintError{
	Err: errors.New("secrets: `moat unlock` needs the Linux kernel keyring"),
	hints: []string{"give the passphrase in " + PassphraseEnv + " instead, or use the OS keychain " +
		"(secrets.backend \"auto\" or \"keychain\")"},
}

func keyringDesc([]byte) string                      { return "" }
func keyringGet(string) []byte                       { return nil }
func keyringPut(string, []byte, time.Duration) error { return errNoKernelKeyring }
func keyringDrop(string) (bool, error)               { return false, nil }
