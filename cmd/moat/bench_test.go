package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/testutil"
)

// The benchmarks measure the real binary, as a client sees it. Run them
// with `make bench`; README quotes their output.

func connectCmd(b *testing.B, cmd *exec.Cmd) *mcp.ClientSession {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		b.Fatalf("connect %v: %v", cmd.Args, err)
	}
	b.Cleanup(func() { cs.Close() })
	return cs
}

func percentile(d []time.Duration, p float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return float64(s[i].Microseconds())
}

// echoPaths starts the Go test server twice, once to call directly and once
// as group "test" of a moat (with policy, and extra top-level config keys),
// and returns an echo call over each path and the moat's pid.
func echoPaths(b *testing.B, policy, extra map[string]any) (direct, viaMoat func() error, moatPid int) {
	server := testutil.BuildTestServer(b)
	d := connectCmd(b, exec.Command(server, "-name", "direct"))
	srv := map[string]any{"description": "bench", "command": server, "args": []string{"-name", "test"}}
	if policy != nil {
		srv["policy"] = policy
	}
	cmd := moatCmd(b, writeBenchConfig(b, map[string]any{"test": srv}, extra))
	m := connectCmd(b, cmd)
	ctx := context.Background()
	direct = func() error {
		_, err := d.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "ping"}})
		return err
	}
	viaMoat = func() error {
		res, err := m.CallTool(ctx, &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "ping"}}})
		if err == nil && res.IsError {
			err = fmt.Errorf("call failed: %v", res.Content)
		}
		return err
	}
	return direct, viaMoat, cmd.Process.Pid
}

// cpuTime is the CPU time (user and system, every thread) process pid has
// used so far, in clock ticks of 10 ms: coarse, so it is read around
// thousands of calls.
func cpuTime(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which may hold spaces, start at
	// the state (field 3); utime and stime are fields 14 and 15.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	utime, err1 := strconv.ParseInt(fields[14-3], 10, 64)
	stime, err2 := strconv.ParseInt(fields[15-3], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %s", pid, data)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime+stime) * tick
}

// BenchmarkEchoRoundTrip times sequential echo calls over stdio to the Go
// test server, (a) directly and (b) through moat, interleaved in one run so
// both see the same machine load. ratio_p50 is b/a. The default config
// makes every call's audit record durable (one fdatasync per sequential
// call); audit.fsync=off shows the proxy and guard without that sync.
func BenchmarkEchoRoundTrip(b *testing.B) {
	for _, tt := range []struct {
		name  string
		audit map[string]any
	}{
		{"defaults", nil},
		{"audit.fsync=off", map[string]any{"fsync": "off"}},
	} {
		b.Run(tt.name, func(b *testing.B) { benchEcho(b, tt.audit) })
	}
}

func benchEcho(b *testing.B, auditCfg map[string]any) {
	extra := map[string]any{}
	if auditCfg != nil {
		extra["audit"] = auditCfg
	}
	directCall, moatCall, pid := echoPaths(b, nil, extra)
	for range 200 { // warm up both paths
		if err := directCall(); err != nil {
			b.Fatal(err)
		}
		if err := moatCall(); err != nil {
			b.Fatal(err)
		}
	}
	var a, m []time.Duration
	cpu0 := cpuTime(b, pid)
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if err := directCall(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := moatCall(); err != nil {
			b.Fatal(err)
		}
		a = append(a, t1.Sub(t0))
		m = append(m, time.Since(t1))
	}
	b.ReportMetric(float64((cpuTime(b, pid)-cpu0).Microseconds())/float64(b.N), "moat_cpu_µs/call")
	b.ReportMetric(percentile(a, 0.5), "direct_p50_µs")
	b.ReportMetric(percentile(a, 0.99), "direct_p99_µs")
	b.ReportMetric(percentile(m, 0.5), "moat_p50_µs")
	b.ReportMetric(percentile(m, 0.99), "moat_p99_µs")
	b.ReportMetric(percentile(m, 0.5)/percentile(a, 0.5), "ratio_p50")
	b.ReportMetric(percentile(m, 0.99)/percentile(a, 0.99), "ratio_p99")
}

// BenchmarkEchoThroughput runs echo calls with 8 and 32 in flight over one
// session, (a) directly to the Go test server and (b) through moat, in
// alternating batches of one run so both see the same load. ratio is b/a of
// calls per second. The group's max_concurrent is raised above the calls
// in flight: the default (16) would refuse the rest, not queue them.
func BenchmarkEchoThroughput(b *testing.B) {
	for _, inFlight := range []int{8, 32} {
		b.Run(fmt.Sprintf("in_flight=%d", inFlight), func(b *testing.B) {
			directCall, moatCall, _ := echoPaths(b, map[string]any{"max_concurrent": 64}, nil)
			const batch = 256
			run := func(call func() error) time.Duration {
				var wg sync.WaitGroup
				var next, failed atomic.Int64
				t0 := time.Now()
				for range inFlight {
					wg.Go(func() {
						for next.Add(1) <= batch {
							if call() != nil {
								failed.Add(1)
							}
						}
					})
				}
				wg.Wait()
				if failed.Load() > 0 {
					b.Fatalf("%d of %d calls failed", failed.Load(), batch)
				}
				return time.Since(t0)
			}
			run(directCall) // warm up both paths
			run(moatCall)
			var a, m time.Duration
			for b.Loop() {
				a += run(directCall)
				m += run(moatCall)
			}
			n := float64(b.N * batch)
			b.ReportMetric(n/a.Seconds(), "direct_calls/s")
			b.ReportMetric(n/m.Seconds(), "moat_calls/s")
			b.ReportMetric(a.Seconds()/m.Seconds(), "ratio")
		})
	}
}

func moatCmd(b *testing.B, cfg string) *exec.Cmd {
	cmd := exec.Command(testutil.BuildMoat(b), cfg)
	cmd.Env = testutil.MoatEnv(b)
	return cmd
}

// writeBenchConfig writes a config for servers, with the default global
// rate ceiling (100 calls/s) lifted so back-to-back calls are measured, not
// refused; extra adds top-level keys.
func writeBenchConfig(b *testing.B, servers map[string]any, extra ...map[string]any) string {
	b.Helper()
	top := map[string]any{"mcpServers": servers,
		"defaults": map[string]any{"policy": map[string]any{"global": map[string]any{"rate": "1000000/s", "burst": 1000000}}}}
	for _, e := range extra {
		for k, v := range e {
			top[k] = v
		}
	}
	data, err := json.Marshal(top)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "moat.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkToolsListSize compares the bytes of moat's tools/list with the
// sum of the upstreams' own tools/list for examples/moat.json: what the
// client's context holds before it asks for any group's tools.
func BenchmarkToolsListSize(b *testing.B) {
	root := testutil.RepoRoot(b)
	b.Setenv("MOAT_REPO", root)
	servers := map[string][]string{
		"everything": {testutil.NodeBin(b, testutil.EverythingBin), "stdio"},
		"files":      {testutil.NodeBin(b, "mcp-server-filesystem"), filepath.Join(root, "examples")},
		"testserver": {testutil.BuildTestServer(b), "-name", "testserver"},
	}
	upstreamBytes := 0
	for _, argv := range servers {
		cs := connectCmd(b, exec.Command(argv[0], argv[1:]...))
		res, err := cs.ListTools(context.Background(), nil)
		if err != nil {
			b.Fatal(err)
		}
		upstreamBytes += jsonSize(b, res.Tools)
	}
	viaMoat := connectCmd(b, moatCmd(b, filepath.Join(root, "examples", "moat.json")))
	// get_dynamic_tools' description names each group's state ("starting",
	// "ready, 13 tools"): measure once every group is ready, so the size
	// does not depend on how far their starts got.
	for group := range servers {
		res, err := viaMoat.CallTool(context.Background(), &mcp.CallToolParams{Name: "get_dynamic_tools", Arguments: map[string]any{"group": group}})
		if err != nil || res.IsError {
			b.Fatalf("group %s did not connect: %v", group, err)
		}
	}
	var moatBytes int
	for b.Loop() {
		res, err := viaMoat.ListTools(context.Background(), nil)
		if err != nil {
			b.Fatal(err)
		}
		moatBytes = jsonSize(b, res.Tools)
	}
	b.ReportMetric(float64(moatBytes), "moat_bytes")
	b.ReportMetric(float64(upstreamBytes), "upstreams_bytes")
	b.ReportMetric(float64(moatBytes)/float64(upstreamBytes), "ratio")
}

func jsonSize(b *testing.B, v any) int {
	data, err := json.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	return len(data)
}

func tenUpstreams(b *testing.B) string {
	server := testutil.BuildTestServer(b)
	servers := map[string]any{}
	for i := range 10 {
		name := fmt.Sprintf("s%02d", i)
		servers[name] = map[string]any{"description": "idle server " + name, "command": server, "args": []string{"-name", name}}
	}
	return writeBenchConfig(b, servers)
}

// benchSpawn times spawning moat on cfg, connecting a client and then
// ready, and reports the mean in ms/start.
func benchSpawn(b *testing.B, cfg string, ready func(context.Context, *mcp.ClientSession)) {
	bin := testutil.BuildMoat(b)
	env := testutil.MoatEnv(b)
	var total time.Duration
	for b.Loop() {
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.Command(bin, cfg)
		cmd.Env = env
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
		if err != nil {
			b.Fatal(err)
		}
		ready(ctx, cs)
		total += time.Since(t0)
		b.StopTimer()
		cs.Close()
		cancel()
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/start")
}

// BenchmarkStartToFirstToolsList times spawn → initialize → first
// tools/list answer with ten upstreams configured (goal ≤ 50 ms: moat
// answers from the config and does not wait for them).
func BenchmarkStartToFirstToolsList(b *testing.B) {
	benchSpawn(b, tenUpstreams(b), func(ctx context.Context, cs *mcp.ClientSession) {
		res, err := cs.ListTools(ctx, nil)
		if err != nil || len(res.Tools) != 2 {
			b.Fatalf("tools/list: %v", err)
		}
	})
}

// BenchmarkStartToAllConnected times spawn → every one of ten stdio
// upstreams connected and listed (get_dynamic_tools answers for each):
// what the sandbox and the servers' own start-up cost together.
func BenchmarkStartToAllConnected(b *testing.B) {
	benchSpawn(b, tenUpstreams(b), func(ctx context.Context, cs *mcp.ClientSession) {
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Go(func() {
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "get_dynamic_tools", Arguments: map[string]any{"group": fmt.Sprintf("s%02d", i)}})
				if err != nil || res.IsError {
					b.Errorf("group s%02d did not connect: %v", i, err)
				}
			})
		}
		wg.Wait()
	})
}

// BenchmarkIdleRSS reports moat's own resident memory with ten idle
// upstreams connected (the servers are not counted), the proportional
// memory (PSS) of each server's launcher, which shares the moat binary's
// pages, and moat with all its launchers together, as RSS summed (which
// counts the shared pages once per process) and as PSS.
func BenchmarkIdleRSS(b *testing.B) {
	cmd := moatCmd(b, tenUpstreams(b))
	cs := connectCmd(b, cmd)
	for i := range 10 {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "get_dynamic_tools", Arguments: map[string]any{"group": fmt.Sprintf("s%02d", i)}})
		if err != nil || res.IsError {
			b.Fatalf("group s%02d did not connect: %v", i, err)
		}
	}
	var rss float64
	for b.Loop() {
		time.Sleep(10 * time.Millisecond)
		rss = vmRSSMiB(b, cmd.Process.Pid)
	}
	b.ReportMetric(rss, "rss_MiB")
	var pss, launchersRSS float64
	launchers := 0
	for _, pid := range testutil.Descendants(cmd.Process.Pid) {
		argv, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !strings.Contains(string(argv), "\x00sandbox-exec") {
			continue
		}
		launchers++
		pss += pssMiB(b, pid)
		launchersRSS += vmRSSMiB(b, pid)
	}
	if launchers < 10 {
		b.Fatalf("%d launchers, want one per server (10) and maybe one idle", launchers)
	}
	b.ReportMetric(pss/float64(launchers), "launcher_pss_MiB")
	b.ReportMetric(rss+launchersRSS, "total_rss_MiB")
	b.ReportMetric(pssMiB(b, cmd.Process.Pid)+pss, "total_pss_MiB")
}

// pssMiB is process pid's proportional set size in MiB: its private pages
// and its share of the pages it shares.
func pssMiB(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Pss:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				b.Fatal(err)
			}
			return float64(kb) / 1024
		}
	}
	b.Fatalf("no Pss in /proc/%d/smaps_rollup", pid)
	return 0
}

func vmRSSMiB(b *testing.B, pid int) float64 { return procStatusMiB(b, pid, "VmRSS") }

// procStatusMiB reads field (VmRSS, VmHWM) of /proc/pid/status in MiB.
func procStatusMiB(b *testing.B, pid int, field string) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				b.Fatal(err)
			}
			return float64(kb) / 1024
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// BenchmarkLargeResult times a 10 MiB text result (the test server's
// "large" tool), (a) directly and (b) through moat, alternating in one run,
// and reports moat's peak resident memory (VmHWM) against the payload: the
// copies a result passes through (the line read, the decoded result, the
// redacted and cleaned result, the encoded answer).
func BenchmarkLargeResult(b *testing.B) {
	const payload = 10 << 20
	server := testutil.BuildTestServer(b)
	d := connectCmd(b, exec.Command(server, "-name", "direct"))
	cmd := moatCmd(b, writeBenchConfig(b, map[string]any{"test": map[string]any{"description": "bench", "command": server, "args": []string{"-name", "test"}}}))
	m := connectCmd(b, cmd)
	ctx := context.Background()
	check := func(res *mcp.CallToolResult, err error) {
		if err != nil {
			b.Fatal(err)
		}
		if res.IsError || len(res.Content) != 1 || len(res.Content[0].(*mcp.TextContent).Text) != payload {
			b.Fatalf("the result is not %d bytes of text: error %v", payload, res.IsError)
		}
	}
	direct := func() {
		check(d.CallTool(ctx, &mcp.CallToolParams{Name: "large", Arguments: map[string]any{"bytes": payload}}))
	}
	viaMoat := func() {
		check(m.CallTool(ctx, &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": "large", "args": map[string]any{"bytes": payload}}}))
	}
	direct() // warm up both paths
	viaMoat()
	var a, mt time.Duration
	for b.Loop() {
		t0 := time.Now()
		direct()
		t1 := time.Now()
		viaMoat()
		a += t1.Sub(t0)
		mt += time.Since(t1)
	}
	b.ReportMetric(float64(a.Milliseconds())/float64(b.N), "direct_ms")
	b.ReportMetric(float64(mt.Milliseconds())/float64(b.N), "moat_ms")
	b.ReportMetric(mt.Seconds()/a.Seconds(), "ratio")
	hwm := procStatusMiB(b, cmd.Process.Pid, "VmHWM")
	b.ReportMetric(hwm, "moat_peak_rss_MiB")
	b.ReportMetric(hwm/(payload>>20), "peak_rss/payload")
}

// BenchmarkFirstCall times spawn → initialize → the first echo answered,
// (a) spawning the server directly and (b) spawning moat with the server as
// its only group, alternating in one run: what a client waits for when it
// starts. Moat starts the group once the client has initialized, in its
// sandbox, and answers call_dynamic_tool when the group is listed. Each
// iteration takes five samples of each and reports their medians: a start
// is noisy, and one start of a Node server takes most of a second.
func BenchmarkFirstCall(b *testing.B) {
	for _, tt := range []struct {
		name string
		argv func(b *testing.B) []string
	}{
		{"server=go-testserver", func(b *testing.B) []string { return []string{testutil.BuildTestServer(b), "-name", "first"} }},
		{"server=everything", func(b *testing.B) []string { return []string{testutil.NodeBin(b, testutil.EverythingBin), "stdio"} }},
	} {
		b.Run(tt.name, func(b *testing.B) {
			argv := tt.argv(b)
			cfg := writeBenchConfig(b, map[string]any{"first": map[string]any{"description": "bench", "command": argv[0], "args": argv[1:]}})
			bin, env := testutil.BuildMoat(b), testutil.MoatEnv(b)
			args := map[string]any{"message": "ping"}
			first := func(direct bool, cmd *exec.Cmd, params *mcp.CallToolParams) time.Duration {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				t0 := time.Now()
				cs, err := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
				if err != nil {
					b.Fatalf("connect %v: %v", cmd.Args, err)
				}
				res, err := cs.CallTool(ctx, params)
				took := time.Since(t0)
				if err != nil || res.IsError {
					b.Fatalf("first call through %v: %v %v", cmd.Args, err, res)
				}
				if direct {
					// server-everything does not exit when its stdin closes,
					// and go-sdk would wait 5 s before it signals: not what is
					// timed. Moat exits at once.
					_ = cmd.Process.Kill()
				}
				cs.Close()
				return took
			}
			var a, m []time.Duration
			for b.Loop() {
				for range 5 {
					a = append(a, first(true, exec.Command(argv[0], argv[1:]...), &mcp.CallToolParams{Name: "echo", Arguments: args}))
					cmd := exec.Command(bin, cfg)
					cmd.Env = env
					m = append(m, first(false, cmd, &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "first", "name": "echo", "args": args}}))
				}
			}
			b.ReportMetric(percentile(a, 0.5)/1000, "direct_ms")
			b.ReportMetric(percentile(m, 0.5)/1000, "moat_ms")
			b.ReportMetric(percentile(m, 0.5)/percentile(a, 0.5), "ratio")
		})
	}
}
