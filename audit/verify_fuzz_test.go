package audit

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary bytes to Verify with fixed keys, with and
// without the MAC key. It checks that Verify never panics, that a pass
// means a whole, sealed log (every line counted, nothing unsealed), that a
// failure is exactly the report's *Problem and one of tampering, an
// unsealed end or keys that verify nothing, and that the MAC key only ever adds checks: a log that
// passes with it passes with the public key alone.
func FuzzVerify(f *testing.F) {
	k := testKeys(1)
	for _, s := range verifySeeds(f, k) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		withMAC := checkReport(t, data, k.MAC, k)
		withPK := checkReport(t, data, nil, k)
		if withMAC == nil && withPK != nil {
			t.Fatalf("the log verifies with the MAC key but not with the public key alone: %v", withPK)
		}
	})
}

// FuzzVerifyOneByte builds a real log with Writer (n records, a checkpoint
// every `every`, closed so that all of it is sealed), sets one byte, and
// checks that Verify reports a Problem unless the log is byte-identical to
// the original. With the public key alone the same holds, except for the
// hash of the final checkpoint: only the MAC key can check that value (see
// the package documentation).
func FuzzVerifyOneByte(f *testing.F) {
	k := testKeys(1)
	f.Add(uint8(5), uint8(2), false, uint32(10), byte('x'))
	f.Add(uint8(1), uint8(1), true, uint32(0), byte('{'))
	f.Add(uint8(30), uint8(7), true, uint32(4000), byte('"'))
	f.Add(uint8(12), uint8(3), false, uint32(1<<31), byte('\n'))
	f.Add(uint8(8), uint8(4), false, uint32(77), byte('A'))  // upper-case hex
	f.Add(uint8(3), uint8(9), true, uint32(123), byte(0xff)) // invalid UTF-8
	logs := map[[3]int][]byte{}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, n, every uint8, args bool, pos uint32, b byte) {
		key := [3]int{1 + int(n)%48, 1 + int(every)%16, 0}
		if args {
			key[2] = 1
		}
		orig, ok := logs[key]
		if !ok {
			orig = buildLog(t, filepath.Join(dir, fmt.Sprint(len(logs)), "a.jsonl"), key, k)
			logs[key] = orig
		}
		i := int(pos % uint32(len(orig)))
		mutated := bytes.Clone(orig)
		mutated[i] = b
		same := bytes.Equal(mutated, orig)
		for _, mac := range [][]byte{k.MAC, nil} {
			rep, err := Verify(bytes.NewReader(mutated), mac, pub(k))
			switch {
			case same && err != nil:
				t.Fatalf("the untouched log fails (mac=%v): %v", mac != nil, err)
			case !same && err == nil && (mac != nil || !inFinalHash(orig, i)):
				line := bytes.Count(orig[:i], []byte("\n"))
				t.Fatalf("byte %d (line %d) set from %q to %q verifies (mac=%v, %d records):\n%s", i, line+1, orig[i], b, mac != nil, rep.Records,
					bytes.SplitAfter(mutated, []byte("\n"))[line])
			}
		}
	})
}

// buildLog writes key[0] records with a checkpoint every key[1], arguments
// recorded when key[2] is 1, closes the log and returns its bytes.
// The clock, process and user are fixed so that the same key gives the
// same bytes in every process: a failing input then replays exactly.
func buildLog(t *testing.T, path string, key [3]int, k Keys) []byte {
	clock := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	w := mustOpen(t, Options{
		Path: path, Fsync: FsyncOff, CheckpointEvery: key[1], RecordArgs: key[2] == 1,
		Clock: func() time.Time { return clock },
	}, k)
	w.pid, w.user = 4242, "fuzz"
	writeRecords(t, w, rand.New(rand.NewPCG(uint64(key[0]), uint64(key[1]))), key[0])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.Join(readLines(t, path), nil)
}

// inFinalHash reports whether byte i of log lies in the value of the last
// line's "hash" member.
func inFinalHash(log []byte, i int) bool {
	last := bytes.LastIndexByte(log[:len(log)-1], '\n') + 1
	start := bytes.LastIndex(log, []byte(`,"hash":"`)) + len(`,"hash":"`)
	return start > last && i >= start && i < len(log)-3
}

// checkReport verifies data with macKey (nil: public key only) and checks
// the report's consistency; it returns Verify's error.
func checkReport(t *testing.T, data, macKey []byte, k Keys) error {
	t.Helper()
	rep, err := Verify(bytes.NewReader(data), macKey, pub(k))
	if rep == nil {
		t.Fatalf("Verify returned no report: %v", err)
	}
	if rep.MACVerified != (macKey != nil) {
		t.Fatalf("MACVerified = %v with mac key %v", rep.MACVerified, macKey != nil)
	}
	if err == nil {
		lines := bytes.Count(data, []byte("\n"))
		if rep.Problem != nil || rep.Unsealed != 0 || rep.Checkpoints == 0 || rep.Records != lines || rep.SealedSeq != rep.LastSeq ||
			rep.LastSeq-rep.FirstSeq+1 != uint64(lines) {
			t.Fatalf("a pass that is not a whole sealed log (%d lines): %+v", lines, rep)
		}
		return nil
	}
	var p *Problem
	if !errors.As(err, &p) || p != rep.Problem {
		t.Fatalf("Verify error %v (%T) is not the report's Problem %v", err, err, rep.Problem)
	}
	n := 0
	for _, e := range []error{ErrTampered, ErrUnsealed, ErrWrongKey} {
		if errors.Is(err, e) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("problem %v is not exactly one of tampered, unsealed and wrong keys", err)
	}
	if strings.Contains(p.Error(), "\n") {
		t.Fatalf("problem spans lines: %q", p.Error())
	}
	return err
}

// verifySeeds are real logs (sealed, unsealed, rotated-looking, with a
// forged line) and the parser-differential payloads: case-variant and
// duplicate keys, invalid UTF-8, deep nesting, huge numbers.
func verifySeeds(f *testing.F, k Keys) [][]byte {
	dir := f.TempDir()
	var seeds [][]byte
	for i, key := range [][3]int{{1, 1, 0}, {6, 2, 1}, {20, 7, 0}} {
		path := filepath.Join(dir, fmt.Sprint(i), "a.jsonl")
		w, err := Open(Options{Path: path, Fsync: FsyncOff, CheckpointEvery: key[1], RecordArgs: key[2] == 1}, k)
		if err != nil {
			f.Fatal(err)
		}
		rnd := rand.New(rand.NewPCG(uint64(i), 0))
		for range key[0] {
			if err := w.Write(f.Context(), randomRecord(rnd)); err != nil {
				f.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			f.Fatal(err)
		}
		lines := readLines(f, path)
		whole := bytes.Join(lines, nil)
		seeds = append(seeds, whole,
			bytes.Join(lines[:len(lines)-1], nil), // unsealed end
			whole[:len(whole)-5],                  // torn tail
		)
		first := lines[0]
		seeds = append(seeds,
			bytes.Replace(whole, []byte(`"seq":`), []byte(`"Seq":`), 1),
			bytes.Replace(whole, []byte(`"event":`), []byte(`"event":"x","event":`), 1),
			bytes.Replace(whole, []byte(`"seq":1,`), []byte(`"seq":1e400,`), 1),
			bytes.Replace(whole, []byte(`"seq":1,`), []byte(`"seq":18446744073709551617,`), 1),
			append(bytes.Clone(first), first...), // duplicated record
		)
	}
	seeds = append(seeds,
		nil, []byte("\n"), []byte("{}\n"), []byte("\xff\xfe\n"),
		[]byte(`{"v":1,"seq":1,"event":"x\xff","hash":"`+strings.Repeat("0", 64)+"\"}\n"),
		[]byte(strings.Repeat("[", 10000)+"\n"),
		[]byte(`{"v":1,"seq":1,"time":"","event":"checkpoint","args":`+strings.Repeat(`{"a":`, 5000)+"1"+strings.Repeat("}", 5000)+`,"hash":"`+strings.Repeat("a", 64)+"\"}\n"),
	)
	return seeds
}
