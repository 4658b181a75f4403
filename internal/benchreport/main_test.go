package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `goos: linux
BenchmarkEchoRoundTrip
BenchmarkEchoRoundTrip/defaults-2         	     400	   3905575 ns/op	       320.0 moat_cpu_µs/call	       707.0 direct_p50_µs	      2336 direct_p99_µs	      2507 moat_p50_µs	      7965 moat_p99_µs	         3.546 ratio_p50	         3.410 ratio_p99
BenchmarkEchoThroughput/in_flight=8-2     	     2	 370559954 ns/op	      2647 direct_calls/s	       934.9 moat_calls/s	         0.3532 ratio
BenchmarkOpenLargeLog-2   	 100	 1000 ns/op	 0.68 100k/1k
PASS
`

func TestReportJudgesEachTarget(t *testing.T) {
	table := render(parse(strings.NewReader(sample)), "head")
	for _, want := range []string{
		"| sequential echo over stdio, p50, defaults (each call's audit intent durable before it leaves) | `BenchmarkEchoRoundTrip/defaults` | 707 | 2,507 | **3.55×** (not met) | ≤ 1.5 |",
		"| Moat's own CPU per proxied call, in that run | `BenchmarkEchoRoundTrip/defaults` |  |  | **320 µs** (not met) | ≤ 300 |",
		"| 2,647 | 935 | **0.353×** (not met) | ≥ 0.8 |",
		"| **0.68×** (met) | ≤ 1.5 |",
		"| `BenchmarkLargeResult` | | | not run | ≤ 1.3 |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("the table lacks %q:\n%s", want, table)
		}
	}
}

func TestSpliceReplacesOnlyTheBlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "README.md")
	before := "intro\n" + beginMarker + "\nold table\n" + endMarker + "\nafter\n"
	if err := os.WriteFile(path, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := splice(path, "new table\n"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if want := "intro\n" + beginMarker + "\nnew table\n" + endMarker + "\nafter\n"; string(got) != want {
		t.Errorf("README after splice:\n%s\nwant:\n%s", got, want)
	}
	if err := os.WriteFile(path, []byte("no markers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := splice(path, "t"); err == nil || !strings.Contains(err.Error(), "bench:begin") {
		t.Errorf("splice without markers: %v", err)
	}
}

func TestREADMEHasTheBlock(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	i, j := strings.Index(string(data), beginMarker), strings.Index(string(data), endMarker)
	if i < 0 || j < i {
		t.Fatal("README.md has no bench block: make bench would have nowhere to write its table")
	}
	for _, r := range rows {
		if !strings.Contains(string(data[i:j]), "`"+r.bench+"`") {
			t.Errorf("README.md's bench table has no row for %s: run make bench", r.bench)
		}
	}
}

// The header tells the load the machine had before the run from the load
// the benchmarks themselves make.
func TestLoadBeforeAndDuring(t *testing.T) {
	l := &loadSampler{samples: []float64{0.5, 2, 3.25, 1}}
	if before, lo, hi := l.span(); before != 0.5 || lo != 1 || hi != 3.25 {
		t.Errorf("span = %v, %v–%v; want 0.5 before, 1–3.25 during", before, lo, hi)
	}
}
