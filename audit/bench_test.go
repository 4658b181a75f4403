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
