package clients

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/testutil"
)

// driverTimeout bounds one driver run. The driver has its own, shorter
// deadline (so it still reports); this one only ends a hung node. A passing
// run takes seconds.
const driverTimeout = 4 * time.Minute

// maxShown bounds what a failure prints of one value or of moat's stderr.
const maxShown = 4096

// server is one mcpServers entry.
type server = map[string]any

// report is one line of the driver's output: one probe.
type report struct {
	Probe   string          `json:"probe"`
	OK      bool            `json:"ok"`
	Error   string          `json:"error"`
	Alive   bool            `json:"alive"`
	Session int             `json:"session"`
	Crash   *crash          `json:"crash"`
	Data    json.RawMessage `json:"data"`
	Done    bool            `json:"done"`
}

// crash is how moat ended, as the driver saw it.
type crash struct {
	Exit *struct {
		Code   *int    `json:"code"`
		Signal *string `json:"signal"`
	} `json:"exit"`
	Closed    bool   `json:"closed"`
	PingError string `json:"pingError"`
	Stderr    string `json:"stderr"`
}

func (c *crash) String() string {
	if c == nil {
		return "moat is gone (no details)"
	}
	how := "moat stopped answering (still running; ping: " + c.PingError + ")"
	switch {
	case c.Exit != nil && c.Exit.Code != nil:
		how = fmt.Sprintf("moat exited with status %d", *c.Exit.Code)
	case c.Exit != nil && c.Exit.Signal != nil:
		how = "moat was killed by " + *c.Exit.Signal
	case c.Closed:
		how = "moat closed its connection"
	}
	return how + "; its stderr:\n" + clip(c.Stderr)
}

// outcome is a request's answer or its error text.
type outcome struct {
	Result json.RawMessage `json:"result"`
	Error  string          `json:"error"`
}

func clip(s string) string {
	if len(s) > maxShown {
		return s[:maxShown] + "…"
	}
	return s
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return clip(string(b))
}

// requireSDK skips (or under CI=true fails) when the TypeScript SDK is not
// installed; node_modules may hold the servers but predate the SDK's pin.
func requireSDK(t *testing.T) {
	t.Helper()
	testutil.RequireNode(t)
	p := filepath.Join(testutil.RepoRoot(t), "testdata", "node_modules", "@modelcontextprotocol", "sdk", "package.json")
	if _, err := os.Stat(p); err != nil {
		msg := "SKIP (missing real part): the TypeScript SDK is not installed in testdata/node_modules; run `make test-deps` (scripts/test-deps.sh)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " [CI=true: a missing real part is a failure]")
		}
		t.Skip(msg)
	}
}

// command is how the driver starts a stdio server.
type command struct {
	Command string   `json:"command"`
	Args    []string `json:"args"`
}

// upstreams returns the two real servers every run uses: the Go test server
// (group ts) and the MCP reference server (group everything).
func upstreams(t *testing.T) map[string]command {
	return map[string]command{
		"ts":         {Command: testutil.BuildTestServer(t), Args: []string{"-name", "ts"}},
		"everything": {Command: testutil.NodeBin(t, testutil.EverythingBin), Args: []string{"stdio"}},
	}
}

func entry(description string, c command) server {
	return server{"description": description, "command": c.Command, "args": c.Args}
}

// runDriver runs testdata/clients/tsclient.mjs with spec and returns its
// reports. moat and the upstreams get testutil.MoatEnv (isolated HOME, no
// keychain, MOAT_LOG=debug, which the cancel probe reads).
func runDriver(t *testing.T, spec map[string]any) []report {
	t.Helper()
	requireSDK(t)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	specPath := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(specPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), driverTimeout)
	defer cancel()
	script := filepath.Join(testutil.RepoRoot(t), "testdata", "clients", "tsclient.mjs")
	cmd := exec.CommandContext(ctx, node, script, specPath)
	cmd.Env = testutil.MoatEnv(t)
	var stdout bytes.Buffer
	stderr := &testutil.SyncBuffer{}
	cmd.Stdout = &stdout
	cmd.Stderr = stderr
	cmd.WaitDelay = 10 * time.Second
	runErr := cmd.Run()

	var reports []report
	done := false
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		var r report
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Errorf("driver printed a line that is not JSON (%v): %s", err, clip(sc.Text()))
			continue
		}
		if r.Done {
			done = true
			if r.Error != "" {
				t.Errorf("driver: %s", clip(r.Error))
			}
			continue
		}
		reports = append(reports, r)
	}
	if runErr != nil || !done {
		t.Errorf("driver did not finish cleanly (%v); its stderr (tail):\n%s", runErr, tail(stderr.String()))
	}
	return reports
}

func tail(s string) string {
	if len(s) > maxShown {
		return "…" + s[len(s)-maxShown:]
	}
	return s
}

// check asserts what one probe's data must show.
type check func(t *testing.T, data json.RawMessage)

// runProbes makes one subtest per expected probe, in order, then one for any
// probe the driver reported beyond them. Each fails when moat was no longer
// running after the probe, when the probe itself failed, or when its check
// does.
func runProbes(t *testing.T, reports []report, expected []string, checks map[string]check) {
	t.Helper()
	byName := map[string]report{}
	var extra []string
	for _, r := range reports {
		if _, dup := byName[r.Probe]; !dup && !slices.Contains(expected, r.Probe) {
			extra = append(extra, r.Probe)
		}
		byName[r.Probe] = r
	}
	// One crash fails every probe that was in flight; its stderr is shown once.
	shown := map[string]string{}
	for _, name := range append(slices.Clone(expected), extra...) {
		t.Run(name, func(t *testing.T) {
			r, ok := byName[name]
			if !ok {
				t.Fatal("the driver reported nothing for this probe (see the driver's stderr above)")
			}
			if r.Session > 1 {
				t.Logf("ran on moat number %d: an earlier probe crashed it and the driver started it again", r.Session)
			}
			if !r.OK {
				t.Errorf("probe failed: %s", clip(r.Error))
			}
			if !r.Alive {
				key := fmt.Sprint(r.Session, r.Crash)
				if where, ok := shown[key]; ok {
					t.Fatalf("after this probe moat was not running: the crash shown in %s", where)
				}
				shown[key] = t.Name()
				// What the probe saw follows from the crash; checking it
				// would only add noise.
				t.Fatalf("after this probe moat was not running: %s", r.Crash)
			}
			if c := checks[name]; c != nil && len(r.Data) > 0 && string(r.Data) != "null" {
				c(t, r.Data)
			}
		})
	}
}

func decode(t *testing.T, raw json.RawMessage, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decode %s: %v", clip(string(raw)), err)
	}
}

// timeOfDay matches the creation time server-everything writes into its
// dynamic resources ("created at 9:10:34 AM"): the direct and the proxied
// read run at different moments.
var timeOfDay = regexp.MustCompile(`\b\d{1,2}:\d{2}:\d{2}(\s?[AP]M)?`)

// norm turns decoded JSON into what a user would compare: Moat's
// _meta.group and _meta.groups are dropped (and _meta with them when
// nothing else is left), times of day are masked, and a prompt argument's
// "required": false and a completion's "hasMore": false are dropped: the
// protocol gives both that default, and go-sdk omits them.
func norm(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if (k == "required" || k == "hasMore") && e == false {
				continue
			}
			if k == "_meta" {
				if m, ok := e.(map[string]any); ok {
					rest := map[string]any{}
					for mk, mv := range m {
						if mk != "group" && mk != "groups" {
							rest[mk] = norm(mv)
						}
					}
					if len(rest) > 0 {
						out[k] = rest
					}
					continue
				}
			}
			out[k] = norm(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = norm(e)
		}
		return out
	case string:
		return timeOfDay.ReplaceAllString(x, "<time>")
	}
	return v
}

func raw2any(t *testing.T, raw json.RawMessage) any {
	t.Helper()
	if len(raw) == 0 {
		return nil
	}
	var v any
	decode(t, raw, &v)
	return v
}

// same fails t when moat's answer and the upstream's differ after norm.
func same(t *testing.T, what string, moat, direct any) {
	t.Helper()
	m, d := norm(moat), norm(direct)
	if !reflect.DeepEqual(m, d) {
		t.Errorf("%s: moat's answer differs from the upstream's own\nthrough moat: %s\ndirect:       %s", what, show(m), show(d))
	}
}

// sameOutcome compares two outcomes: moat must answer where the upstream
// does, and answer the same; pick selects the part a user sees.
func sameOutcome(t *testing.T, what string, moat, direct outcome, pick func(any) any) {
	t.Helper()
	if direct.Error != "" {
		t.Errorf("%s: the upstream itself failed (the probe is wrong): %s", what, direct.Error)
		return
	}
	if moat.Error != "" {
		t.Errorf("%s: failed through moat: %s\n(directly it answers %s)", what, moat.Error, clip(string(direct.Result)))
		return
	}
	m, d := raw2any(t, moat.Result), raw2any(t, direct.Result)
	if pick != nil {
		m, d = pick(m), pick(d)
	}
	same(t, what, m, d)
}

func field(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// toolText is the text a user sees of a tool result.
func toolText(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var r struct {
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	}
	decode(t, raw, &r)
	var b strings.Builder
	for _, c := range r.Content {
		if c.Type == "text" {
			b.WriteString(c.Text)
		}
	}
	return b.String()
}

func itemKey(item map[string]any) string {
	for _, k := range []string{"uri", "uriTemplate", "name"} {
		if s, ok := item[k].(string); ok {
			return s
		}
	}
	return ""
}

// sameList compares moat's merged list with the upstreams' own lists: the
// same items, each as the upstream lists it, each tagged with its group.
func sameList(t *testing.T, moat []map[string]any, direct map[string][]map[string]any) {
	t.Helper()
	want := map[string]any{}
	owner := map[string]string{}
	for g, items := range direct {
		for _, it := range items {
			want[itemKey(it)] = norm(any(it))
			owner[itemKey(it)] = g
		}
	}
	got := map[string]any{}
	var badGroup []string
	for _, it := range moat {
		k := itemKey(it)
		got[k] = norm(any(it))
		if g, _ := field(any(it), "_meta", "group").(string); owner[k] != "" && g != owner[k] {
			badGroup = append(badGroup, fmt.Sprintf("%s: _meta.group %q, want %q", k, g, owner[k]))
		}
	}
	var missing, extra, differ []string
	for k := range want {
		if _, ok := got[k]; !ok {
			missing = append(missing, k)
		} else if !reflect.DeepEqual(got[k], want[k]) {
			differ = append(differ, fmt.Sprintf("%s\n  through moat: %s\n  direct:       %s", k, show(got[k]), show(want[k])))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	for _, l := range [][]string{missing, extra, differ, badGroup} {
		sort.Strings(l)
	}
	if len(missing)+len(extra)+len(differ)+len(badGroup) > 0 || len(moat) != len(got) {
		t.Errorf("moat lists %d items (%d distinct), the upstreams %d\nmissing through moat: %s\nonly through moat: %s\ndiffering: %s\nwrong group: %s",
			len(moat), len(got), len(want), show(first(missing)), show(first(extra)), clip(strings.Join(first(differ), "\n")), show(first(badGroup)))
	}
}

func first(l []string) []string {
	if len(l) > 10 {
		return append(l[:10:10], fmt.Sprintf("… and %d more", len(l)-10))
	}
	return l
}
