package secrets

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel keyring is the key source of `moat unlock`: it holds an
// encrypted store's derived key (never the passphrase) in the user keyring
// (@u), which every process of the user shares (a client's moat, a terminal's
// `moat call`) and which the kernel drops at reboot, like an ssh-agent that
// needs no socket. Keeping the derived key also spares every later open the
// Argon2id derivation.
//
// The key's description names the store's header, so a key never opens
// another store, and a re-key (which writes a new header) leaves the old
// key unused; the header's verifier still checks every key found.

// keyringType is the kernel key type: "user" keys hold arbitrary payloads
// readable by their possessor.
const keyringType = "user"

// keyringDesc is the description of the key that unlocks the store whose
// header is hdr.
func keyringDesc(hdr []byte) string {
	sum := sha256.Sum256(hdr)
	return "moat:secret-store:" + hex.EncodeToString(sum[:16])
}

// keyringGet returns the key stored under desc, or nil when there is none
// (or the kernel keyring cannot be used here: that is the same as locked).
func keyringGet(desc string) []byte {
	id, err := unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, keyringType, desc, 0)
	if err != nil {
		return nil
	}
	buf := make([]byte, 64)
	n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0)
	if err != nil || n != 32 {
		clear(buf)
		return nil
	}
	return buf[:n]
}

// keyringPut stores key under desc in the user keyring, replacing any key
// of that description. ttl > 0 makes the kernel drop it after ttl.
func keyringPut(desc string, key []byte, ttl time.Duration) error {
	id, err := unix.AddKey(keyringType, desc, key, unix.KEY_SPEC_USER_KEYRING)
	if err != nil {
		return keyringError("storing the key in", err)
	}
	if ttl > 0 {
		secs := int((ttl + time.Second - 1) / time.Second)
		if _, err := unix.KeyctlInt(unix.KEYCTL_SET_TIMEOUT, id, secs, 0, 0); err != nil {
			_, _ = unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0)
			return keyringError("setting the expiry of the key in", err)
		}
	}
	return nil
}

// keyringDrop removes the key stored under desc; false when there was none.
func keyringDrop(desc string) (bool, error) {
	id, err := unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, keyringType, desc, 0)
	if errors.Is(err, unix.ENOKEY) || errors.Is(err, unix.EKEYEXPIRED) || errors.Is(err, unix.EKEYREVOKED) {
		return false, nil
	}
	if err != nil {
		return false, keyringError("looking up the key in", err)
	}
	if _, err := unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0); err != nil {
		return false, keyringError("removing the key from", err)
	}
	return true, nil
}

func keyringError(what string, err error) error {
	e := &HintError{Err: fmt.Errorf("secrets: %s the kernel keyring: %w", what, err)}
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		e.hints = []string{
			"this system does not let moat use the kernel keyring (containers often block keyctl with seccomp)",
			"give the passphrase in " + PassphraseEnv + " or the systemd credential " + CredentialName + " instead",
		}
	}
	return e
}
