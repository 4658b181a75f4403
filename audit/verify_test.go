package audit

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type mutation struct {
	name     string
	wantKind Kind     // with the MAC key; "" means the log still verifies
	alsoKind Kind     // a second acceptable kind (see the cases)
	wantLine []int    // acceptable 1-based lines
	lines    [][]byte // the mutated log
	detectPK bool     // the public key alone must detect it too
}

// TestVerifyCatchesEverySingleChange builds random logs, applies one random
// change, and checks that Verify reports the right kind at the right line.
func TestVerifyCatchesEverySingleChange(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (rerun with AUDIT_SEED)", seed)
	if s := os.Getenv("AUDIT_SEED"); s != "" {
		var err error
		if seed, err = parseUint(s); err != nil {
			t.Fatal(err)
		}
	}
	rnd := rand.New(rand.NewPCG(seed, 0))
	k := testKeys(1)
	other := testKeys(2)
	for trial := range 150 {
		dir := t.TempDir()
		o := Options{Path: filepath.Join(dir, "a.jsonl"), Fsync: FsyncOff, CheckpointEvery: 1 + rnd.IntN(60), RecordArgs: rnd.IntN(2) == 0}
		w := mustOpen(t, o, k)
		writeRecords(t, w, rnd, 1+rnd.IntN(200))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		orig := readLines(t, o.Path)
		for _, mac := range []bool{true, false} {
			if rep, err := Verify(bytes.NewReader(bytes.Join(orig, nil)), macOf(k, mac), pub(k)); err != nil || rep.Records != len(orig) {
				t.Fatalf("trial %d: untouched log (mac=%v): %v, %d of %d records", trial, mac, err, rep.Records, len(orig))
			}
		}
		// The forged line: authentic-looking, from a log with other keys.
		fo := Options{Path: filepath.Join(dir, "f.jsonl"), Fsync: FsyncOff}
		fw := mustOpen(t, fo, other)
		writeRecords(t, fw, rnd, 1+rnd.IntN(len(orig)+5))
		fw.Close()
		forged := readLines(t, fo.Path)
		m := mutate(rnd, orig, forged[rnd.IntN(len(forged)-1)])
		checkMutation(t, trial, m, k)
	}
}

func macOf(k Keys, with bool) []byte {
	if with {
		return k.MAC
	}
	return nil
}

func parseUint(s string) (uint64, error) {
	var n uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, errors.New("AUDIT_SEED must be a number")
		}
		n = n*10 + uint64(c-'0')
	}
	return n, nil
}

func clone(lines [][]byte) [][]byte {
	out := make([][]byte, len(lines))
	for i, l := range lines {
		out[i] = bytes.Clone(l)
	}
	return out
}

func lastCheckpointBefore(lines [][]byte, k int) int {
	for i := k - 1; i >= 0; i-- {
		if bytes.Contains(lines[i], []byte(`"event":"checkpoint"`)) {
			return i
		}
	}
	return -1
}

func mutate(rnd *rand.Rand, orig [][]byte, forged []byte) mutation {
	n := len(orig)
	l := clone(orig)
	switch rnd.IntN(6) {
	case 0: // edit one byte anywhere except the newline
		i := rnd.IntN(n)
		j := rnd.IntN(len(l[i]) - 1)
		b := byte(' ' + rnd.IntN(95))
		for b == l[i][j] {
			b = byte(' ' + rnd.IntN(95))
		}
		l[i][j] = b
		// Only the last line's own hash value is outside every signature.
		pk := !(i == n-1 && j >= len(l[i])-68)
		return mutation{name: "edit", wantKind: KindEdited, wantLine: []int{i + 1}, lines: l, detectPK: pk}
	case 1: // delete a line
		i := rnd.IntN(n)
		l = append(l[:i], l[i+1:]...)
		if i == n-1 {
			return mutation{name: "delete last", wantKind: KindUnsealed, lines: l, wantLine: unsealedLine(orig, n-1), detectPK: true}
		}
		return mutation{name: "delete", wantKind: KindDeleted, wantLine: []int{i + 1}, lines: l, detectPK: true}
	case 2: // swap two lines
		if n < 2 {
			return mutation{name: "nothing to swap", lines: l}
		}
		i, j := rnd.IntN(n), rnd.IntN(n)
		for i == j {
			j = rnd.IntN(n)
		}
		i, j = min(i, j), max(i, j)
		l[i], l[j] = l[j], l[i]
		return mutation{name: "swap", wantKind: KindReordered, wantLine: []int{i + 1}, lines: l, detectPK: true}
	case 3: // insert a copy of an existing line
		i, src := rnd.IntN(n+1), rnd.IntN(n)
		l = append(l[:i], append([][]byte{bytes.Clone(orig[src])}, l[i:]...)...)
		lines := []int{i + 1}
		if src == i { // identical neighbours: either may be called the copy
			lines = append(lines, i+2)
		}
		return mutation{name: "insert copy", wantKind: KindInserted, wantLine: lines, lines: l, detectPK: true}
	case 4: // insert a line forged with other keys
		i := rnd.IntN(n + 1)
		l = append(l[:i], append([][]byte{bytes.Clone(forged)}, l[i:]...)...)
		m := mutation{name: "insert forged", wantKind: KindInserted, wantLine: []int{i + 1}, lines: l, detectPK: true}
		if i == n { // appended after the end: nothing follows to tell it from an edit
			m.alsoKind = KindEdited
		}
		return m
	default: // truncate, at a line boundary or mid-line
		keep := rnd.IntN(n)
		l = l[:keep]
		if rnd.IntN(2) == 0 {
			cut := 1 + rnd.IntN(len(orig[keep])-1)
			l = append(l, bytes.Clone(orig[keep][:cut]))
			return mutation{name: "truncate mid-line", wantKind: KindTornTail, wantLine: []int{keep + 1}, lines: l, detectPK: true}
		}
		if keep == 0 {
			return mutation{name: "truncate to empty", wantKind: KindUnsealed, wantLine: []int{0}, lines: l, detectPK: true}
		}
		if lastCheckpointBefore(orig, keep) == keep-1 {
			// Cut right after a checkpoint: indistinguishable from a clean
			// end (the documented limit; off-host checkpoints cover it).
			return mutation{name: "truncate after checkpoint", lines: l}
		}
		return mutation{name: "truncate", wantKind: KindUnsealed, wantLine: unsealedLine(orig, keep), lines: l, detectPK: true}
	}
}

// unsealedLine is where the unsealed tail of the first keep lines starts.
func unsealedLine(orig [][]byte, keep int) []int {
	return []int{lastCheckpointBefore(orig, keep) + 2}
}

func checkMutation(t *testing.T, trial int, m mutation, k Keys) {
	t.Helper()
	data := bytes.Join(m.lines, nil)
	rep, err := Verify(bytes.NewReader(data), k.MAC, pub(k))
	if m.wantKind == "" {
		if err != nil {
			t.Errorf("trial %d, %s: Verify = %v, want the log to verify", trial, m.name, err)
		}
		if rep != nil && rep.LastSeq != rep.SealedSeq {
			t.Errorf("trial %d, %s: last seq %d is not sealed (%d)", trial, m.name, rep.LastSeq, rep.SealedSeq)
		}
		return
	}
	var p *Problem
	if !errors.As(err, &p) {
		t.Errorf("trial %d, %s: Verify = %v, want a %s problem", trial, m.name, err, m.wantKind)
		return
	}
	if (p.Kind != m.wantKind && p.Kind != m.alsoKind) || !contains(m.wantLine, p.Line) {
		t.Errorf("trial %d, %s: got %s at line %d (%v), want %s at line %v", trial, m.name, p.Kind, p.Line, p, m.wantKind, m.wantLine)
	}
	wantErr := ErrTampered
	if m.wantKind == KindUnsealed || m.wantKind == KindTornTail {
		wantErr = ErrUnsealed
	}
	if !errors.Is(err, wantErr) {
		t.Errorf("trial %d, %s: %v does not wrap %v", trial, m.name, err, wantErr)
	}
	if m.detectPK {
		if _, err := Verify(bytes.NewReader(data), nil, pub(k)); err == nil {
			t.Errorf("trial %d, %s: the public key alone did not detect the change", trial, m.name)
		}
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestVerifyWrongKeysAreNotTampering: keys that verify nothing in the log
// (an auditor's wrong --pubkey file, a shell whose secret store is not the
// one the writing moat used) are reported as such, not as tampering; with
// the right MAC key a bad signature is tampering again.
func TestVerifyWrongKeysAreNotTampering(t *testing.T) {
	k := testKeys(1)
	o := Options{Path: logPath(t), Fsync: FsyncOff}
	w := mustOpen(t, o, k)
	writeRecords(t, w, rand.New(rand.NewPCG(1, 2)), 3)
	w.Close()
	for _, tt := range []struct {
		name     string
		mac      []byte
		pub      ed25519.PublicKey
		kind     Kind
		line     int
		sentinel error
	}{
		{"wrong public key only", nil, pub(testKeys(9)), KindWrongKey, 4, ErrWrongKey},
		{"wrong MAC and public key", testKeys(9).MAC, pub(testKeys(9)), KindWrongKey, 1, ErrWrongKey},
		{"right MAC key, wrong public key", k.MAC, pub(testKeys(9)), KindBadSignature, 4, ErrTampered},
		{"wrong MAC key, right public key", testKeys(9).MAC, pub(k), KindEdited, 1, ErrTampered},
	} {
		f, _ := os.Open(o.Path)
		_, err := Verify(f, tt.mac, tt.pub)
		f.Close()
		var p *Problem
		if !errors.As(err, &p) || p.Kind != tt.kind || p.Line != tt.line || !errors.Is(err, tt.sentinel) {
			t.Errorf("%s: Verify = %v, want %s at line %d wrapping %v", tt.name, err, tt.kind, tt.line, tt.sentinel)
		}
	}
	// An edit of the only record, with the right keys, stays an edit: the
	// checkpoint's signature vouches for the keys.
	o.Path = logPath(t)
	w = mustOpen(t, o, k)
	writeRecords(t, w, rand.New(rand.NewPCG(1, 2)), 1)
	w.Close()
	lines := readLines(t, o.Path)
	lines[0] = bytes.Replace(lines[0], []byte(`"group":"files"`), []byte(`"group":"filez"`), 1)
	_, err := Verify(bytes.NewReader(bytes.Join(lines, nil)), k.MAC, pub(k))
	var p *Problem
	if !errors.As(err, &p) || p.Kind != KindEdited || p.Line != 1 {
		t.Errorf("Verify after editing the only record = %v, want edited at line 1", err)
	}
}

func TestPublicKeyTextRoundTrip(t *testing.T) {
	k := testKeys(3)
	s := FormatPublicKey(pub(k))
	got, err := ParsePublicKey(" " + s + "\n")
	if err != nil || !got.Equal(pub(k)) {
		t.Fatalf("ParsePublicKey(FormatPublicKey) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "ssh-ed25519 AAAA", pubKeyPrefix + "AAAA"} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) succeeded", bad)
		}
	}
}
