package audit

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkWriteBatch8 measures records/s and per-Write latency with
// fsync batch (group commit) under 8 concurrent writers.
func BenchmarkWriteBatch8(b *testing.B) {
	benchWrite(b, FsyncBatch)
}

// BenchmarkWriteAlways8 is the same with one fdatasync per record, for comparison.
func BenchmarkWriteAlways8(b *testing.B) {
	benchWrite(b, FsyncAlways)
}

func benchWrite(b *testing.B, mode FsyncMode) {
	w := mustOpen(b, Options{Path: b.TempDir() + "/audit.jsonl", Fsync: mode}, testKeys(1))
	rec := randomRecord(rand.New(rand.NewPCG(1, 1)))
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(8 / max(1, runtimeProcs()))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			r := *rec
			t0 := time.Now()
			if err := w.Write(context.Background(), &r); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "records/s")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	}
}

// BenchmarkOpenLargeLog measures Open (which resumes the chain) on a log of
// 1,000 records and on one of 100,000, side by side in the same loop, and
// reports their ratio: opening must not grow with the log (goal: ≤ 1.5).
func BenchmarkOpenLargeLog(b *testing.B) {
	k := testKeys(1)
	paths := map[int]string{}
	for _, n := range []int{1_000, 100_000} {
		p := b.TempDir() + "/audit.jsonl"
		w := mustOpen(b, Options{Path: p, Fsync: FsyncOff}, k)
		writeRecords(b, w, rand.New(rand.NewPCG(1, uint64(n))), n)
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		paths[n] = p
	}
	var took [2]time.Duration
	b.ResetTimer()
	for b.Loop() {
		for i, n := range []int{1_000, 100_000} {
			t0 := time.Now()
			w := mustOpen(b, Options{Path: paths[n], Fsync: FsyncOff}, k)
			took[i] += time.Since(t0)
			b.StopTimer()
			// Close seals with a checkpoint: the next Open starts right there.
			w.Close()
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(took[1])/float64(took[0]), "100k/1k")
	b.ReportMetric(float64(took[1].Microseconds())/float64(b.N), "µs/open-100k")
}
