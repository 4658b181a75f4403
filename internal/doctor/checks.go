package doctor

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/auditlog"
	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/importer"
	"github.com/moatmcp/moat/internal/lazyregexp"
	"github.com/moatmcp/moat/internal/safepath"
	"github.com/moatmcp/moat/internal/sandbox"
	"github.com/moatmcp/moat/internal/secrets"
)

// storeTimeout bounds opening the secret store and reading one item; the
// store bounds each keychain call itself, this bounds a slow passphrase
// derivation and a stuck bus together.
const storeTimeout = 20 * time.Second

// checkConfigFile reports whether another user could change the config:
// the file or any directory on its path (package safepath, the check
// config.Load makes), with the command that fixes it.
func (d *run) checkConfigFile() {
	c := Check{Section: SectionConfig, Name: "config.permissions"}
	var st unix.Stat_t
	if err := unix.Stat(d.o.ConfigPath, &st); err != nil {
		c.Status, c.Message = Fail, fmt.Sprintf("cannot read the config file: %v", err)
		c.Fix = "check the path, or pass the config file as an argument"
		d.add(c)
		return
	}
	var se *safepath.Error
	switch err := safepath.Check(d.o.ConfigPath, safepath.Trusted); {
	case errors.As(err, &se):
		c.Status, c.Message = Fail, se.Msg()+" (and so run commands as you): Moat refuses to load it"
		c.Fix = se.Fix
	case err != nil:
		c.Status, c.Message = Fail, fmt.Sprintf("cannot check the config file: %v", err)
	default:
		c.Status, c.Message = OK, fmt.Sprintf("config file mode %#o, owned by you: no other user can change it", st.Mode&0o777)
	}
	d.add(c)
}

// checkSecretStore opens the store the config names and reports which back
// end answered, or why none did.
func (d *run) checkSecretStore(ctx context.Context) {
	backend, require := peekBackend(d.o.ConfigPath)
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	open := d.o.OpenStore
	if open == nil {
		open = func(ctx context.Context, backend string) (*secrets.Store, error) {
			return secrets.Open(ctx, &secrets.Options{Backend: backend, Dir: d.o.SecretsDir, RequireEncryption: require})
		}
	}
	store, err := open(ctx, backend)
	c := Check{Section: SectionSecrets, Name: "secrets.backend"}
	if err != nil {
		c.Status, c.Message = Fail, fmt.Sprintf("no secret store answers: %v", err)
		c.Fix = "set MOAT_PASSPHRASE or the systemd credential moat-passphrase (the store's key sources), or unlock the keychain"
		var h interface{ Hints() []string }
		if errors.As(err, &h) && len(h.Hints()) > 0 {
			c.Fix = strings.Join(h.Hints(), " ")
		}
		d.add(c)
	} else {
		d.store = store
		switch p := store.Protection(); {
		case p == secrets.PermissionsOnly && require:
			c.Status, c.Message = Fail, "secret store: "+store.Backend()+", but secrets.require_encryption is set"
			c.Fix = "set MOAT_PASSPHRASE (or the systemd credential moat-passphrase), then run `moat secret encrypt`"
		case p == secrets.PermissionsOnly:
			c.Status, c.Message = Warn, "secret store: "+store.Backend()+": no keychain and no key source, so only the 0600/0700 modes keep other users out"
			c.Fix = "set MOAT_PASSPHRASE (or the systemd credential moat-passphrase), then run `moat secret encrypt`"
		default:
			c.Status, c.Message = OK, "secret store: "+store.Backend()+" (protection: "+p.String()+")"
		}
		if fb := store.Fallback(); fb != nil {
			c.Details = []string{"keychain not used: " + fb.Error()}
		}
		d.add(c)
	}
	d.checkSecretsDir()
}

// peekBackend reads secrets.backend before the config is loaded: loading
// resolves ${secret:...} from the store that key names. A file that does not
// parse gives "" (auto), and the config check reports why.
func peekBackend(path string) (backend string, requireEncryption bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	var c struct {
		Secrets struct {
			Backend           string
			RequireEncryption bool `json:"require_encryption"`
		} `json:"secrets"`
	}
	_ = json.Unmarshal(data, &c)
	return c.Secrets.Backend, c.Secrets.RequireEncryption
}

// checkSecretsDir checks the encrypted file store's directory and files the
// way the store does on every read, so a bad mode shows here first.
func (d *run) checkSecretsDir() {
	dir := d.o.SecretsDir
	if dir == "" {
		var err error
		if dir, err = secrets.DefaultDir(); err != nil {
			return
		}
	}
	c := Check{Section: SectionSecrets, Name: "secrets.permissions"}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return // no file store in use: nothing to check
		}
		c.Status, c.Message = Fail, fmt.Sprintf("encrypted file store %s: %v", dir, err)
		d.add(c)
		return
	}
	if msg, fix := privateProblem(dir, &st, 0o077, "700"); msg != "" {
		c.Status, c.Message, c.Fix = Fail, "encrypted file store: "+msg, fix
		d.add(c)
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		c.Status, c.Message = Fail, fmt.Sprintf("encrypted file store %s cannot be listed: %v", dir, err)
		d.add(c)
		return
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if err := unix.Lstat(p, &st); err != nil {
			continue
		}
		if msg, fix := privateProblem(p, &st, 0o077, "600"); msg != "" {
			c.Status, c.Message, c.Fix = Fail, "encrypted file store: "+msg, fix
			d.add(c)
			return
		}
	}
	c.Status, c.Message = OK, fmt.Sprintf("file store %s: private to you (%d %s)", dir, len(entries), plural(len(entries), "item"))
	d.add(c)
}

// privateProblem says what is wrong with path when it is not owned by the
// user (or root) or has any of the bad mode bits, and the command that
// fixes it; "" when nothing is.
func privateProblem(path string, st *unix.Stat_t, bad uint32, chmod string) (msg, fix string) {
	if uid := uint32(os.Geteuid()); st.Uid != uid && st.Uid != 0 {
		return fmt.Sprintf("%s is owned by uid %d, not by you", path, st.Uid), fmt.Sprintf("chown %d %s", uid, path)
	}
	if m := uint32(st.Mode) & 0o777; m&bad != 0 { // Mode is uint16 on Darwin
		return fmt.Sprintf("%s has mode %#o: other users can reach it", path, m), "chmod " + chmod + " " + path
	}
	return "", ""
}

// loadConfig loads the config as serve does, with ${secret:...} from the
// store, and reports every problem at once.
func (d *run) loadConfig() {
	opts := &config.LoadOptions{Getenv: d.o.Getenv, Secret: d.secret, UserSecret: d.perUserSecret}
	cfg, err := config.Load(d.o.ConfigPath, opts)
	c := Check{Section: SectionConfig, Name: "config.valid"}
	var ce *config.Error
	switch {
	case errors.As(err, &ce):
		c.Status = Fail
		c.Message = fmt.Sprintf("config is invalid: %d %s", len(ce.Problems), plural(len(ce.Problems), "problem"))
		for _, p := range ce.Problems {
			c.Details = append(c.Details, p.String())
		}
		c.Fix = "correct each problem above; `moat config validate` re-checks the file"
	case err != nil:
		c.Status, c.Message = Fail, fmt.Sprintf("config cannot be loaded: %v", err)
	default:
		d.cfg = cfg
		enabled := 0
		for _, s := range cfg.Servers {
			if s.Enabled {
				enabled++
			}
			for _, v := range s.SecretValues {
				d.red.Add("secret", v)
			}
		}
		c.Status, c.Message = OK, fmt.Sprintf("config is valid: %d %s (%d enabled)", len(cfg.Servers), plural(len(cfg.Servers), "server"), enabled)
	}
	d.add(c)
}

// secret resolves ${secret:NAME} for the config loader.
func (d *run) secret(name string) (string, error) {
	if d.store == nil {
		return "", errors.New("the secret store cannot be opened (see the secret store check)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	s, err := d.store.Get(ctx, name)
	if errors.Is(err, secrets.ErrNotFound) {
		return "", fmt.Errorf("no secret %q in the %s; run `moat secret set %s`", name, d.store.Backend(), name)
	}
	if err != nil {
		return "", err
	}
	return s.Reveal(), nil
}

// checkLiterals finds credentials written literally in the config (the
// importer's detector, which names places, never values).
func (d *run) checkLiterals() {
	im, err := importer.ReadFile(d.o.ConfigPath)
	if err != nil {
		return // the config check already says why the file does not read
	}
	for _, l := range im.Literals {
		d.redactLiteral(l)
		name := secretNameFor(l)
		d.add(Check{
			Section: SectionConfig, Server: l.Server, Name: "config.literal_secret", Status: Warn,
			Message: fmt.Sprintf("server %q: %s holds a literal credential (%s); anyone who can read the file has it", l.Server, l.Where, l.Reason),
			Fix:     fmt.Sprintf("run `moat secret set %s` (it asks for the value), then write ${secret:%s} in place of the value", name, name),
		})
	}
	if len(im.Literals) == 0 {
		d.add(Check{Section: SectionConfig, Name: "config.literal_secret", Status: OK, Message: "no literal credentials in env, headers, args or urls"})
	}
}

// redactLiteral teaches the redactor a literal credential's value, so no
// error message that echoes it (a server's own, say) can show it.
func (d *run) redactLiteral(l importer.Literal) {
	if d.cfg == nil {
		return
	}
	s, ok := d.cfg.Servers[l.Server]
	if !ok {
		return
	}
	kind, key, _ := strings.Cut(l.Where, " ")
	switch kind {
	case "env":
		d.red.Add("literal", s.Env[key])
	case "header":
		d.red.Add("literal", s.Headers[key])
	}
}

var nonName = lazyregexp.New(`[^a-z0-9]+`)

// secretNameFor proposes a secret name for a literal: the env or header
// name ("GITHUB_TOKEN" -> "github-token"), else the server and the place.
func secretNameFor(l importer.Literal) string {
	kind, key, _ := strings.Cut(l.Where, " ")
	base := key
	if kind == "header" || key == "" {
		base = l.Server + "-" + l.Where
	}
	n := strings.Trim(nonName.ReplaceAllString(strings.ToLower(base), "-"), "-")
	if n == "" {
		n = "secret"
	}
	return n
}

// checkDynamicMCP reports plain-text OAuth tokens dynamic-mcp left behind.
func (d *run) checkDynamicMCP() {
	if d.o.Home == "" {
		return
	}
	c := Check{Section: SectionSecrets, Name: "secrets.dynamic_mcp_tokens"}
	if pending := secrets.PendingDynamicMCP(d.o.Home); len(pending) > 0 {
		c.Status = Warn
		c.Message = fmt.Sprintf("dynamic-mcp left %d plain-text OAuth %s in %s (%s)", len(pending), plural(len(pending), "token"), secrets.DynamicMCPDir(d.o.Home), strings.Join(pending, ", "))
		c.Fix = "`moat secret migrate` moves them into the secret store and deletes the files"
	} else {
		c.Status, c.Message = OK, "no plain-text tokens left by dynamic-mcp"
	}
	d.add(c)
}

// checkAudit reports the audit log's place, permissions, keys and chain,
// without writing to it (a running moat may hold it).
func (d *run) checkAudit(ctx context.Context) {
	path := d.o.AuditPath
	onFailure := config.OnFailureDeny
	if d.cfg != nil {
		onFailure = d.cfg.Audit.OnFailure
		if d.cfg.Audit.Path != "" {
			path = d.cfg.Audit.Path
		}
	}
	if path == "" {
		p, err := auditlog.DefaultPath()
		if err != nil {
			d.add(Check{Section: SectionAudit, Name: "audit.path", Status: Fail, Message: fmt.Sprintf("no audit log path: %v", err), Fix: "set audit.path in the config"})
			return
		}
		path = p
	}
	exists := d.checkAuditFiles(path)
	if onFailure == config.OnFailureContinue {
		d.add(Check{Section: SectionAudit, Name: "audit.on_failure", Status: Warn,
			Message: "audit.on_failure is continue: calls go on when the audit log cannot be written",
			Fix:     "remove audit.on_failure (the default, deny, refuses calls that cannot be recorded)"})
	}
	if d.store == nil {
		d.add(Check{Section: SectionAudit, Name: "audit.keys", Status: Fail,
			Message: "the audit log's keys live in the secret store, which cannot be opened: every tool call would be refused",
			Fix:     "make the secret store answer (see above)"})
		return
	}
	kctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	keys, err := auditlog.Keys(kctx, d.store, false)
	switch {
	case err != nil && !exists:
		d.add(Check{Section: SectionAudit, Name: "audit.keys", Status: OK, Message: "no audit keys yet: moat serve creates them with the log"})
		return
	case err != nil:
		d.add(Check{Section: SectionAudit, Name: "audit.keys", Status: Fail, Message: fmt.Sprintf("the log exists but its keys cannot be read: %v", err),
			Fix: "restore the secret store this log was written with; or move the log aside so moat starts a new one"})
		return
	}
	d.add(Check{Section: SectionAudit, Name: "audit.keys", Status: OK, Message: "audit keys present in the " + d.store.Backend()})
	if exists {
		d.verifyAudit(path, keys)
	}
}

// checkAuditFiles checks the log's directory and file as audit.Open does,
// and reports whether the log exists.
func (d *run) checkAuditFiles(path string) (exists bool) {
	c := Check{Section: SectionAudit, Name: "audit.permissions"}
	dir := filepath.Dir(path)
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		c.Status, c.Message = OK, fmt.Sprintf("%s: not created yet; moat serve creates it (0600 in a 0700 directory)", path)
		d.add(c)
		return false
	}
	if msg, fix := privateProblem(dir, &st, 0o022, "700"); msg != "" {
		c.Status, c.Message, c.Fix = Fail, "audit log directory "+msg+": the log could be replaced, and moat refuses it", fix
		d.add(c)
		return false
	}
	err := unix.Lstat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		if unix.Access(dir, unix.W_OK|unix.X_OK) != nil {
			c.Status, c.Message, c.Fix = Fail, fmt.Sprintf("%s: its directory is not writable by you", path), "chmod u+wx "+dir
		} else {
			c.Status, c.Message = OK, fmt.Sprintf("%s: not created yet; moat serve creates it (0600)", path)
		}
		d.add(c)
		return false
	}
	switch {
	case err != nil:
		c.Status, c.Message = Fail, fmt.Sprintf("%s: %v", path, err)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		c.Status, c.Message, c.Fix = Fail, fmt.Sprintf("%s is not a regular file: moat refuses it", path), "move it aside, or set audit.path"
	default:
		if msg, fix := privateProblem(path, &st, 0o077, "600"); msg != "" {
			c.Status, c.Message, c.Fix = Fail, "audit log "+msg+": moat refuses it", fix
		} else if unix.Access(path, unix.W_OK) != nil {
			c.Status, c.Message, c.Fix = Fail, fmt.Sprintf("%s is not writable by you", path), "chmod 600 "+path
		} else {
			c.Status, c.Message = OK, fmt.Sprintf("%s: writable, private to you", path)
		}
	}
	d.add(c)
	return true
}

// verifyAudit checks the hash chain and signed checkpoints of every file of
// the log. Records after the last checkpoint are only a warning: a running
// moat always has some.
func (d *run) verifyAudit(path string, keys audit.Keys) {
	c := Check{Section: SectionAudit, Name: "audit.chain"}
	files, err := audit.LogFiles(path)
	if err != nil {
		c.Status, c.Message = Fail, fmt.Sprintf("cannot list the log's files: %v", err)
		d.add(c)
		return
	}
	rep, err := audit.VerifyFiles(files, keys.MAC, keys.Signer.Public().(ed25519.PublicKey))
	switch {
	case err == nil:
		c.Status, c.Message = OK, fmt.Sprintf("chain verifies: %d records in %d %s, %d signed checkpoints", rep.Records, len(files), plural(len(files), "file"), rep.Checkpoints)
	case errors.Is(err, audit.ErrWrongKey):
		c.Status, c.Message = Fail, fmt.Sprintf("the log was written with other keys than this secret store's: %v", err)
		c.Fix = "most likely the moat that wrote the log uses another secret store (another HOME, XDG_DATA_HOME, keychain or MOAT_PASSPHRASE): run doctor as it runs; if it uses this store, the log was replaced"
	case errors.Is(err, audit.ErrTampered):
		c.Status, c.Message = Fail, fmt.Sprintf("the log was changed: %v", err)
		c.Fix = "`moat audit verify` shows where; keep the file as evidence"
	case errors.Is(err, audit.ErrUnsealed):
		c.Status = Warn
		c.Message = fmt.Sprintf("chain verifies up to seq %d; not sealed yet: %d %s after the last checkpoint", rep.SealedSeq, rep.Unsealed, plural(rep.Unsealed, "record"))
		c.Fix = "nothing while moat runs (it seals them at the next checkpoint or when it stops); if no moat runs, one was killed: `moat audit verify` after the next start"
	default:
		c.Status, c.Message = Fail, fmt.Sprintf("the log cannot be verified: %v", err)
	}
	d.add(c)
}

// checkMachine summarizes what this kernel lets Moat enforce for any child:
// the protections every Linux gives on one line, the ones that depend on
// the kernel each on its own.
func (d *run) checkMachine() {
	cgroup, _ := d.probe.Get(sandbox.PCgroup)
	var always []string
	for _, p := range d.probe.Protections {
		switch {
		case p.Name == sandbox.PNProc && !p.Enforced && cgroup.Enforced:
			d.add(Check{Section: SectionMachine, Name: "machine." + p.Name, Status: OK,
				Message: fmt.Sprintf("%s: %s; each server's cgroup pids.max limits its processes instead", p.Name, p.Detail)})
		case !p.Enforced:
			d.add(Check{Section: SectionMachine, Name: "machine." + p.Name, Status: Warn,
				Message: fmt.Sprintf("%s not available: %s", p.Name, p.Detail), Fix: machineFix[p.Name]})
		case kernelDependent[p.Name]:
			d.add(Check{Section: SectionMachine, Name: "machine." + p.Name, Status: OK, Message: fmt.Sprintf("%s: %s", p.Name, p.Detail)})
		default:
			always = append(always, p.Name)
		}
	}
	if len(always) > 0 {
		d.add(Check{Section: SectionMachine, Name: "machine.base", Status: OK, Message: "available for every child: " + strings.Join(always, ", "), Protections: d.probe.Protections})
	}
}

// kernelDependent are the protections whose detail (an ABI, a kernel
// setting) is worth a line even when available.
var kernelDependent = map[string]bool{sandbox.PLandlockFS: true, sandbox.PLandlockNet: true, sandbox.PNetNS: true, sandbox.PCgroup: true}

// machineFix says how to get a protection the machine lacks, where a user
// can do something about it.
var machineFix = map[string]string{
	sandbox.PLandlockFS:  "use Linux >= 5.13 with landlock in the lsm= boot parameter",
	sandbox.PLandlockNet: "use Linux >= 6.7 (Landlock ABI 4) for sandbox.net.connect",
	sandbox.PNetNS:       "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or the AppArmor userns restriction off for moat)",
	sandbox.PNProc:       "run moat as a normal user, not root",
}
