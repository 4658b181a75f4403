package auditlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/safepath"
)

// Events of moat's own commands (secret set, pins approve, auth login, …)
// go straight into the audit log, unless a serving moat holds it: then they
// wait as files in the log's pending directory, and the serving moat takes
// them into the chain within seconds (ingestEvery), marked source=cli.

// ingestEvery is how often a serving moat looks for pending events.
const ingestEvery = 2 * time.Second

// PendingDir is where events wait while a moat holds the log at logPath.
func PendingDir(logPath string) string { return filepath.Join(filepath.Dir(logPath), "pending") }

// RecordCommand records one event of a moat command.
func RecordCommand(ctx context.Context, opts audit.Options, keys func() (audit.Keys, error), r *audit.Record) error {
	k, err := keys()
	if err != nil {
		return fmt.Errorf("audit log keys: %w", err)
	}
	w, err := openLog(opts, k)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return spool(opts.Path, r)
	}
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

// spool leaves r in the pending directory (0700) as a 0600 file, written
// whole before it gets its .json name.
func spool(logPath string, r *audit.Record) error {
	dir := PendingDir(logPath)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := checkPrivate(dir, true); err != nil {
		return err
	}
	r.PID, r.User = os.Getpid(), userName()
	if r.Detail == nil {
		r.Detail = map[string]string{}
	}
	r.Detail["at"] = time.Now().UTC().Format(time.RFC3339Nano)
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, fmt.Sprintf("%020d-*.tmp", time.Now().UnixNano()))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), strings.TrimSuffix(f.Name(), ".tmp")+".json")
}

// checkPrivate refuses a file or directory that is not this user's alone.
func checkPrivate(path string, dir bool) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if dir && !fi.IsDir() || !dir && !fi.Mode().IsRegular() {
		return fmt.Errorf("audit: %s is not a plain %s", path, map[bool]string{true: "directory", false: "file"}[dir])
	}
	if err := safepath.CheckInfo(path, fi, safepath.Private); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
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

// ingest takes pending events into the log, oldest first, and removes them.
// A pending file that is not this user's alone, or not a record, is left in
// place and logged: it is not this moat's to trust.
func (l *Log) ingest(ctx context.Context) {
	dir := PendingDir(l.path)
	entries, err := os.ReadDir(dir)
	if err != nil || checkPrivate(dir, true) != nil {
		return
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, name := range names {
		path := filepath.Join(dir, name)
		if err := checkPrivate(path, false); err != nil {
			l.log.Warn("a pending audit event is not trusted; left in place", "file", path, "err", err)
			continue
		}
		data, err := os.ReadFile(path)
		var r audit.Record
		if err == nil {
			err = json.Unmarshal(data, &r)
		}
		if err != nil || r.Event == "" {
			l.log.Warn("a pending audit event cannot be read; left in place", "file", path, "err", err)
			continue
		}
		rec := &audit.Record{Event: r.Event, Group: r.Group, Tool: r.Tool, Reason: r.Reason, Outcome: r.Outcome, Detail: r.Detail}
		if rec.Detail == nil {
			rec.Detail = map[string]string{}
		}
		rec.Detail["source"] = "cli"
		rec.Detail["cli_pid"] = fmt.Sprint(r.PID)
		if err := l.Write(ctx, rec); err != nil {
			return
		}
		os.Remove(path)
	}
}

// ingestLoop ingests pending events until the log closes.
func (l *Log) ingestLoop() {
	t := time.NewTicker(ingestEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.ingest(context.Background())
		}
	}
}
