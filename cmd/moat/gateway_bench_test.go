package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/testutil"
)

// gatewaySessions is how many clients BenchmarkGatewaySessions connects at
// once, each making mixed calls back to back.
const gatewaySessions = 200

// gatewayDuration is how long the gateway is loaded: a minute, unless
// MOAT_BENCH_GATEWAY_SECONDS says otherwise (a quick local look).
func gatewayDuration() time.Duration {
	if s, err := strconv.Atoi(os.Getenv("MOAT_BENCH_GATEWAY_SECONDS")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return time.Minute
}

// mixedCall is one of the calls a benchmark client makes, in turn: two
// tools, a resource read and a listing of tools.
func mixedCall(ctx context.Context, cs *mcp.ClientSession, i int, viaMoat bool) (audited bool, err error) {
	switch i % 4 {
	case 0, 1:
		name, args := "echo", map[string]any{"message": "ping"}
		if i%4 == 1 {
			name, args = "add", map[string]any{"a": 2, "b": 3}
		}
		params := &mcp.CallToolParams{Name: name, Arguments: args}
		if viaMoat {
			params = &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": name, "args": args}}
		}
		res, err := cs.CallTool(ctx, params)
		if err == nil && res.IsError {
			err = fmt.Errorf("%s refused or failed: %v", name, res.Content)
		}
		return true, err
	case 2:
		_, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://static/hello"})
		return true, err
	}
	if viaMoat {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "get_dynamic_tools", Arguments: map[string]any{"group": "test"}})
		return false, err // answered from the catalog, not audited
	}
	_, err = cs.ListTools(ctx, nil)
	return false, err
}

// loadResult is what one load run measured.
type loadResult struct {
	latencies []time.Duration
	audited   int64 // calls that must each have an audit record
	failed    int64
	firstErr  atomic.Value
}

// load runs n clients (sessions[i] for client i) for d, each making mixed
// calls back to back.
func load(sessions []*mcp.ClientSession, viaMoat bool, d time.Duration) *loadResult {
	r := &loadResult{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ctx := context.Background()
	end := time.Now().Add(d)
	for c, cs := range sessions {
		wg.Go(func() {
			var mine []time.Duration
			var audited int64
			for i := c; time.Now().Before(end); i++ {
				start := time.Now()
				a, err := mixedCall(ctx, cs, i, viaMoat)
				mine = append(mine, time.Since(start))
				if a {
					audited++
				}
				if err != nil {
					atomic.AddInt64(&r.failed, 1)
					r.firstErr.CompareAndSwap(nil, err.Error())
				}
			}
			mu.Lock()
			r.latencies = append(r.latencies, mine...)
			r.audited += audited
			mu.Unlock()
		})
	}
	wg.Wait()
	return r
}

// BenchmarkGatewaySessions loads one gateway with 200 sessions making
// mixed calls (echo, add, a resource read, get_dynamic_tools) back to back
// for a minute, through the real binary with its default audit settings,
// and (first, in the same run) the Go test server directly with 200
// callers on one session, as the baseline. It then reads the audit log:
// every audited call must have its record (lost_records), and the policy
// allows every call (refused_calls). It reports p50 and p99 of a call on
// both paths, and the gateway's peak and loaded resident memory.
func BenchmarkGatewaySessions(b *testing.B) {
	d := gatewayDuration()
	server := testutil.BuildTestServer(b)

	// Direct: the server's own latency under the same concurrency.
	direct := connectCmd(b, exec.Command(server, "-name", "direct", "-same-uris"))
	callers := make([]*mcp.ClientSession, gatewaySessions)
	for i := range callers {
		callers[i] = direct
	}
	dr := load(callers, false, d/3)
	if dr.failed > 0 {
		b.Fatalf("%d direct calls failed, the first: %v", dr.failed, dr.firstErr.Load())
	}

	// Through the gateway: one session per client.
	dir := b.TempDir()
	limits := map[string]any{"rate": "1000000/s", "burst": 1000000, "max_concurrent": 2 * gatewaySessions}
	cfg := writeBenchConfig(b, map[string]any{"test": map[string]any{"description": "bench", "command": server, "args": []string{"-name", "test", "-same-uris"}}},
		map[string]any{"defaults": map[string]any{"policy": map[string]any{"global": limits, "rate": limits["rate"], "burst": limits["burst"], "max_concurrent": limits["max_concurrent"]}}})
	sock := filepath.Join(dir, "gateway.sock")
	env := testutil.MoatEnv(b)
	gw := exec.Command(testutil.BuildMoat(b), "serve", "--listen", "unix:"+sock, cfg)
	stderr := &testutil.SyncBuffer{}
	gw.Env, gw.Stderr = env, stderr
	if err := gw.Start(); err != nil {
		b.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			gw.Process.Kill()
			gw.Wait()
		}
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the gateway's socket did not appear; its stderr:\n%s", testutil.Tail(stderr.String(), 4096))
		}
	}
	sessions := make([]*mcp.ClientSession, gatewaySessions)
	for i := range sessions {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil).Connect(ctx, &mcp.IOTransport{Reader: conn, Writer: conn}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
		cancel()
		if err != nil {
			b.Fatalf("session %d: %v", i, err)
		}
		sessions[i] = cs
	}
	for _, cs := range sessions[:1] { // the group is connected and listed
		if _, err := mixedCall(context.Background(), cs, 0, true); err != nil {
			b.Fatal(err)
		}
	}
	idle := vmRSSMiB(b, gw.Process.Pid)
	mr := load(sessions, true, d)
	loaded := vmRSSMiB(b, gw.Process.Pid)
	peak := procStatusMiB(b, gw.Process.Pid, "VmHWM")
	for _, cs := range sessions {
		cs.Close()
	}
	gw.Process.Signal(syscall.SIGTERM)
	stopped = true
	if err := gw.Wait(); err != nil {
		b.Fatalf("the gateway exited with %v after SIGTERM", err)
	}

	// Every audited call has its record: the warm-up call above, then mr's,
	// in the log and the files it rotated to (audit.jsonl.<time>).
	logPath := filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl")
	files, err := audit.RotatedFiles(logPath)
	if err != nil {
		b.Fatal(err)
	}
	records := 0
	for _, f := range append(files, logPath) {
		for _, r := range testutil.ReadAudit(b, f) {
			if (r["event"] == "tool_call" || r["event"] == "resource_read") && r["outcome"] != nil {
				records++
			}
		}
	}
	lost := mr.audited + 1 - int64(records)

	p50d, p99d := percentile(dr.latencies, 0.50), percentile(dr.latencies, 0.99)
	p50m, p99m := percentile(mr.latencies, 0.50), percentile(mr.latencies, 0.99)
	b.ReportMetric(p50d, "direct_p50_µs")
	b.ReportMetric(p99d, "direct_p99_µs")
	b.ReportMetric(p50m, "moat_p50_µs")
	b.ReportMetric(p99m, "moat_p99_µs")
	b.ReportMetric(p50m/p50d, "ratio_p50")
	b.ReportMetric(p99m/p99d, "ratio_p99")
	directRate, moatRate := float64(len(dr.latencies))/(d/3).Seconds(), float64(len(mr.latencies))/d.Seconds()
	b.ReportMetric(moatRate, "moat_calls/s")
	b.ReportMetric(directRate, "direct_calls/s")
	b.ReportMetric(moatRate/directRate, "ratio_calls")
	b.ReportMetric(float64(lost), "lost_records")
	b.ReportMetric(float64(mr.failed), "refused_calls")
	b.ReportMetric(idle, "idle_rss_MiB")
	b.ReportMetric(loaded, "loaded_rss_MiB")
	b.ReportMetric(peak, "peak_rss_MiB")
	if mr.failed > 0 {
		b.Errorf("%d calls through the gateway failed, the first: %v", mr.failed, mr.firstErr.Load())
	}
	if lost != 0 {
		b.Errorf("%d audited calls, %d records: %d lost", mr.audited+1, records, lost)
	}
}
