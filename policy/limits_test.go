package policy

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func limitsFor(t *testing.T, global string, groups map[string]string) *Limits {
	t.Helper()
	l := NewLimits()
	ps := map[string]*Policy{}
	for g, s := range groups {
		ps[g] = mustParse(t, s)
	}
	l.Update(mustParse(t, global), ps)
	return l
}

func TestRateBurstCountsExactly(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name   string
		policy string
		spread time.Duration // the 10k calls are spread evenly over this
		want   int
	}{
		{"all at once, burst 1", `{"rate": "5/s", "burst": 1}`, 0, 1},
		{"all at once, burst 20", `{"rate": "5/s", "burst": 20}`, 0, 20},
		{"over 10s, burst 20", `{"rate": "5/s", "burst": 20}`, 10 * time.Second, 20 + 50},
		{"over 10s, default burst", `{"rate": "5/s"}`, 10 * time.Second, 5 + 50},
		{"per tool", `{"tools": {"t": {"rate": "5/s", "burst": 3}}}`, 2 * time.Second, 3 + 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := limitsFor(t, `{"global": {"rate": "1000000/s"}}`, map[string]string{"g": tt.policy})
			const calls = 10000
			got := 0
			var lastRetry time.Duration
			for i := range calls {
				now := start.Add(tt.spread * time.Duration(i) / (calls - 1))
				ok, retry := l.AllowAt(now, "g", "t")
				if ok {
					got++
				} else {
					lastRetry = retry
				}
			}
			if got != tt.want {
				t.Errorf("%d calls allowed, want exactly %d", got, tt.want)
			}
			if lastRetry <= 0 || lastRetry > time.Second {
				t.Errorf("a refused call was told to retry after %v, want a positive wait of at most 1/rate", lastRetry)
			}
		})
	}
}

func TestRateRefusalSpendsNothing(t *testing.T) {
	// The tool limiter refuses; the group's bucket must not be drained by it.
	now := time.Now()
	l := limitsFor(t, `{}`, map[string]string{"g": `{"rate": "1/h", "burst": 2, "tools": {"slow": {"rate": "1/h", "burst": 1}}}`})
	for i, want := range []bool{true, false, false, false} {
		if ok, _ := l.AllowAt(now, "g", "slow"); ok != want {
			t.Fatalf("call %d of slow: allowed %v, want %v", i, ok, want)
		}
	}
	if ok, _ := l.AllowAt(now, "g", "other"); !ok {
		t.Error("refused calls of slow used up the group's burst: other was refused")
	}
}

func TestRateStateSurvivesReload(t *testing.T) {
	now := time.Now()
	l := limitsFor(t, `{}`, map[string]string{"g": `{"rate": "1/h", "burst": 2}`, "h": `{"rate": "1/h", "burst": 1}`})
	for range 2 {
		l.AllowAt(now, "g", "t")
	}
	l.AllowAt(now, "h", "t")
	// Reload: g unchanged, h's rate changed.
	l.Update(nil, map[string]*Policy{"g": mustParse(t, `{"rate": "1/h", "burst": 2}`), "h": mustParse(t, `{"rate": "2/h", "burst": 1}`)})
	if ok, _ := l.AllowAt(now, "g", "t"); ok {
		t.Error("after a reload that left g's rate unchanged, g's empty bucket was refilled")
	}
	if ok, _ := l.AllowAt(now, "h", "t"); !ok {
		t.Error("after h's rate changed, h still used its old bucket")
	}
	l.Update(nil, map[string]*Policy{"g": mustParse(t, `{}`)})
	if ok, _ := l.AllowAt(now, "h", "t"); ok {
		t.Error("a group removed by a reload can still be called")
	}
}

func TestConcurrencyCap(t *testing.T) {
	l := limitsFor(t, `{"global": {"max_concurrent": 100}}`, map[string]string{"g": `{"max_concurrent": 3, "tools": {"one": {"max_concurrent": 1}}}`})
	ctx := context.Background()
	var running, peak, refused atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for range 20 {
				release, err := l.Acquire(ctx, "g", "t")
				if err != nil {
					var busy *BusyError
					if !errors.As(err, &busy) || busy.Scope != "group" || busy.Max != 3 {
						t.Errorf("Acquire error = %v, want a group BusyError with max 3", err)
					}
					refused.Add(1)
					continue
				}
				n := running.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				running.Add(-1)
				release()
				release() // a second release must not free a slot twice
			}
		})
	}
	wg.Wait()
	if peak.Load() > 3 {
		t.Errorf("%d calls ran at once, want at most max_concurrent 3", peak.Load())
	}
	// All slots are free again: exactly 3 can be held, the 4th is refused.
	var releases []func()
	for i := range 4 {
		rel, err := l.Acquire(ctx, "g", "t")
		if (err == nil) != (i < 3) {
			t.Fatalf("Acquire #%d after all released: err %v", i+1, err)
		}
		if rel != nil {
			releases = append(releases, rel)
		}
	}
	if _, err := l.Acquire(ctx, "g", "one"); err == nil {
		t.Error("the group cap was full but a call of tool one got a slot")
	}
	releases[0]()
	rel, err := l.Acquire(ctx, "g", "one")
	if err != nil {
		t.Fatalf("Acquire(one) with one group slot free: %v", err)
	}
	releases[1]()
	var busy *BusyError
	if _, err := l.Acquire(ctx, "g", "one"); !errors.As(err, &busy) || busy.Scope != "tool" {
		t.Errorf("second concurrent call of tool one: err %v, want a tool-scope BusyError", err)
	}
	rel()
	if _, err := l.Acquire(ctx, "nope", "t"); err == nil {
		t.Error("a group without a policy got a slot; it must fail closed")
	}
}
