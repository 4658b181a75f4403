//go:build unix

package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FsyncMode says when a record counts as durable.
type FsyncMode int

const (
	// FsyncBatch (the default) is group commit: records that arrive while a
	// write+fdatasync is in progress are written together with one write and
	// one fdatasync. No timer is added, so a record waits at most for the
	// sync in progress and its own (well under 10 ms on any working disk).
	FsyncBatch FsyncMode = iota
	// FsyncAlways gives every record its own write and fdatasync.
	FsyncAlways
	// FsyncOff only writes: records survive a crash of Moat (they are in the
	// page cache) but not of the machine.
	FsyncOff
)

// FailureMode is what the caller should do with a call whose record could not
// be written. The Writer records it in the audit_failure record.
type FailureMode int

const (
	// FailDeny (the default): refuse the call (fail closed).
	FailDeny FailureMode = iota
	// FailContinue: go on without a record; the loss is counted and recorded
	// as an audit_failure record once the log can be written again.
	FailContinue
)

// ParseFsyncMode parses the config values "always", "batch" (or "") and "off".
func ParseFsyncMode(s string) (FsyncMode, error) {
	switch s {
	case "", "batch":
		return FsyncBatch, nil
	case "always":
		return FsyncAlways, nil
	case "off":
		return FsyncOff, nil
	}
	return 0, fmt.Errorf("audit: fsync %q is not one of always, batch, off", s)
}

// ParseFailureMode parses the config values "deny" (or "") and "continue".
func ParseFailureMode(s string) (FailureMode, error) {
	switch s {
	case "", "deny":
		return FailDeny, nil
	case "continue":
		return FailContinue, nil
	}
	return 0, fmt.Errorf("audit: on_failure %q is not one of deny, continue", s)
}

func (m FailureMode) String() string {
	if m == FailContinue {
		return "continue"
	}
	return "deny"
}

// RotateOptions control rotation. Zero values disable the corresponding limit;
// Keep 0 keeps every rotated file (audit logs are never deleted by default).
type RotateOptions struct {
	MaxSize int64         // rotate before a write once the file has this many bytes
	MaxAge  time.Duration // rotate before a write once the file's first record is this old
	Keep    int           // rotated files to keep; older ones are removed
}

// DefaultCheckpointEvery is the number of records between checkpoints when
// Options.CheckpointEvery is zero.
const DefaultCheckpointEvery = 1000

// Options configure a [Writer].
type Options struct {
	Path            string // the log file; its directory is created 0700
	Fsync           FsyncMode
	OnFailure       FailureMode
	RecordArgs      bool // keep Record.Args (redacted); otherwise they are dropped
	Rotate          RotateOptions
	CheckpointEvery int                 // records between signed checkpoints; 0 means DefaultCheckpointEvery
	Redact          func(string) string // applied to every string of every record (keys of maps too)
	Clock           func() time.Time    // for tests; nil means time.Now
	// Copy, when set, receives each batch of lines once it is durable in
	// the file (for shipping to syslog or a SIEM). It runs on the writer's
	// own goroutine, so it must not block; it must copy lines (the buffer
	// is reused). The file stays the source of truth: what Copy does with
	// the lines never affects Write's result.
	Copy func(lines []byte)
	// Anchor, when set, learns the seq and hash of each checkpoint once it
	// is durable (fsynced), to keep outside the log (Moat keeps it in the
	// secret store): a log later replaced by an older copy, or cut back to
	// an earlier checkpoint, ends before the anchor, which Verify alone
	// cannot see. It runs on the writer's goroutine with the log's lock
	// held, so anchors arrive in seq order across processes.
	Anchor func(seq uint64, hash string)
}

// Keys are the secrets of a log: the HMAC key (at least 32 bytes) that
// chains records, and the Ed25519 key that signs checkpoints. Keep both out
// of the log's directory.
type Keys struct {
	MAC    []byte
	Signer ed25519.PrivateKey
}

// ErrUnavailable is wrapped by Write's error when the record could not be
// made durable (disk full, file too large, permission lost, I/O error).
var ErrUnavailable = errors.New("audit: log unavailable")

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("audit: writer is closed")

// A Writer appends records to a log. It is safe for concurrent use; one
// goroutine owns the file and commits queued records in groups. Several
// Writers, in one process or in several, may share a log: they take turns
// through a lock file, and each takes in what the others appended before it
// appends, so the log stays one chain.
type Writer struct {
	opts   Options
	macKey []byte
	signer ed25519.PrivateKey
	every  uint64
	pid    int
	user   string
	lock   *os.File // "<path>.lock", held while this writer reads and appends

	mu     sync.RWMutex // guards closed against sends on reqs
	closed bool
	reqs   chan *request
	done   chan struct{}
	err    error // Close's result, set by the committer before done

	// Owned by the committer goroutine (and by Open before it starts).
	f              *os.File
	size           int64
	fileStart      time.Time
	mac            hash.Hash
	st             chainState
	lastCheckpoint bool
	// sealedSeq and sealedHash are this writer's last checkpoint written;
	// anchoredSeq the last one given to Options.Anchor.
	sealedSeq        uint64
	sealedHash       string
	anchoredSeq      uint64
	pendingContinued string  // name of the previous file; "" none
	pendingRecovered *Record // set by Open after cutting a torn tail
	lost             int
	broken           error // the log holds another chain; only a new Open recovers
	// rotateFailing: a rotation failed and none has succeeded since (its
	// failure is recorded once); rotateRetry is when to try again.
	rotateFailing       bool
	rotateRetry         time.Time
	pendingRotateFailed *Record
	lostSince           string
	lostErr             string
	buf                 []byte
	// dirty: records written by WriteBehind are in the file but not yet
	// synced, from seq behindFrom on; the committer syncs them within
	// BehindDelay.
	dirty      bool
	behindFrom uint64
	// pendingNotDurable records a failed sync of records written behind.
	pendingNotDurable *Record
}

type chainState struct {
	seq   uint64
	prev  []byte
	count uint64
	seg   hash.Hash
}

type request struct {
	rec    *Record
	behind bool // WriteBehind: answer once written, sync later
	done   chan result
}

type result struct {
	seq       uint64
	time, mac string
	err       error
}

// Open opens (or creates) the log at o.Path and starts its committer. An
// existing log is resumed: its records after the last checkpoint must verify
// with k, and a torn last line (from a crash) is moved to
// "<path>.torn-<time>" and recorded. Open refuses a file or directory that
// another user owns or can write, and a file that others can read. Other
// writers of the same log may be running.
func Open(o Options, k Keys) (*Writer, error) {
	if o.Path == "" {
		return nil, errors.New("audit: no log path configured (audit.path)")
	}
	if len(k.MAC) < minMACKey {
		return nil, fmt.Errorf("audit: MAC key is %d bytes, need at least %d", len(k.MAC), minMACKey)
	}
	if len(k.Signer) != ed25519.PrivateKeySize {
		return nil, errors.New("audit: checkpoint signing key is not an Ed25519 private key")
	}
	if o.CheckpointEvery < 0 {
		return nil, fmt.Errorf("audit: checkpoint interval must be positive, got %d", o.CheckpointEvery)
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = DefaultCheckpointEvery
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	o.Path = filepath.Clean(o.Path)
	w := &Writer{
		opts:   o,
		macKey: bytes.Clone(k.MAC),
		signer: k.Signer,
		every:  uint64(o.CheckpointEvery),
		pid:    os.Getpid(),
		user:   currentUser(),
		reqs:   make(chan *request, 4096),
		done:   make(chan struct{}),
		mac:    hmac.New(sha256.New, k.MAC),
		st:     chainState{seg: sha256.New()},
	}
	if err := secureDir(filepath.Dir(o.Path)); err != nil {
		return nil, err
	}
	lf, err := openLock(o.Path + ".lock")
	if err != nil {
		return nil, err
	}
	w.lock = lf
	if err := lock(lf); err != nil {
		lf.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	err = w.openFile()
	unlock(lf)
	if err != nil {
		lf.Close()
		return nil, err
	}
	go w.run()
	return w, nil
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return strconv.Itoa(os.Getuid())
}

// openFile opens o.Path, checks it, and resumes the chain from it (or, if it
// is empty, from the newest rotated file). The lock is held. Only the end
// of a file is read, from its last checkpoint on (see readTail), so opening
// costs the same whatever the log's length.
func (w *Writer) openFile() error {
	f, created, err := openLog(w.opts.Path)
	if err != nil {
		return err
	}
	data, off, err := readTail(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: reading %s: %w", w.opts.Path, err)
	}
	if i := bytes.LastIndexByte(data, '\n'); i+1 < len(data) {
		if err = w.cutTornTail(f, data[i+1:], off+int64(i+1)); err != nil {
			f.Close()
			return err
		}
		data = data[:i+1]
	}
	w.f, w.size, w.fileStart = f, off+int64(len(data)), w.opts.Clock()
	w.pendingContinued = ""
	if created {
		syncDir(filepath.Dir(w.opts.Path))
	}
	if len(data) > 0 {
		return w.resume(w.opts.Path, f, data, off, true)
	}
	rotated, err := RotatedFiles(w.opts.Path)
	if err != nil || len(rotated) == 0 {
		return err
	}
	last := rotated[len(rotated)-1]
	pf, err := os.Open(last)
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: reading %s to continue its chain: %w", last, err)
	}
	defer pf.Close()
	prevData, prevOff, err := readTail(pf)
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: reading %s to continue its chain: %w", last, err)
	}
	w.pendingContinued = filepath.Base(last)
	return w.resume(last, pf, prevData, prevOff, false)
}

// resume verifies data (the end of f from offset off, see readTail) from
// its last checkpoint on and takes over the chain state. current says
// whether f is the file being appended to.
func (w *Writer) resume(path string, f *os.File, data []byte, off int64, current bool) error {
	v, _ := newVerifier(w.macKey, w.signer.Public().(ed25519.PublicKey))
	v.trustFirst = true
	start, _ := lastCheckpointStart(data)
	tail := data[start:]
	if !v.feed(path, tail) {
		p := v.rep.Problem
		p.Line += bytes.Count(data[:start], []byte("\n")) + linesBefore(f, off)
		w.f.Close()
		w.f = nil
		return fmt.Errorf("audit: the existing log does not verify with the configured keys (%v); keep it as evidence, move it aside (mv %s %s.bad) and check it with `moat audit verify %s.bad`",
			p, path, path, path)
	}
	w.st = chainState{seq: v.seq, prev: v.prev, count: v.segCount, seg: v.seg}
	w.lastCheckpoint = v.lastEvent == EventCheckpoint
	if current {
		first := data
		if off > 0 {
			first = firstLine(f)
		}
		if t, err := time.Parse(time.RFC3339Nano, firstTime(first)); err == nil {
			w.fileStart = t
		}
	}
	return nil
}

// tailWindow is how much of a log's end readTail reads first. Checkpoints
// come every DefaultCheckpointEvery records, so the window usually holds
// one; it doubles until it does, or reaches the start of the file.
const tailWindow = 256 << 10

// readTail returns the end of f from a line start at or before its last
// checkpoint line, or all of f when it has no checkpoint, and the offset
// that end starts at. A torn last line (no newline yet) is included, and
// never taken for a checkpoint.
func readTail(f *os.File) (data []byte, off int64, err error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	size := fi.Size()
	for win := int64(tailWindow); ; win *= 2 {
		off = max(0, size-win)
		data = make([]byte, size-off)
		if _, err := f.ReadAt(data, off); err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, err
		}
		if off > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				continue // one line longer than the window
			}
			data, off = data[i+1:], off+int64(i+1)
		}
		complete := data[:bytes.LastIndexByte(data, '\n')+1]
		if _, found := lastCheckpointStart(complete); found || off == 0 {
			return data, off, nil
		}
	}
}

// linesBefore counts the lines of f before offset off, for an error that
// names a line number; only failures pay for it.
func linesBefore(f *os.File, off int64) int {
	n := 0
	buf := make([]byte, 64<<10)
	for pos := int64(0); pos < off; {
		m, err := f.ReadAt(buf[:min(int64(len(buf)), off-pos)], pos)
		n += bytes.Count(buf[:m], []byte("\n"))
		pos += int64(m)
		if err != nil {
			break
		}
	}
	return n
}

// firstLine returns the first line of f (at most 64 KiB of it): the first
// record's time dates the file, for rotation by age.
func firstLine(f *os.File) []byte {
	buf := make([]byte, 64<<10)
	n, _ := f.ReadAt(buf, 0)
	line, _, _ := bytes.Cut(buf[:n], []byte("\n"))
	return line
}

// lastCheckpointStart returns the offset of the last checkpoint line in data
// and true, or 0 and false when data has none. Field order puts "event"
// right after v, seq and time, none of which can contain `,"event":"`, so
// the first occurrence on a line is the event.
func lastCheckpointStart(data []byte) (int, bool) {
	end := len(data)
	for end > 0 {
		start := bytes.LastIndexByte(data[:end-1], '\n') + 1
		line := data[start:end]
		if i := bytes.Index(line, []byte(`,"event":"`)); i >= 0 && bytes.HasPrefix(line[i+10:], []byte(EventCheckpoint+`"`)) {
			return start, true
		}
		end = start
	}
	return 0, false
}

func firstTime(data []byte) string {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	_, after, ok := bytes.Cut(line, []byte(`"time":"`))
	if !ok {
		return ""
	}
	t, _, _ := bytes.Cut(after, []byte(`"`))
	return string(t)
}

// cutTornTail saves torn, the incomplete last line of f (left by a writer
// that died mid-write: with the lock held, no other is writing), to
// "<path>.torn-<time>" and truncates f to keep bytes, its last complete line.
func (w *Writer) cutTornTail(f *os.File, torn []byte, keep int64) error {
	name := w.opts.Path + ".torn-" + w.opts.Clock().UTC().Format(stampLayout)
	if err := writeFileSync(name, torn); err != nil {
		return fmt.Errorf("audit: saving the torn last line of %s: %w", w.opts.Path, err)
	}
	if err := f.Truncate(keep); err != nil {
		return fmt.Errorf("audit: cutting the torn last line of %s (saved in %s): %w", w.opts.Path, name, err)
	}
	if err := fdatasync(f); err != nil {
		return fmt.Errorf("audit: %s: %w", w.opts.Path, err)
	}
	w.pendingRecovered = &Record{Event: EventRecovered, Reason: "incomplete last line after a crash was moved aside",
		Detail: map[string]string{"torn_bytes": strconv.Itoa(len(torn)), "torn_file": filepath.Base(name)}}
	return nil
}

// catchUp brings this writer's chain state up to the log as other writers
// left it: it takes in the records they appended since this writer's last
// turn, or continues in the file they rotated to. The lock is held.
func (w *Writer) catchUp() error {
	if w.f != nil {
		mine, err := w.f.Stat()
		if err != nil {
			return err
		}
		onDisk, err := os.Lstat(w.opts.Path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err == nil && os.SameFile(mine, onDisk) {
			if mine.Size() == w.size {
				return nil
			}
			return w.follow(mine.Size())
		}
		// Another writer rotated the file (or it was moved aside).
		w.f.Close()
		w.f = nil
	}
	return w.openFile()
}

// follow verifies and takes in bytes w.size..size of the file, which other
// writers appended; their records must verify with this writer's keys and
// continue its chain.
func (w *Writer) follow(size int64) error {
	data := make([]byte, size-w.size)
	if _, err := w.f.ReadAt(data, w.size); err != nil {
		return fmt.Errorf("reading what other writers appended to %s: %w", w.opts.Path, err)
	}
	if i := bytes.LastIndexByte(data, '\n'); i+1 < len(data) {
		if err := w.cutTornTail(w.f, data[i+1:], w.size+int64(i+1)); err != nil {
			return err
		}
		data = data[:i+1]
	}
	v, _ := newVerifier(w.macKey, w.signer.Public().(ed25519.PublicKey))
	if w.st.seq > 0 {
		seg, err := w.st.seg.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			return fmt.Errorf("saving chain state: %w", err)
		}
		_ = v.seg.(encoding.BinaryUnmarshaler).UnmarshalBinary(seg)
		v.started, v.seq, v.prev, v.segCount = true, w.st.seq, w.st.prev, w.st.count
	}
	if !v.feed(w.opts.Path, data) {
		w.broken = fmt.Errorf("the records another process appended to %s do not continue this writer's chain (%v): is a moat with other audit keys writing the same audit.path? Keep the log as evidence, check it with `moat audit verify`, and restart moat",
			w.opts.Path, v.rep.Problem)
		return w.broken
	}
	w.st = chainState{seq: v.seq, prev: v.prev, count: v.segCount, seg: v.seg}
	w.lastCheckpoint = v.lastEvent == EventCheckpoint
	w.size += int64(len(data))
	return nil
}

// Write appends r and returns once it is durable as Options.Fsync says. On
// success r.Seq, r.Time and r.Hash are set. If the log cannot be written the
// error wraps [ErrUnavailable]. If ctx ends first, Write returns ctx's error;
// the record may still be written.
func (w *Writer) Write(ctx context.Context, r *Record) error {
	return w.write(ctx, r, false)
}

// BehindDelay bounds how long a record written by [Writer.WriteBehind] may
// stay in the file without being synced.
const BehindDelay = 100 * time.Millisecond

// WriteBehind is Write for a record whose durability can follow: it returns
// once r is in the file (so it survives the writing process being killed),
// and r becomes durable with the next durable write of any record, or
// within [BehindDelay]. A power cut or kernel crash in between can lose it.
// A write-ahead caller uses it for outcomes, whose intent is already
// durable ([EventIntent]): such a loss leaves an incomplete call, never a
// call without a record. With [FsyncAlways] it is Write.
func (w *Writer) WriteBehind(ctx context.Context, r *Record) error {
	return w.write(ctx, r, w.opts.Fsync == FsyncBatch)
}

func (w *Writer) write(ctx context.Context, r *Record, behind bool) error {
	switch r.Event {
	case "":
		return errors.New("audit: record has no event")
	case EventCheckpoint, EventContinued:
		return fmt.Errorf("audit: event %q is written by the audit writer only", r.Event)
	}
	c, err := sanitize(r, w.opts.Redact, w.opts.RecordArgs)
	if err != nil {
		return fmt.Errorf("audit: record args are not valid JSON: %w", err)
	}
	w.fillProcess(c)
	if c.mid, err = marshalMiddle(c); err != nil {
		return err
	}
	req := &request{rec: c, behind: behind, done: make(chan result, 1)}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return ErrClosed
	}
	select {
	case w.reqs <- req:
		w.mu.RUnlock()
	case <-ctx.Done():
		w.mu.RUnlock()
		return ctx.Err()
	}
	select {
	case res := <-req.done:
		if res.err == nil {
			r.Seq, r.Time, r.Hash = res.seq, res.time, res.mac
		}
		return res.err
	case <-ctx.Done():
		return fmt.Errorf("audit: gave up waiting for the record to be durable: %w", ctx.Err())
	}
}

// Close seals the log with a final checkpoint and closes it. It waits for
// queued records to be written first.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return w.err
	}
	w.closed = true
	close(w.reqs)
	w.mu.Unlock()
	<-w.done
	return w.err
}

const maxBatch = 1024

// run is the committer: it owns the file until Close.
func (w *Writer) run() {
	defer close(w.done)
	batch := make([]*request, 0, maxBatch)
	for {
		req, ok := w.next()
		if !ok {
			w.err = w.shutdown()
			return
		}
		batch = append(batch[:0], req)
		if w.opts.Fsync == FsyncBatch {
			// Writers just released by the previous sync are usually
			// runnable but not yet queued; letting them run first turns
			// alternating batches of 1 and n-1 into batches of n.
			runtime.Gosched()
		}
	drain:
		for w.opts.Fsync != FsyncAlways && len(batch) < maxBatch {
			select {
			case req, ok := <-w.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, req)
			default:
				break drain
			}
		}
		w.commit(batch)
	}
}

// next waits for the next request; while records written behind are not
// synced, it syncs them after BehindDelay without one.
func (w *Writer) next() (*request, bool) {
	if !w.dirty || w.f == nil {
		req, ok := <-w.reqs
		return req, ok
	}
	t := time.NewTimer(BehindDelay)
	defer t.Stop()
	select {
	case req, ok := <-w.reqs:
		return req, ok
	case <-t.C:
		w.syncBehind()
		return w.next()
	}
}

// syncBehind makes the records written behind durable.
func (w *Writer) syncBehind() {
	if err := fdatasync(w.f); err != nil {
		w.notDurable(err)
		return
	}
	w.synced()
}

// notDurable gives up on the records written behind since the last sync,
// whose sync failed with err. They were reported written, so the failure
// cannot go back to their callers; and a later sync could not vouch for
// them either (the kernel reports a writeback error once, and may have
// dropped the pages). So the next record written says which records may
// not be on disk, and the file is closed: the next batch reopens it as Open
// does, and a log that lost those records fails to resume (and `moat audit
// verify`) instead of growing past the hole.
func (w *Writer) notDurable(err error) {
	w.pendingNotDurable = &Record{Event: EventAuditFailure, Outcome: OutcomeError,
		Reason: "records written before a failed sync may not be on disk: " + err.Error(),
		Detail: map[string]string{"not_durable": fmt.Sprintf("%d-%d", w.behindFrom, w.st.seq), "on_failure": w.opts.OnFailure.String()}}
	w.dirty = false
	w.f.Close()
	w.f = nil
}

// synced notes that everything written is durable.
func (w *Writer) synced() {
	w.dirty = false
	// Only a checkpoint on disk may be anchored: an anchor ahead of the
	// log after a crash would read as a rollback.
	if w.opts.Anchor != nil && w.sealedSeq > w.anchoredSeq {
		w.opts.Anchor(w.sealedSeq, w.sealedHash)
		w.anchoredSeq = w.sealedSeq
	}
}

func (w *Writer) commit(batch []*request) {
	recs := make([]*Record, len(batch))
	durable := false // one record waits for its sync: the batch is synced
	for i, req := range batch {
		recs[i] = req.rec
		durable = durable || !req.behind
	}
	err := lock(w.lock)
	if err == nil {
		err = w.prepare()
		if err == nil {
			err = w.writeBatch(recs, false, durable)
		}
		unlock(w.lock)
	}
	if err != nil {
		w.noteLoss(len(recs), err)
		err = fmt.Errorf("%w: %v; the call was not recorded (%s)", ErrUnavailable, err, w.fix(err))
	}
	for i, req := range batch {
		if err != nil {
			req.done <- result{err: err}
			continue
		}
		req.done <- result{seq: recs[i].Seq, time: recs[i].Time, mac: recs[i].Hash}
	}
}

// fix says what to do about err, a failure to write the log.
func (w *Writer) fix(err error) string {
	dir := filepath.Dir(w.opts.Path)
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return "free space on the filesystem of " + dir
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		return "make " + w.opts.Path + " and " + dir + " writable for this user"
	case errors.Is(err, syscall.EIO):
		return "the disk holding " + dir + " fails: check the kernel log (dmesg); calls are recorded again once it works"
	}
	return "check " + w.opts.Path
}

// prepare, with the lock held, catches up with the other writers (reopening
// a file lost in a failed rotation) and rotates when due.
func (w *Writer) prepare() error {
	if w.broken != nil {
		return w.broken
	}
	if err := w.catchUp(); err != nil {
		return err
	}
	ro, now := w.opts.Rotate, w.opts.Clock()
	if w.size > 0 && ((ro.MaxSize > 0 && w.size >= ro.MaxSize) || (ro.MaxAge > 0 && now.Sub(w.fileStart) >= ro.MaxAge)) && !now.Before(w.rotateRetry) {
		return w.rotate()
	}
	return nil
}

// RotateRetry is how long a writer whose rotation failed goes on in the
// current file before it tries again.
const RotateRetry = 5 * time.Second

func (w *Writer) noteLoss(n int, err error) {
	if w.lost == 0 {
		w.lostSince = w.opts.Clock().UTC().Format(time.RFC3339Nano)
		w.lostErr = err.Error()
	}
	w.lost += n
}

// writeBatch appends the writer's own pending records, recs, the checkpoints
// due, and a final checkpoint if seal, in one write and, if seal or durable
// (and fsync is not off), one sync. On failure the file is cut back and the
// chain state restored, so nothing partial stays on disk.
func (w *Writer) writeBatch(recs []*Record, seal, durable bool) error {
	snap, err := w.snapshot()
	if err != nil {
		return err
	}
	buf := w.buf[:0]
	var sys []*Record
	if w.pendingContinued != "" {
		sys = append(sys, &Record{Event: EventContinued, Detail: map[string]string{"previous_file": w.pendingContinued}})
	}
	if w.pendingRecovered != nil {
		sys = append(sys, w.pendingRecovered)
	}
	if w.pendingRotateFailed != nil {
		sys = append(sys, w.pendingRotateFailed)
	}
	if w.pendingNotDurable != nil {
		sys = append(sys, w.pendingNotDurable)
	}
	if w.lost > 0 {
		sys = append(sys, &Record{Event: EventAuditFailure, Outcome: OutcomeError,
			Reason: "records could not be written: " + w.lostErr,
			Detail: map[string]string{"lost": strconv.Itoa(w.lost), "since": w.lostSince, "on_failure": w.opts.OnFailure.String()}})
	}
	for _, r := range append(sys, recs...) {
		if buf, err = w.appendRecord(buf, r); err != nil {
			w.restore(snap)
			return err
		}
		if w.st.count >= w.every {
			if buf, err = w.appendCheckpoint(buf); err != nil {
				w.restore(snap)
				return err
			}
		}
	}
	if seal && !w.lastCheckpoint {
		if buf, err = w.appendCheckpoint(buf); err != nil {
			w.restore(snap)
			return err
		}
	}
	w.buf = buf
	if len(buf) == 0 {
		return nil
	}
	_, err = w.f.Write(buf)
	synced, syncErr := false, false
	if err == nil && (seal || durable && w.opts.Fsync != FsyncOff) {
		err = fdatasync(w.f)
		synced, syncErr = err == nil, err != nil
	}
	if err != nil {
		w.restore(snap)
		terr := w.f.Truncate(w.size)
		switch {
		case w.dirty && (syncErr || terr != nil):
			w.notDurable(err)
		case terr != nil:
			// The file may now end in a partial line. The next batch
			// reopens it as Open does after a crash: the partial line
			// is moved aside and recorded, the chain resumes from what
			// verifies.
			w.f.Close()
			w.f = nil
		}
		if terr != nil {
			return fmt.Errorf("%w, and cutting back the partial write failed: %v", err, terr)
		}
		return err
	}
	w.size += int64(len(buf))
	w.pendingContinued, w.pendingRecovered, w.pendingRotateFailed, w.pendingNotDurable, w.lost = "", nil, nil, nil, 0
	if w.opts.Copy != nil {
		w.opts.Copy(buf)
	}
	switch {
	case synced:
		w.synced()
	case w.opts.Fsync != FsyncOff && !w.dirty:
		w.dirty, w.behindFrom = true, snap.seq+1
	}
	return nil
}

// appendRecord fills in the writer's fields, chains r and appends its line.
func (w *Writer) appendRecord(buf []byte, r *Record) ([]byte, error) {
	r.V = Version
	r.Seq = w.st.seq + 1
	r.Time = w.opts.Clock().UTC().Format(time.RFC3339Nano)
	r.Prev = ""
	if w.st.seq > 0 {
		r.Prev = hex.EncodeToString(w.st.prev)
	}
	w.fillProcess(r)
	mid := r.mid
	if mid == nil {
		var err error
		if mid, err = marshalMiddle(r); err != nil {
			return buf, err
		}
	}
	body := make([]byte, 0, len(mid)+len(r.Time)+160)
	body = append(body, `{"v":`...)
	body = strconv.AppendInt(body, int64(r.V), 10)
	body = append(body, `,"seq":`...)
	body = strconv.AppendUint(body, r.Seq, 10)
	body = append(body, `,"time":"`...)
	body = append(body, r.Time...)
	body = append(body, `",`...)
	body = append(body, mid...)
	if r.Prev != "" {
		body = append(body, `,"prev":"`...)
		body = append(body, r.Prev...)
		body = append(body, '"')
	}
	body = append(body, '}')
	if r.Event == EventCheckpoint {
		r.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(w.signer, append([]byte(sigContext), body...)))
		body = appendMember(body, "sig", r.Sig)
	}
	sum := chainMAC(w.mac, w.st.prev, body)
	r.Hash = hex.EncodeToString(sum)
	line := append(appendMember(body, "hash", r.Hash), '\n')
	buf = append(buf, line...)
	w.st.seq, w.st.prev = r.Seq, sum
	w.lastCheckpoint = r.Event == EventCheckpoint
	if w.lastCheckpoint {
		w.st.seg.Reset()
		w.st.count = 0
	} else {
		w.st.seg.Write(line)
		w.st.count++
	}
	return buf, nil
}

// fillProcess sets the fields that describe the writing process, and clears
// those only the writer may set (see Record).
func (w *Writer) fillProcess(r *Record) {
	if r.PID == 0 {
		r.PID = w.pid
	}
	if r.User == "" {
		r.User = w.user
	}
	r.Sig, r.Hash = "", ""
	if r.Event != EventCheckpoint {
		r.Count, r.Digest = 0, ""
	}
}

// marshalMiddle encodes r's members from "event" up to (not including)
// "prev": everything the chain position does not change. Write does this in
// the caller's goroutine so that the committer only splices and hashes.
func marshalMiddle(r *Record) ([]byte, error) {
	c := *r
	c.V, c.Seq, c.Time, c.Prev, c.Sig, c.Hash, c.mid = 0, 0, "", "", "", "", nil
	b, err := marshalCanonical(&c)
	if err != nil {
		return nil, fmt.Errorf("encoding record: %w", err)
	}
	const head = `{"v":0,"seq":0,"time":"",`
	if !bytes.HasPrefix(b, []byte(head)) {
		return nil, fmt.Errorf("encoding record: unexpected start %.30q", b)
	}
	return b[len(head) : len(b)-1], nil
}

// appendCheckpoint seals the records since the previous checkpoint.
func (w *Writer) appendCheckpoint(buf []byte) ([]byte, error) {
	r := &Record{Event: EventCheckpoint, Count: w.st.count, Digest: hex.EncodeToString(w.st.seg.Sum(nil))}
	buf, err := w.appendRecord(buf, r)
	if err == nil {
		w.sealedSeq, w.sealedHash = r.Seq, r.Hash
	}
	return buf, err
}

type snapshot struct {
	seq, count     uint64
	prev           []byte
	seg            []byte
	lastCheckpoint bool
	sealedSeq      uint64
	sealedHash     string
}

func (w *Writer) snapshot() (snapshot, error) {
	seg, err := w.st.seg.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return snapshot{}, fmt.Errorf("saving chain state: %w", err)
	}
	return snapshot{seq: w.st.seq, count: w.st.count, prev: w.st.prev, seg: seg, lastCheckpoint: w.lastCheckpoint,
		sealedSeq: w.sealedSeq, sealedHash: w.sealedHash}, nil
}

func (w *Writer) restore(s snapshot) {
	w.st.seq, w.st.count, w.st.prev, w.lastCheckpoint = s.seq, s.count, s.prev, s.lastCheckpoint
	w.sealedSeq, w.sealedHash = s.sealedSeq, s.sealedHash
	// The state came from MarshalBinary of the same hash type, so this cannot fail.
	_ = w.st.seg.(encoding.BinaryUnmarshaler).UnmarshalBinary(s.seg)
}

// stampLayout names rotated and torn files; it sorts by time as text.
const stampLayout = "20060102T150405.000000000Z"

// rotate seals the current file, renames it to "<path>.<time>", removes
// rotated files beyond Keep, and opens a fresh file whose first record links
// to the seal.
func (w *Writer) rotate() error {
	if err := w.writeBatch(nil, true, true); err != nil {
		return err
	}
	name := w.opts.Path + "." + w.opts.Clock().UTC().Format(stampLayout)
	if err := renameNoReplace(w.opts.Path, name); err != nil {
		// The file is sealed and whole: records go on in it, which loses
		// nothing, rather than calls being refused for want of a rename.
		w.rotateRetry = w.opts.Clock().Add(RotateRetry)
		if !w.rotateFailing {
			w.pendingRotateFailed = &Record{Event: EventRotateFailed, Outcome: OutcomeError,
				Reason: fmt.Sprintf("rotating the log failed (%v): records go on in %s, and rotation is retried every %v; make %s writable for this user",
					err, filepath.Base(w.opts.Path), RotateRetry, filepath.Dir(w.opts.Path)),
				Detail: map[string]string{"size": strconv.FormatInt(w.size, 10)}}
		}
		w.rotateFailing = true
		return nil
	}
	w.rotateFailing, w.rotateRetry = false, time.Time{}
	w.f.Close()
	w.f = nil
	syncDir(filepath.Dir(w.opts.Path))
	if k := w.opts.Rotate.Keep; k > 0 {
		if old, err := RotatedFiles(w.opts.Path); err == nil && len(old) > k {
			for _, p := range old[:len(old)-k] {
				os.Remove(p)
			}
		}
	}
	// The lock is held, so the new file is this writer's to start.
	f, _, err := openLog(w.opts.Path)
	if err != nil {
		return err
	}
	if st, err := f.Stat(); err != nil || st.Size() != 0 {
		f.Close()
		return fmt.Errorf("a new log file %s appeared while rotating, written by something that does not take the lock %s.lock; move it aside", w.opts.Path, w.opts.Path)
	}
	w.f, w.size, w.fileStart = f, 0, w.opts.Clock()
	w.pendingContinued = filepath.Base(name)
	syncDir(filepath.Dir(w.opts.Path))
	return nil
}

// shutdown writes what it can of the pending records and the final
// checkpoint, then closes the file.
func (w *Writer) shutdown() error {
	defer w.lock.Close()
	err := lock(w.lock)
	if err == nil {
		err = w.prepare()
		if err != nil {
			err = fmt.Errorf("audit: closing %s: %w", w.opts.Path, err)
		} else if err = w.writeBatch(nil, true, true); err != nil {
			err = fmt.Errorf("audit: writing the final checkpoint to %s: %w", w.opts.Path, err)
		}
		unlock(w.lock)
	} else {
		err = fmt.Errorf("audit: closing %s: %w", w.opts.Path, err)
	}
	if w.f != nil {
		if cerr := w.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("audit: closing %s: %w", w.opts.Path, cerr)
		}
	}
	return err
}

// RotatedFiles lists the rotated files of the log at path, oldest first.
func RotatedFiles(path string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	prefix := filepath.Base(path) + "."
	var out []string
	for _, e := range ents {
		stamp, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || len(stamp) != len(stampLayout) {
			continue
		}
		if _, err := time.Parse(stampLayout, stamp); err == nil {
			out = append(out, filepath.Join(filepath.Dir(path), e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}

// LogFiles lists the whole log at path in chain order: rotated files, oldest
// first, then path itself if it exists.
func LogFiles(path string) ([]string, error) {
	out, err := RotatedFiles(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err == nil {
		out = append(out, path)
	}
	return out, nil
}
