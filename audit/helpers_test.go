package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// testKeys derives fixed keys from seed, so a re-exec'd child uses the same.
func testKeys(seed byte) Keys {
	return Keys{
		MAC:    bytes.Repeat([]byte{seed, 0x5a}, 16),
		Signer: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize)),
	}
}

func pub(k Keys) ed25519.PublicKey { return k.Signer.Public().(ed25519.PublicKey) }

func logPath(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	return filepath.Join(dir, "audit.jsonl")
}

func mustOpen(t testing.TB, o Options, k Keys) *Writer {
	t.Helper()
	w, err := Open(o, k)
	if err != nil {
		t.Fatalf("Open(%s): %v", o.Path, err)
	}
	return w
}

// randomRecord makes a tool-call-like record with awkward strings.
func randomRecord(rnd *rand.Rand) *Record {
	words := []string{"read_file", "write <b>&</b>", "naïve ✓", "tab\tand\"quote", "\u2028sep", "back\\slash", ""}
	pick := func() string { return words[rnd.IntN(len(words))] }
	args := json.RawMessage(fmt.Sprintf(`{"path":%q,"n":%d,"deep":{"k":[1,2.50,true,null]}}`, pick(), rnd.IntN(1000)))
	shape, sum := ArgsShape(args)
	r := &Record{
		Event: "tool_call", Group: "files", Tool: pick(), Decision: "allow", Rule: pick(), Reason: pick(),
		ArgsSHA256: sum, ArgsShape: shape, Args: args,
		BytesIn: rnd.Int64N(1 << 20), BytesOut: rnd.Int64N(1 << 20), DurationMS: rnd.Int64N(5000),
		Outcome: OutcomeOK, Pin: "sha256:abc", Session: "s-1",
	}
	if rnd.IntN(4) == 0 {
		r.Detail = map[string]string{"command": pick(), "pid": "42"}
	}
	return r
}

func writeRecords(t testing.TB, w *Writer, rnd *rand.Rand, n int) {
	t.Helper()
	for range n {
		if err := w.Write(context.Background(), randomRecord(rnd)); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
}

func readLines(t testing.TB, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	return lines[:len(lines)-1] // SplitAfter leaves "" after the final newline
}

func verifyFile(t testing.TB, path string, k Keys, withMAC bool) (*Report, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mac []byte
	if withMAC {
		mac = k.MAC
	}
	return Verify(f, mac, pub(k))
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
