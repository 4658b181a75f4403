package audit

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// sigContext prefixes every signed checkpoint so that a signature can never
// be replayed as a signature over anything else.
const sigContext = "moat-audit-checkpoint-v1\n"

// minMACKey is the shortest HMAC key accepted (the SHA-256 block output size).
const minMACKey = 32

var (
	// ErrTampered is wrapped by every [Problem] that proves the log was
	// changed: an edit, deletion, insertion, reordering or bad signature.
	ErrTampered = errors.New("audit: log was tampered with")
	// ErrUnsealed is wrapped by a [Problem] about the end of the log: records
	// after the last checkpoint, or a torn last line. Both are what a crash,
	// a still-running writer, or a cut would leave; they prove no tampering
	// of the sealed part.
	ErrUnsealed = errors.New("audit: end of log is not sealed by a checkpoint")
	// ErrWrongKey is wrapped by a [Problem] when nothing in the log verifies
	// with the keys given: most likely other keys (another secret store, a
	// wrong public key file); it proves nothing about the log either way.
	ErrWrongKey = errors.New("audit: the log does not verify with these keys at all")
)

// Kind says what broke at a [Problem].
type Kind string

// The kinds of problem Verify reports.
const (
	KindEdited       Kind = "edited"        // a record's bytes changed (or are not a valid record)
	KindDeleted      Kind = "deleted"       // records are missing (a gap in seq)
	KindInserted     Kind = "inserted"      // a record that does not belong here (forged or duplicated)
	KindReordered    Kind = "reordered"     // records are out of order
	KindBadSignature Kind = "bad-signature" // a checkpoint's Ed25519 signature does not verify
	KindWrongKey     Kind = "wrong-key"     // nothing in the log verifies with the keys given: other keys, or a wholly replaced log
	KindTornTail     Kind = "torn-tail"     // the last line is incomplete (crash mid-write, or cut mid-line)
	KindUnsealed     Kind = "unsealed"      // records after the last checkpoint (crash, live writer, or cut)
)

// A Problem is the first thing wrong with a log. It wraps [ErrTampered],
// [ErrUnsealed] or [ErrWrongKey] (see [errors.Is]).
type Problem struct {
	Kind Kind
	File string // "" for Verify on a reader
	Line int    // 1-based line number in File
	Seq  uint64 // the seq expected (or found) at Line, 0 if unknown
	Msg  string
}

func (p *Problem) Error() string {
	where := fmt.Sprintf("line %d", p.Line)
	if p.File != "" {
		where = p.File + ":" + fmt.Sprint(p.Line)
	}
	return fmt.Sprintf("audit: %s (seq %d): %s: %s", where, p.Seq, p.Kind, p.Msg)
}

// Is makes errors.Is(p, ErrTampered), errors.Is(p, ErrUnsealed) and
// errors.Is(p, ErrWrongKey) work.
func (p *Problem) Is(target error) bool {
	switch p.Kind {
	case KindTornTail, KindUnsealed:
		return target == ErrUnsealed
	case KindWrongKey:
		return target == ErrWrongKey
	}
	return target == ErrTampered
}

// A Report summarises a verification.
type Report struct {
	Files       []string
	Records     int    // lines that verified, checkpoints included
	Checkpoints int    // valid signed checkpoints
	FirstSeq    uint64 // seq of the first record (1 unless earlier files were rotated away)
	LastSeq     uint64
	SealedSeq   uint64 // seq of the last valid checkpoint; 0 if none
	SealedHash  string // hash of that checkpoint
	Unsealed    int    // records after the last checkpoint
	MACVerified bool   // every record's HMAC was checked (the MAC key was given)
	// Incomplete are the calls whose intent record no outcome names, in
	// seq order (see [EventIntent]).
	Incomplete []Incomplete
	Problem    *Problem

	sealed map[uint64]string // seq -> hash of every valid checkpoint
}

// An Incomplete call was recorded as about to leave for its upstream, and
// no outcome was recorded for it.
type Incomplete struct {
	Seq     uint64 // of its intent record
	Time    string
	Group   string
	Tool    string
	Session string
	PID     int // of the process that sent it
}

// CheckpointHash returns the hash of the valid checkpoint at seq, if the
// verified files hold one there (for comparing with an anchor kept outside
// the log: see Options.Anchor).
func (r *Report) CheckpointHash(seq uint64) (string, bool) {
	h, ok := r.sealed[seq]
	return h, ok
}

// Verify checks one log read from r. macKey may be nil: then only what the
// public key proves is checked (see the package documentation). It returns
// the report and, if the log is not intact and sealed, a *[Problem].
func Verify(r io.Reader, macKey []byte, pub ed25519.PublicKey) (*Report, error) {
	v, err := newVerifier(macKey, pub)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("audit: reading log: %w", err)
	}
	if !v.feed("", data) {
		return v.rep, v.rep.Problem
	}
	return v.finish()
}

// VerifyFiles checks a log split over rotated files, oldest first, as one
// chain: the first record of each file must link to the last of the one
// before. The first file may continue a chain whose older files were
// removed by retention (Report.FirstSeq says where it starts).
func VerifyFiles(paths []string, macKey []byte, pub ed25519.PublicKey) (*Report, error) {
	v, err := newVerifier(macKey, pub)
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, errors.New("audit: no log files given")
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		v.rep.Files = append(v.rep.Files, p)
		if !v.feed(p, data) {
			return v.rep, v.rep.Problem
		}
	}
	return v.finish()
}

// verifier walks lines and keeps the chain state between them. The Writer
// uses it too, to resume an existing file.
type verifier struct {
	mac hash.Hash // nil: public-key verification only
	pub ed25519.PublicKey
	rep *Report

	trustFirst bool // Open: the first line fed starts the chain wherever it is
	started    bool
	seq        uint64
	prev       []byte // raw hash of the last record
	seg        hash.Hash
	segCount   uint64
	segFile    string
	segLine    int    // first line of the current segment
	lastTime   string // time of the first record of the last file fed (rotation by age)
	lastEvent  string
	intents    map[uint64]Incomplete // intents no outcome has named yet
}

func newVerifier(macKey []byte, pub ed25519.PublicKey) (*verifier, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("audit: an Ed25519 public key is required (see `moat audit pubkey`)")
	}
	v := &verifier{pub: pub, seg: sha256.New(), rep: &Report{}}
	if macKey != nil {
		if len(macKey) < minMACKey {
			return nil, fmt.Errorf("audit: MAC key is %d bytes, need at least %d", len(macKey), minMACKey)
		}
		v.mac = hmac.New(sha256.New, macKey)
		v.rep.MACVerified = true
	}
	return v, nil
}

// parsed is one line that is well formed (and, with the MAC key, authentic).
type parsed struct {
	rec  Record
	body []byte // canonical bytes hashed by the HMAC (line without "hash")
	hash []byte
}

// parseLine checks that line (without its newline) is a canonical record and,
// with the MAC key, that its hash is the HMAC of its own prev and bytes.
func (v *verifier) parseLine(line []byte) (*parsed, string) {
	body, hashHex, ok := splitMember(line, "hash")
	if !ok {
		return nil, "not a record line (no trailing \"hash\" member)"
	}
	h, err := hex.DecodeString(hashHex)
	if err != nil || len(h) != sha256.Size || hex.EncodeToString(h) != hashHex {
		return nil, "hash is not 64 hex digits"
	}
	p := &parsed{body: body, hash: h}
	if err := json.Unmarshal(line, &p.rec); err != nil {
		return nil, "not valid JSON for a record: " + err.Error()
	}
	if p.rec.V != Version {
		return nil, fmt.Sprintf("schema version %d is not supported (want %d)", p.rec.V, Version)
	}
	c := p.rec
	c.Hash = ""
	canon, err := marshalCanonical(&c)
	if err != nil || !bytes.Equal(canon, body) {
		return nil, "bytes are not the canonical encoding of the record"
	}
	prev, err := hex.DecodeString(p.rec.Prev)
	if err != nil || (len(prev) != 0 && len(prev) != sha256.Size) || hex.EncodeToString(prev) != p.rec.Prev {
		return nil, "prev is not 64 hex digits"
	}
	if v.mac != nil && !hmac.Equal(chainMAC(v.mac, prev, body), h) {
		return nil, whyBadMAC
	}
	return p, ""
}

const whyBadMAC = "HMAC does not match the record's bytes"

// anyAuthentic reports whether any of lines proves the keys right: a record
// whose HMAC verifies (unless sigOnly), or a checkpoint whose signature
// verifies. When none does, the keys are wrong (or everything was
// replaced), which is other news than an edit.
func (v *verifier) anyAuthentic(lines [][]byte, sigOnly bool) bool {
	bare := &verifier{pub: v.pub}
	for _, raw := range lines {
		line := bytes.TrimSuffix(raw, []byte("\n"))
		if !sigOnly && v.mac != nil {
			if p, _ := v.parseLine(line); p != nil {
				return true
			}
		}
		p, _ := bare.parseLine(line)
		if p == nil || p.rec.Event != EventCheckpoint {
			continue
		}
		unsigned, sigB64, ok := splitMember(p.body, "sig")
		sig, err := base64.StdEncoding.Strict().DecodeString(sigB64)
		if ok && err == nil && ed25519.Verify(v.pub, append([]byte(sigContext), unsigned...), sig) {
			return true
		}
	}
	return false
}

// chainMAC is HMAC-SHA256(key, prev || body), prev being 32 zero bytes for
// the first record of a chain.
func chainMAC(mac hash.Hash, prev, body []byte) []byte {
	mac.Reset()
	if len(prev) == 0 {
		prev = make([]byte, sha256.Size)
	}
	mac.Write(prev)
	mac.Write(body)
	return mac.Sum(nil)
}

func (v *verifier) fail(kind Kind, file string, line int, seq uint64, format string, args ...any) bool {
	v.rep.Problem = &Problem{Kind: kind, File: file, Line: line, Seq: seq, Msg: fmt.Sprintf(format, args...)}
	return false
}

// feed verifies the lines of one file. It returns false at the first problem.
func (v *verifier) feed(file string, data []byte) bool {
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	v.lastTime = ""
	for i, raw := range lines {
		n := i + 1
		if !bytes.HasSuffix(raw, []byte("\n")) {
			return v.fail(KindTornTail, file, n, v.seq+1,
				"the last line is incomplete (%d bytes, no newline): a crash while writing, or the file was cut mid-line; records before it are intact", len(raw))
		}
		line := raw[:len(raw)-1]
		p, why := v.parseLine(line)
		want := v.seq + 1
		if p == nil && v.mac != nil && v.rep.Records == 0 && why == whyBadMAC && !v.anyAuthentic(lines, false) {
			return v.fail(KindWrongKey, file, n, want, "no record and no checkpoint verifies with these keys: the log was written with other keys (another secret store), or replaced as a whole")
		}
		if p == nil {
			if i+1 < len(lines) && v.fits(lines[i+1], want) {
				return v.fail(KindInserted, file, n, want, "this line does not belong to the chain (%s); the next line continues it", why)
			}
			return v.fail(KindEdited, file, n, want, "%s", why)
		}
		if !v.link(file, n, p, lines[i+1:]) {
			return false
		}
		if v.lastTime == "" {
			v.lastTime = p.rec.Time
		}
		if p.rec.Event == EventCheckpoint {
			if !v.checkpoint(file, n, p) {
				// Without the MAC key nothing else vouches for the keys.
				if v.rep.Problem.Kind == KindBadSignature && v.mac == nil && v.rep.Checkpoints == 0 && !v.anyAuthentic(lines[i+1:], true) {
					return v.fail(KindWrongKey, file, n, p.rec.Seq, "no checkpoint verifies with this public key: the log was signed with another key (a wrong public key file, another secret store), or every checkpoint was replaced")
				}
				return false
			}
		} else {
			if v.segCount == 0 {
				v.segFile, v.segLine = file, n
			}
			v.seg.Write(raw)
			v.segCount++
		}
		v.track(&p.rec)
		v.seq, v.prev, v.lastEvent = p.rec.Seq, p.hash, p.rec.Event
		v.rep.Records++
		v.rep.LastSeq = p.rec.Seq
	}
	return true
}

// fits reports whether raw is a good line that continues the chain at seq want.
func (v *verifier) fits(raw []byte, want uint64) bool {
	p, _ := v.parseLine(bytes.TrimSuffix(raw, []byte("\n")))
	switch {
	case p == nil:
		return false
	case !v.started:
		return p.rec.Seq == 1 && p.rec.Prev == "" || p.rec.Event == EventContinued
	}
	return p.rec.Seq == want && p.rec.Prev == hex.EncodeToString(v.prev)
}

// link checks that p follows the previous record, and classifies a break.
func (v *verifier) link(file string, n int, p *parsed, rest [][]byte) bool {
	r := &p.rec
	if !v.started {
		v.started = true
		v.rep.FirstSeq = r.Seq
		switch {
		case v.trustFirst, r.Seq == 1 && r.Prev == "", r.Event == EventContinued && r.Prev != "":
			return true
		}
		// Neither the start of a chain nor of a rotated file: seq 1 is missing or elsewhere.
		return v.gap(file, n, p, 1, rest)
	}
	want := v.seq + 1
	prevHex := hex.EncodeToString(v.prev)
	switch {
	case r.Seq == want && r.Prev == prevHex:
		return true
	case r.Seq > want:
		return v.gap(file, n, p, want, rest)
	case r.Seq < want:
		return v.fail(KindInserted, file, n, want, "seq %d appears again after seq %d (a duplicated or replayed record)", r.Seq, v.seq)
	case v.mac != nil:
		return v.fail(KindInserted, file, n, want, "an authentic record from another chain: its prev does not match the previous record's hash")
	default:
		return v.fail(KindEdited, file, n, want, "prev does not match the previous record's hash")
	}
}

// gap classifies a record whose seq is beyond the wanted one.
func (v *verifier) gap(file string, n int, p *parsed, want uint64, rest [][]byte) bool {
	r := &p.rec
	wantLater := false
	for _, later := range rest {
		switch seqOf(later) {
		case r.Seq:
			return v.fail(KindInserted, file, n, want, "a copy of record seq %d, which appears again later", r.Seq)
		case want:
			wantLater = true
		}
	}
	if wantLater {
		return v.fail(KindReordered, file, n, want, "found seq %d where seq %d belongs; seq %d comes later in the file", r.Seq, want, want)
	}
	if want == 1 {
		return v.fail(KindDeleted, file, n, want, "the log starts at seq %d, but its first record is neither seq 1 nor the start of a rotated file: earlier records were removed", r.Seq)
	}
	return v.fail(KindDeleted, file, n, want, "records seq %d..%d are missing", want, r.Seq-1)
}

func seqOf(raw []byte) uint64 {
	var s struct {
		Seq uint64 `json:"seq"`
	}
	if json.Unmarshal(bytes.TrimSuffix(raw, []byte("\n")), &s) != nil {
		return 0
	}
	return s.Seq
}

// checkpoint verifies a checkpoint's count, digest and signature.
func (v *verifier) checkpoint(file string, n int, p *parsed) bool {
	r := &p.rec
	unsigned, sigB64, ok := splitMember(p.body, "sig")
	// Strict: another base64 spelling of the same signature (different
	// padding bits) is a changed byte of a sealed line, so it must not verify.
	sig, err := base64.StdEncoding.Strict().DecodeString(sigB64)
	if !ok || err != nil || !ed25519.Verify(v.pub, append([]byte(sigContext), unsigned...), sig) {
		return v.fail(KindBadSignature, file, n, r.Seq, "the checkpoint's Ed25519 signature does not verify with this public key (wrong key, or the checkpoint was forged)")
	}
	digest := hex.EncodeToString(v.seg.Sum(nil))
	if v.trustFirst && v.rep.Records == 0 {
		// Resuming at this checkpoint: the records it seals were not fed.
		r.Count, r.Digest = v.segCount, digest
	}
	if r.Count != v.segCount || r.Digest != digest {
		from := v.seq - v.segCount + 1
		where := ""
		if v.segCount > 0 {
			where = fmt.Sprintf(" from %s line %d", v.segFile, v.segLine)
		}
		return v.fail(KindEdited, file, n, r.Seq, "the %d records seq %d..%d%s do not match what this checkpoint signed (%d records): one of them was edited, inserted or removed",
			v.segCount, from, v.seq, where, r.Count)
	}
	v.seg.Reset()
	v.segCount = 0
	v.rep.Checkpoints++
	v.rep.SealedSeq, v.rep.SealedHash = r.Seq, r.Hash
	if v.rep.sealed == nil {
		v.rep.sealed = map[uint64]string{}
	}
	v.rep.sealed[r.Seq] = r.Hash
	return true
}

// finish reports an unsealed end, if any.
// track pairs intents with the outcomes that name them.
func (v *verifier) track(r *Record) {
	if r.Event == EventIntent {
		if v.intents == nil {
			v.intents = make(map[uint64]Incomplete)
		}
		v.intents[r.Seq] = Incomplete{Seq: r.Seq, Time: r.Time, Group: r.Group, Tool: r.Tool, Session: r.Session, PID: r.PID}
		return
	}
	if s, ok := r.Detail[DetailIntent]; ok {
		if seq, err := strconv.ParseUint(s, 10, 64); err == nil {
			delete(v.intents, seq)
		}
	}
}

func (v *verifier) finish() (*Report, error) {
	v.rep.Unsealed = int(v.segCount)
	for _, in := range v.intents {
		v.rep.Incomplete = append(v.rep.Incomplete, in)
	}
	slices.SortFunc(v.rep.Incomplete, func(a, b Incomplete) int { return cmp.Compare(a.Seq, b.Seq) })
	if !v.started {
		v.fail(KindUnsealed, lastOf(v.rep.Files), 0, 1, "the log has no records")
		return v.rep, v.rep.Problem
	}
	if v.lastEvent != EventCheckpoint {
		v.fail(KindUnsealed, v.segFile, v.segLine, v.seq-v.segCount+1,
			"%d records (seq %d..%d) after the last checkpoint are not sealed: Moat was killed or is still running, or the log was cut after them",
			v.segCount, v.seq-v.segCount+1, v.seq)
		return v.rep, v.rep.Problem
	}
	return v.rep, nil
}

func lastOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

// FormatPublicKey returns the text form printed by `moat audit pubkey`:
// "moat-audit-ed25519:" followed by the standard base64 of the key.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return pubKeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

const pubKeyPrefix = "moat-audit-ed25519:"

// ParsePublicKey parses the form written by [FormatPublicKey]; surrounding
// white space is ignored.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	b64, ok := strings.CutPrefix(s, pubKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("audit: public key must start with %q (the output of `moat audit pubkey`)", pubKeyPrefix)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("audit: public key is not 32 bytes of base64")
	}
	return ed25519.PublicKey(b), nil
}
