package config

import (
	"fmt"
	"net/url"
	"strings"
)

// Values of the audit and secrets blocks.
const (
	FsyncAlways = "always"
	FsyncBatch  = "batch"
	FsyncOff    = "off"

	OnFailureDeny     = "deny"
	OnFailureContinue = "continue"

	BackendAuto     = "auto"
	BackendKeychain = "keychain"
	BackendFile     = "file"
)

var (
	defaultsKeys = []string{"sandbox", "policy"}
	auditKeys    = []string{"path", "fsync", "on_failure", "record_args", "rotate", "checkpoint_every", "syslog", "syslog_format"}
	rotateKeys   = []string{"max_size", "max_age", "keep"}
	secretsKeys  = []string{"backend", "require_encryption"}
)

func (c *checker) defaults(m *member) Defaults {
	var d Defaults
	if m == nil || !c.object(m, "/defaults", `"defaults"`, defaultsKeys, `"defaults": {"sandbox": {...}, "policy": {...}}`) {
		return d
	}
	d.Sandbox = c.sandbox(m.val.get("sandbox"), "/defaults/sandbox", "defaults")
	d.Policy = c.policy(m.val.get("policy"), "/defaults/policy", "defaults.policy")
	return d
}

func (c *checker) audit(m *member) Audit {
	a := Audit{Fsync: FsyncBatch, OnFailure: OnFailureDeny, Rotate: DefaultRotate, SyslogFormat: SyslogJSON}
	if m == nil || !c.object(m, "/audit", `"audit"`, auditKeys, `"audit": {"path": "~/.local/state/moat/audit.jsonl"}`) {
		return a
	}
	n := m.val
	if f := n.get("path"); f != nil {
		if raw, ok := c.str(f, "/audit"); ok && raw != "" {
			a.Path, _ = c.filePath(raw, expansion{"/audit/path", f.val.off, "audit.path", nil, false, false})
		}
	}
	if f := n.get("fsync"); f != nil {
		if v := c.enum(f, "/audit/fsync", "audit.fsync", []string{FsyncAlways, FsyncBatch, FsyncOff},
			`use "batch" (the default: group commit), "always" (one sync per record) or "off" (no sync; records can be lost in a power cut)`); v != "" {
			a.Fsync = v
		}
	}
	if f := n.get("on_failure"); f != nil {
		if v := c.enum(f, "/audit/on_failure", "audit.on_failure", []string{OnFailureDeny, OnFailureContinue},
			`use "deny" (the default: refuse calls while the audit log cannot be written) or "continue"`); v != "" {
			a.OnFailure = v
		}
	}
	if f := n.get("record_args"); f != nil {
		a.RecordArgs = c.boolean(f, "/audit/record_args", "audit.record_args")
	}
	if f := n.get("rotate"); f != nil && c.object(f, "/audit/rotate", `"audit.rotate"`, rotateKeys, `"rotate": {"max_size": "100MiB", "keep": 10}`) {
		r := f.val
		a.Rotate = Rotate{} // a "rotate" block says every criterion it wants
		if g := r.get("max_size"); g != nil {
			a.Rotate.MaxSize = c.size(g, "/audit/rotate/max_size", "audit.rotate.max_size")
		}
		if g := r.get("max_age"); g != nil {
			a.Rotate.MaxAge = c.duration(g, "/audit/rotate/max_age")
		}
		if g := r.get("keep"); g != nil {
			k, _ := c.integer(g, "/audit/rotate/keep", "audit.rotate.keep", 0, maxInt)
			a.Rotate.Keep = int(k)
		}
	}
	if f := n.get("checkpoint_every"); f != nil {
		k, _ := c.integer(f, "/audit/checkpoint_every", "audit.checkpoint_every", 1, maxInt)
		a.CheckpointEvery = int(k)
	}
	if f := n.get("syslog"); f != nil {
		if raw, ok := c.str(f, "/audit"); ok && raw != "" {
			if err := checkSyslog(raw); err != nil {
				c.ps.add("/audit/syslog", f.val.off, fmt.Sprintf("audit.syslog %q: %v", raw, err),
					`use "local" (the system's /dev/log), "unix:///path/to/socket", "udp://host:514" or "tcp://host:601"`)
			} else {
				a.Syslog = raw
			}
		}
	}
	if f := n.get("syslog_format"); f != nil {
		if v := c.enum(f, "/audit/syslog_format", "audit.syslog_format", []string{SyslogJSON, SyslogOCSF, SyslogCEF},
			`use "json" (the default: each audit line as written), "ocsf" (OCSF 1.5.0 events) or "cef" (ArcSight CEF)`); v != "" {
			a.SyslogFormat = v
		}
	}
	return a
}

// checkSyslog accepts "local", unix:// with an absolute path, and udp:// or
// tcp:// with a host and port.
func checkSyslog(v string) error {
	if v == "local" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil {
		return err
	}
	switch u.Scheme {
	case "unix", "unixgram":
		if !strings.HasPrefix(u.Path, "/") || u.Host != "" {
			return fmt.Errorf("a unix socket needs an absolute path (unix:///dev/log)")
		}
	case "udp", "tcp":
		if u.Hostname() == "" || u.Port() == "" || u.Path != "" {
			return fmt.Errorf("needs a host and a port and nothing else")
		}
	default:
		return fmt.Errorf("unknown scheme %q", u.Scheme)
	}
	return nil
}

func (c *checker) secrets(m *member) Secrets {
	s := Secrets{Backend: BackendAuto}
	if m == nil || !c.object(m, "/secrets", `"secrets"`, secretsKeys, `"secrets": {"backend": "auto"}`) {
		return s
	}
	if f := m.val.get("backend"); f != nil {
		if v := c.enum(f, "/secrets/backend", "secrets.backend", []string{BackendAuto, BackendKeychain, BackendFile},
			`use "auto" (the default: the OS keychain, else the encrypted file), "keychain" or "file"`); v != "" {
			s.Backend = v
		}
	}
	if f := m.val.get("require_encryption"); f != nil {
		s.RequireEncryption = c.boolean(f, "/secrets/require_encryption", "secrets.require_encryption")
	}
	return s
}
