package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/lazyregexp"
	"github.com/moatmcp/moat/internal/secrets"
)

const secretUsage = `usage:
  moat secret set [flags] NAME     store a value read from a hidden prompt, or from stdin
  moat secret rm [flags] NAME      remove a secret
  moat secret list [flags]         list secret names and where they are kept (never values)
  moat secret migrate [flags]      move dynamic-mcp's plain-text OAuth tokens into the store
  moat secret encrypt [flags]      encrypt the file store with a passphrase (or change its passphrase)
  moat secret decrypt [--yes]      protect the file store by permissions only (refused under require_encryption)
  moat secret unlock [--for D]     keep the encrypted store's key in the kernel keyring until reboot (or D),
                                   so every moat of yours opens it without a passphrase (also: moat unlock)
  moat secret lock                 remove that key from the kernel keyring (also: moat lock)
flags:
  --backend auto|keychain|file     where secrets live (default auto: the keychain if it answers)
  --dir DIR                        the file store's directory
  --yes                            decrypt without asking
  --for DURATION                   unlock for this long only (e.g. 8h)
  --identity ID                    set or rm identity ID's own value of NAME: what the gateway's
                                   per-user servers ("per_user": true) of that identity read as ${secret:NAME}
With no keychain, the file store is encrypted when a key source answers: MOAT_PASSPHRASE, the
systemd credential moat-passphrase ($CREDENTIALS_DIRECTORY), the kernel keyring after moat unlock,
or a prompt on a terminal; else it is protected by its 0600/0700 modes only. secrets.require_encryption in the config named by
MOAT_CONFIG refuses that mode.`

// maxSecretInput bounds what `moat secret set` reads from stdin; the store
// refuses values over its own, smaller limit with a clear error.
const maxSecretInput = 1 << 20

// secretCommand runs `moat secret ARGS...` (args excludes "secret") and
// returns the exit code: 0 ok, 1 runtime failure, 2 usage.
func secretCommand(ctx context.Context, args []string, stdin *os.File, stdout, stderr io.Writer) int {
	usageErr := func(msg string, hints ...string) int { return usageFailure(stderr, secretUsage, msg, hints...) }
	if len(args) == 0 {
		return usageErr("moat secret needs a subcommand: set, rm, list, migrate, encrypt, decrypt, unlock or lock")
	}
	sub := args[0]
	fs := flag.NewFlagSet("moat secret "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	backend := fs.String("backend", secrets.BackendAuto, "")
	dir := fs.String("dir", "", "")
	yes := fs.Bool("yes", false, "")
	ttl := fs.Duration("for", 0, "")
	identity := fs.String("identity", "", "")
	// Flags may come before or after NAME.
	pos, err := parseInterspersed(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, secretUsage)
		return exitOK
	}
	if err != nil {
		return usageErr(err.Error())
	}

	if *identity != "" && sub != "set" && sub != "rm" {
		return usageErr("--identity goes with `moat secret set` or `moat secret rm`")
	}

	cfgPath, _, _ := config.ResolvePath("", os.LookupEnv)
	_, require := peekSecrets(cfgPath)
	open := func() (*secrets.Store, int) {
		s, err := secrets.Open(ctx, &secrets.Options{
			Backend:           *backend,
			Dir:               *dir,
			Passphrase:        passphrasePrompt(stdin, stderr),
			NewPassphrase:     newStorePrompt(stdin, stderr),
			RequireEncryption: require,
		})
		if err != nil {
			printError(stderr, err)
			return nil, exitFailure
		}
		// The audit record of this command takes its keys from the same
		// store (opened once, with the passphrase typed once) when it is
		// the default one, instead of opening it again.
		if *dir == "" && (*backend == "" || *backend == secrets.BackendAuto) {
			processStore.use(s)
		}
		// Only where a value is about to be stored is the note news: list
		// and rm name the backend of each secret anyway.
		if why := s.Fallback(); why != nil && (sub == "set" || sub == "migrate") {
			fmt.Fprintf(stderr, "moat: note: the keychain is not usable (%v); using the %s\n", why, s.Backend())
		}
		// The passphrase came from this prompt: a moat that a client
		// launches has no prompt, so say now what it will need.
		if s.KeySource() == secrets.SourcePrompt && (sub == "set" || sub == "migrate") {
			fmt.Fprintln(stderr, "moat: note: a moat that your MCP client starts cannot ask for this passphrase: "+
				"run `moat unlock` once per boot, or give it MOAT_PASSPHRASE")
		}
		return s, exitOK
	}

	switch sub {
	case "set":
		switch {
		case len(pos) == 0:
			return usageErr("moat secret set needs a NAME")
		case len(pos) > 1:
			// Never echo pos[1]: it is probably the secret.
			return usageErr("moat secret set takes only a NAME: the value is never read from the command line",
				"a value in argv lands in your shell history and in /proc/PID/cmdline, where other processes can read it",
				"run `moat secret set "+pos[0]+"` and type the value at the hidden prompt, or pipe it: "+
					"`printf %s \"$TOKEN\" | moat secret set "+pos[0]+"`")
		}
		name, err := identityItem(pos[0], *identity)
		if err != nil {
			return usageErr(err.Error())
		}
		if err := secrets.ValidateName(name); err != nil {
			printError(stderr, err)
			return exitUsage
		}
		v, err := readSecretValue(stdin, stderr, name)
		if err != nil {
			printError(stderr, err)
			return exitUsage
		}
		s, code := open()
		if s == nil {
			return code
		}
		if err := s.Set(ctx, name, v); err != nil {
			printError(stderr, err)
			return exitFailure
		}
		if *identity != "" {
			fmt.Fprintf(stdout, "stored %q in the %s; per-user servers (\"per_user\": true) of identity %q read it as ${secret:%s}\n", name, s.Backend(), *identity, pos[0])
		} else {
			fmt.Fprintf(stdout, "stored %q in the %s; refer to it as ${secret:%s}\n", name, s.Backend(), name)
		}
		commandEvent(ctx, stderr, "secret_set", "", map[string]string{"name": name, "backend": s.Backend()})
		return exitOK

	case "rm":
		if len(pos) != 1 {
			return usageErr("moat secret rm takes exactly one NAME")
		}
		name, err := identityItem(pos[0], *identity)
		if err != nil {
			return usageErr(err.Error())
		}
		s, code := open()
		if s == nil {
			return code
		}
		if err := s.Delete(ctx, name); err != nil {
			printError(stderr, err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "removed %q from the %s\n", name, s.Backend())
		commandEvent(ctx, stderr, "secret_rm", "", map[string]string{"name": name, "backend": s.Backend()})
		return exitOK

	case "list", "ls":
		if len(pos) != 0 {
			return usageErr("moat secret list takes no arguments")
		}
		s, code := open()
		if s == nil {
			return code
		}
		items, err := s.List(ctx)
		if err != nil {
			printError(stderr, err)
			return exitFailure
		}
		if len(items) == 0 {
			fmt.Fprintf(stdout, "no secrets in the %s\n", s.Backend())
			return exitOK
		}
		fmt.Fprintln(stdout, "# "+protectionNote(s))
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tBACKEND")
		for _, it := range items {
			fmt.Fprintf(tw, "%s\t%s\n", it.Name, it.Backend)
		}
		tw.Flush()
		return exitOK

	case "migrate":
		if len(pos) != 0 {
			return usageErr("moat secret migrate takes no arguments")
		}
		home, err := os.UserHomeDir()
		if err != nil {
			printError(stderr, fmt.Errorf("secret migrate: %w", err))
			return exitFailure
		}
		s, code := open()
		if s == nil {
			return code
		}
		moved, err := secrets.MigrateDynamicMCP(ctx, s, home)
		if len(moved) > 0 {
			commandEvent(ctx, stderr, "secret_migrate", "", map[string]string{"servers": strings.Join(moved, ","), "backend": s.Backend()})
		}
		for _, server := range moved {
			fmt.Fprintf(stdout, "moved the OAuth token of %q into the %s as %q; removed its plain-text file\n",
				server, s.Backend(), secrets.DynamicMCPPrefix+server)
		}
		if err != nil {
			printError(stderr, err)
			return exitFailure
		}
		if len(moved) == 0 {
			fmt.Fprintf(stdout, "nothing to migrate: no token files in %s\n", secrets.DynamicMCPDir(home))
		}
		return exitOK

	case "encrypt", "decrypt":
		if len(pos) != 0 {
			return usageErr("moat secret " + sub + " takes no arguments")
		}
		return rekeyCommand(ctx, sub, *yes, open, stdin, stdout, stderr)

	case "unlock":
		if len(pos) != 0 {
			return usageErr("moat unlock takes no arguments")
		}
		if *ttl < 0 {
			return usageErr("--for must be positive, e.g. --for 8h")
		}
		s, code := open()
		if s == nil {
			return code
		}
		if err := s.Unlock(*ttl); err != nil {
			printError(stderr, err)
			return exitFailure
		}
		until := "until the next reboot"
		if *ttl > 0 {
			until = "for " + ttl.String()
		}
		fmt.Fprintf(stdout, "unlocked the %s %s: every moat of yours opens it without a passphrase; `moat lock` ends that\n",
			s.Backend(), until)
		commandEvent(ctx, stderr, "secret_unlock", "", map[string]string{"backend": s.Backend(), "for": until})
		return exitOK

	case "lock":
		if len(pos) != 0 {
			return usageErr("moat lock takes no arguments")
		}
		dropped, err := secrets.Lock(&secrets.Options{Dir: *dir})
		if err != nil {
			printError(stderr, err)
			return exitFailure
		}
		if !dropped {
			fmt.Fprintln(stdout, "nothing to lock: the kernel keyring holds no key of the secret store")
			return exitOK
		}
		fmt.Fprintln(stdout, "locked: the kernel keyring no longer holds the secret store's key; moat needs the passphrase again")
		commandEvent(ctx, stderr, "secret_lock", "", nil)
		return exitOK

	case "help", "-h", "--help":
		fmt.Fprintln(stdout, secretUsage)
		return exitOK
	}
	return usageErr(fmt.Sprintf("unknown subcommand %q", sub), "use set, rm, list, migrate, encrypt, decrypt, unlock or lock")
}

// readSecretValue reads the value for name: from a hidden prompt when stdin
// is a terminal, else all of stdin minus one trailing newline (so that
// `echo "$TOKEN" | moat secret set NAME` stores the token, not a newline).
func readSecretValue(stdin *os.File, stderr io.Writer, name string) (secrets.Secret, error) {
	var b []byte
	if term.IsTerminal(int(stdin.Fd())) {
		fmt.Fprintf(stderr, "Value for %s (input is hidden): ", name)
		v, err := term.ReadPassword(int(stdin.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return secrets.Secret{}, fmt.Errorf("secret set: reading the value: %w", err)
		}
		b = v
	} else {
		v, err := io.ReadAll(io.LimitReader(stdin, maxSecretInput+1))
		if err != nil {
			return secrets.Secret{}, fmt.Errorf("secret set: reading the value from stdin: %w", err)
		}
		if len(v) > maxSecretInput {
			return secrets.Secret{}, fmt.Errorf("secret set: stdin holds more than %d bytes; that is not a secret value", maxSecretInput)
		}
		b = v
		if bytes.HasSuffix(b, []byte("\n")) {
			b = b[:len(b)-1]
			b = bytes.TrimSuffix(b, []byte("\r"))
		}
	}
	defer clear(b)
	if len(b) == 0 {
		return secrets.Secret{}, fmt.Errorf("secret set: the value for %q is empty", name)
	}
	return secrets.NewSecret(string(b)), nil
}

// passphrasePrompt returns the file store's passphrase source: MOAT_PASSPHRASE,
// else a hidden prompt when stdin is a terminal, else nil so that the store
// explains what to do.
func passphrasePrompt(stdin *os.File, stderr io.Writer) func() ([]byte, error) {
	if os.Getenv("MOAT_PASSPHRASE") != "" || !term.IsTerminal(int(stdin.Fd())) {
		return nil
	}
	return func() ([]byte, error) {
		fmt.Fprint(stderr, "Passphrase for moat's encrypted secret store (input is hidden): ")
		p, err := term.ReadPassword(int(stdin.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
}

// rekeyCommand runs `moat secret encrypt` and `moat secret decrypt`.
func rekeyCommand(ctx context.Context, sub string, yes bool, open func() (*secrets.Store, int),
	stdin *os.File, stdout, stderr io.Writer) int {
	s, code := open()
	if s == nil {
		return code
	}
	before := s.Protection()
	if sub == "decrypt" {
		if before == secrets.PermissionsOnly {
			fmt.Fprintln(stdout, "nothing to do: "+protectionNote(s))
			return exitOK
		}
		if !yes {
			if !term.IsTerminal(int(stdin.Fd())) {
				return usageFailure(stderr, secretUsage, "moat secret decrypt asks for confirmation; pass --yes when stdin is not a terminal")
			}
			fmt.Fprintf(stderr, "Decrypt the secret store? Its key will sit in its header, so anyone who can read your files can read your secrets. [y/N] ")
			var answer string
			fmt.Fscanln(stdin, &answer)
			if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
				fmt.Fprintln(stderr, "moat: not decrypted")
				return exitFailure
			}
		}
		if err := s.Decrypt(ctx); err != nil {
			printError(stderr, err)
			return exitFailure
		}
	} else {
		pass, err := newPassphrase(stdin, stderr, before)
		if err != nil {
			printError(stderr, err)
			return exitFailure
		}
		defer clear(pass)
		if err := s.Encrypt(ctx, pass); err != nil {
			printError(stderr, err)
			return exitFailure
		}
	}
	fmt.Fprintln(stdout, "now in force: "+protectionNote(s))
	if s.Protection() == secrets.Encrypted {
		fmt.Fprintln(stdout, "moat serve needs MOAT_PASSPHRASE, the systemd credential moat-passphrase, or `moat unlock` "+
			"(once per boot) from now on; restart any running moat so it opens the store with its new key")
	}
	commandEvent(ctx, stderr, "secret_"+sub, "", map[string]string{
		"from": before.String(), "protection": s.Protection().String(), "backend": s.Backend()})
	return exitOK
}

// newPassphrase is the passphrase `moat secret encrypt` encrypts with:
// MOAT_PASSPHRASE or the systemd credential when the store is not encrypted
// yet; else (changing it) MOAT_NEW_PASSPHRASE; else a prompt, typed twice.
func newPassphrase(stdin *os.File, stderr io.Writer, now secrets.Protection) ([]byte, error) {
	if now != secrets.Encrypted {
		p, _, err := secrets.PassphraseFromEnvironment()
		if err != nil || p != nil {
			return p, err
		}
	} else if p := os.Getenv("MOAT_NEW_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	if !term.IsTerminal(int(stdin.Fd())) {
		if now == secrets.Encrypted {
			return nil, errors.New("secret encrypt: no new passphrase: set MOAT_NEW_PASSPHRASE (MOAT_PASSPHRASE opens the store), or run it on a terminal")
		}
		return nil, errors.New("secret encrypt: no passphrase: set MOAT_PASSPHRASE or the systemd credential moat-passphrase, or run it on a terminal")
	}
	return typedTwice(stdin, stderr, "New passphrase for moat's secret store")
}

// typedTwice reads a new passphrase from the terminal, typed twice.
func typedTwice(stdin *os.File, stderr io.Writer, prompt string) ([]byte, error) {
	fmt.Fprint(stderr, prompt+" (input is hidden): ")
	p1, err := term.ReadPassword(int(stdin.Fd()))
	fmt.Fprintln(stderr)
	if err != nil {
		return nil, fmt.Errorf("reading the passphrase: %w", err)
	}
	fmt.Fprint(stderr, "Again: ")
	p2, err := term.ReadPassword(int(stdin.Fd()))
	fmt.Fprintln(stderr)
	defer clear(p2)
	if err != nil {
		return nil, fmt.Errorf("reading the passphrase: %w", err)
	}
	if !bytes.Equal(p1, p2) {
		clear(p1)
		return nil, errors.New("the two passphrases differ; nothing changed")
	}
	return p1, nil
}

// newStorePrompt is Options.NewPassphrase on a terminal: a store created
// here gets its passphrase typed twice. nil where passphrasePrompt is nil.
func newStorePrompt(stdin *os.File, stderr io.Writer) func() ([]byte, error) {
	if passphrasePrompt(stdin, stderr) == nil {
		return nil
	}
	return func() ([]byte, error) {
		return typedTwice(stdin, stderr, "Passphrase for moat's new encrypted secret store")
	}
}

// identityItem is the store's name for identity's own value of the secret
// name (name itself when identity is ""). Only set and rm take an
// identity.
func identityItem(name, identity string) (string, error) {
	if identity == "" {
		return name, nil
	}
	if !identityName.MatchString(identity) || identity == "." || identity == ".." {
		return "", fmt.Errorf("--identity %q is not an identity name: use the name under gateway.identities (1 to 64 letters, digits, '_', '.' or '-')", identity)
	}
	if strings.Contains(name, "@") {
		return "", fmt.Errorf("secret name %q already names an identity ('@'): give the plain NAME with --identity", name)
	}
	return secrets.ForIdentity(name, identity), nil
}

// identityName is an identity's name as the config allows it.
var identityName = lazyregexp.New(`^[A-Za-z0-9_.-]{1,64}$`)
