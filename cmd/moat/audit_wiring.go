package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/auditlog"
	"github.com/moatmcp/moat/internal/config"
)

// auditEventTimeout bounds writing one lifecycle event.
const auditEventTimeout = 10 * time.Second

// openAuditLog starts opening the audit log the config asks for; keys come
// from the secret store and are created on first use.
func openAuditLog(cfg *config.Config, log *slog.Logger, redact func(string) string, first ...*audit.Record) (*auditLogCloser, error) {
	a := cfg.Audit
	path := auditLogPathOf(cfg)
	if path == "" {
		return nil, fmt.Errorf("no audit.path in the config and no home directory for the default; set audit.path")
	}
	fsync, err := audit.ParseFsyncMode(a.Fsync)
	if err != nil {
		return nil, fmt.Errorf("config: audit.fsync: %w", err)
	}
	onFailure, err := audit.ParseFailureMode(a.OnFailure)
	if err != nil {
		return nil, fmt.Errorf("config: audit.on_failure: %w", err)
	}
	opts := audit.Options{
		Path:            path,
		Fsync:           fsync,
		OnFailure:       onFailure,
		RecordArgs:      a.RecordArgs,
		CheckpointEvery: a.CheckpointEvery,
		Rotate:          audit.RotateOptions{MaxSize: int64(a.Rotate.MaxSize), MaxAge: a.Rotate.MaxAge, Keep: a.Rotate.Keep},
		Redact:          redact,
		Anchor:          auditlog.SaveAnchor(processStore.get, path, log),
	}
	var sc *syslogCopy
	if a.Syslog != "" {
		sc = newSyslogCopy(a.Syslog, a.SyslogFormat, log)
		opts.Copy = sc.copy
	}
	keys := func() (audit.Keys, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*secretTimeout)
		defer cancel()
		store, err := processStore.get(ctx)
		if err != nil {
			return audit.Keys{}, fmt.Errorf("the secret store cannot be opened: %w", err)
		}
		return auditlog.Keys(ctx, store, true)
	}
	return &auditLogCloser{Log: auditlog.Open(opts, keys, log, first...), syslog: sc}, nil
}

// auditLogCloser is the audit log with its syslog copy, closed together.
type auditLogCloser struct {
	*auditlog.Log
	syslog *syslogCopy
	once   sync.Once
}

// Close seals the log, then sends what is left to syslog.
func (a *auditLogCloser) Close() error {
	var err error
	a.once.Do(func() {
		err = a.Log.Close()
		if a.syslog != nil {
			a.syslog.close()
		}
	})
	return err
}

// auditEvent records a lifecycle event; a failure is already logged by the
// audit log, and events never stop the proxy.
func auditEvent(l *auditlog.Log, event, group string, detail map[string]string) {
	ctx, cancel := context.WithTimeout(context.Background(), auditEventTimeout)
	defer cancel()
	_ = l.Write(ctx, &audit.Record{Event: event, Group: group, Detail: detail})
}

// auditLogPathOf is the config's audit.path, else the default; "" when
// neither can be known.
func auditLogPathOf(cfg *config.Config) string {
	if cfg.Audit.Path != "" {
		return cfg.Audit.Path
	}
	p, _ := auditlog.DefaultPath()
	return p
}

// commandEvent records an event of a moat command (secret set, pins
// approve, auth login…) in the audit log of the config in MOAT_CONFIG (or
// DYNAMIC_MCP_CONFIG), else the default log. A running moat holding the log
// takes it in within seconds. A failure is a warning: the command's own
// work is done.
func commandEvent(ctx context.Context, stderr io.Writer, event, group string, detail map[string]string) {
	path, err := configuredAuditPath()
	if err != nil {
		return
	}
	keys := func() (audit.Keys, error) {
		store, err := processStore.get(ctx)
		if err != nil {
			return audit.Keys{}, err
		}
		return auditlog.Keys(ctx, store, true)
	}
	r := &audit.Record{Event: event, Group: group, Detail: detail}
	opts := audit.Options{Path: path, Anchor: auditlog.SaveAnchor(processStore.get, path, nil)}
	if err := auditlog.RecordCommand(ctx, opts, keys, r); err != nil {
		fmt.Fprintf(stderr, "moat: warning: the audit log did not record this %s: %v\n", event, err)
	}
}

// configuredAuditPath is the audit log of a one-shot command: the
// audit.path of the config named by MOAT_CONFIG (or DYNAMIC_MCP_CONFIG),
// else the default, where serve writes when the config sets none.
func configuredAuditPath() (string, error) {
	if cfgPath, _, err := config.ResolvePath("", os.LookupEnv); err == nil {
		if p := peekAuditPath(cfgPath); p != "" {
			return p, nil
		}
	}
	return auditlog.DefaultPath()
}

// peekAuditPath reads audit.path from a config without loading it ("~/"
// expanded); "" when it is not set or the file cannot be read.
func peekAuditPath(cfgPath string) string {
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return ""
	}
	var c struct {
		Audit struct{ Path string } `json:"audit"`
	}
	if json.Unmarshal(data, &c) != nil || c.Audit.Path == "" {
		return ""
	}
	p := os.ExpandEnv(c.Audit.Path)
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			p = filepath.Join(home, rest)
		}
	}
	return p
}
