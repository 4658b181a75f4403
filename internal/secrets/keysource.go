package secrets

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Key sources of the file store, in the order they are tried.
const (
	// PassphraseEnv names the environment variable holding the passphrase.
	PassphraseEnv = "MOAT_PASSPHRASE"
	// CredentialName is the systemd credential holding the passphrase:
	// $CREDENTIALS_DIRECTORY/moat-passphrase (LoadCredential=moat-passphrase:FILE).
	CredentialName = "moat-passphrase"
)

// SourcePrompt is the key source of a passphrase typed at Options.Passphrase.
const SourcePrompt = "the passphrase prompt"

// maxPassphraseLen bounds a passphrase read from a credential file.
const maxPassphraseLen = 4096

// keySourceHints name every key source, for errors about a missing one.
func keySourceHints(dir string) []string {
	return []string{
		"export " + PassphraseEnv + " (the passphrase of the store in " + dir + "), or",
		"give moat the systemd credential " + CredentialName + " (LoadCredential=" + CredentialName +
			":/etc/moat/passphrase in its unit; moat reads $CREDENTIALS_DIRECTORY/" + CredentialName + "), or",
		"run `moat unlock` once per boot on a terminal: it keeps the store's key in the kernel keyring for every moat of yours, or",
		"run the command on a terminal, where moat asks for the passphrase",
	}
}

// passphraseFrom returns the file store's passphrase and the name of its
// source: o.Passphrase (a prompt), else MOAT_PASSPHRASE, else the systemd
// credential. With no source it returns nil, "", nil. prompt false skips
// o.Passphrase, so that merely describing a store never prompts.
func passphraseFrom(o Options, dir string, prompt bool) ([]byte, string, error) {
	if prompt && o.Passphrase != nil {
		p, err := o.Passphrase()
		if err != nil {
			return nil, "", fmt.Errorf("secrets: reading the passphrase for %s: %w", dir, err)
		}
		if len(p) == 0 {
			return nil, "", &HintError{
				Err:   fmt.Errorf("secrets: the passphrase for the secret store in %s is empty", dir),
				hints: []string{"enter a non-empty passphrase"},
			}
		}
		return p, SourcePrompt, nil
	}
	return PassphraseFromEnvironment()
}

// PassphraseFromEnvironment returns the passphrase from MOAT_PASSPHRASE,
// else from the systemd credential moat-passphrase (the file
// $CREDENTIALS_DIRECTORY/moat-passphrase, one trailing newline removed),
// with the name of its source. With neither it returns nil, "", nil. A
// credential that exists but is not a regular, non-empty file is an error.
func PassphraseFromEnvironment() ([]byte, string, error) {
	if p := os.Getenv(PassphraseEnv); p != "" {
		return []byte(p), PassphraseEnv, nil
	}
	cd := os.Getenv("CREDENTIALS_DIRECTORY")
	if cd == "" || !filepath.IsAbs(cd) {
		return nil, "", nil
	}
	path := filepath.Join(cd, CredentialName)
	const source = "systemd credential " + CredentialName
	f, err := os.OpenFile(path, os.O_RDONLY|oNoFollow, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if isLoop(err) {
		return nil, "", fmt.Errorf("secrets: refusing the %s: %s is a symbolic link", source, path)
	}
	if err != nil {
		return nil, "", fmt.Errorf("secrets: reading the %s: %w", source, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, "", fmt.Errorf("secrets: reading the %s: %w", source, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, "", fmt.Errorf("secrets: refusing the %s: %s is not a regular file", source, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPassphraseLen+1))
	if err != nil {
		return nil, "", fmt.Errorf("secrets: reading the %s: %w", source, err)
	}
	if len(b) > maxPassphraseLen {
		clear(b)
		return nil, "", fmt.Errorf("secrets: refusing the %s: %s is longer than %d bytes", source, path, maxPassphraseLen)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, "", &HintError{
			Err:   fmt.Errorf("secrets: the %s (%s) is empty", source, path),
			hints: []string{"write the passphrase into the file that LoadCredential= names"},
		}
	}
	return b, source, nil
}
