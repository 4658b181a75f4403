package clients

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestTypeScriptSDK runs one moat session under the TypeScript SDK client,
// with the upstreams also asked directly for comparison. One driver process
// runs every probe in order, so the package stays fast; each probe is a
// subtest. When a probe crashes moat, the driver starts it again and the later
// probes still run, so one crash does not hide the next bug.
func TestTypeScriptSDK(t *testing.T) {
	up := upstreams(t)
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]server{
		"ts":         entry("Go test server", up["ts"]),
		"everything": entry("MCP reference server", up["everything"]),
	})
	reports := runDriver(t, map[string]any{
		"mode":   "session",
		"moat":   command{Command: testutil.BuildMoat(t), Args: []string{cfg}},
		"direct": up,
	})
	runProbes(t, reports, []string{
		"initialize", "ping", "logging/setLevel", "tools/list", "warm-up",
		"tools/call/get_dynamic_tools", "tools/call/call_dynamic_tool",
		"progress/ts", "progress/everything", "cancel", "logging/message",
		"resources/list", "resources/templates/list", "prompts/list",
		"resources/read", "prompts/get", "completion/complete", "resources/subscribe",
		"sampling", "elicitation", "roots", "list_changed", "shutdown",
	}, sessionChecks)
}

// TestTypeScriptSDKColdStart asks a fresh moat everything at once right after
// the handshake, while its upstreams cannot have connected yet: they are held
// at a gate, a file the driver creates only once its requests have been
// written to moat. A client asks once at start and shows what it got, so
// these answers must already match the upstreams' own.
func TestTypeScriptSDKColdStart(t *testing.T) {
	up := upstreams(t)
	// Not beside the config: moat watches the config's directory.
	gate := filepath.Join(t.TempDir(), "gate")
	gated := func(description string, c command) server {
		// $0 is the gate; "$@" the real server.
		script := `while [ ! -e "$0" ]; do sleep 0.02; done; exec "$@"`
		return server{"description": description, "command": "/bin/sh", "args": append([]string{"-c", script, gate, c.Command}, c.Args...)}
	}
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]server{
		"ts":         gated("Go test server", up["ts"]),
		"everything": gated("MCP reference server", up["everything"]),
	})
	reports := runDriver(t, map[string]any{
		"mode":   "cold",
		"moat":   command{Command: testutil.BuildMoat(t), Args: []string{cfg}},
		"direct": up,
		"gate":   gate,
	})
	runProbes(t, reports, []string{
		"cold/resources/list", "cold/resources/templates/list", "cold/prompts/list",
		"cold/resources/read/ts", "cold/resources/read/everything",
		"cold/prompts/get/ts", "cold/prompts/get/everything",
		"cold/completion/complete", "cold/tools/call",
		"cold/list_changed/auto_refresh",
	}, coldChecks)
}

var sessionChecks = map[string]check{
	"initialize": func(t *testing.T, raw json.RawMessage) {
		var d struct {
			ServerInfo   struct{ Name string }
			Capabilities map[string]any
		}
		decode(t, raw, &d)
		if d.ServerInfo.Name != "moat" {
			t.Errorf("serverInfo.name = %q, want moat", d.ServerInfo.Name)
		}
		for _, c := range []string{"tools", "resources", "prompts", "logging", "completions"} {
			if _, ok := d.Capabilities[c]; !ok {
				t.Errorf("capabilities lack %s: %s", c, show(d.Capabilities))
			}
		}
		if field(d.Capabilities, "resources", "subscribe") != true {
			t.Errorf("capabilities.resources.subscribe is not true: %s", show(d.Capabilities))
		}
	},
	"tools/list": func(t *testing.T, raw json.RawMessage) {
		var d struct {
			Tools []struct {
				Name                 string
				Properties, Required []string
			}
		}
		decode(t, raw, &d)
		var names []string
		for _, tool := range d.Tools {
			names = append(names, tool.Name)
			if tool.Name == "call_dynamic_tool" && (!slices.Equal(tool.Properties, []string{"args", "group", "name"}) || !slices.Equal(tool.Required, []string{"group", "name"})) {
				t.Errorf("call_dynamic_tool takes %v (required %v), want args, group, name (required group, name)", tool.Properties, tool.Required)
			}
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"call_dynamic_tool", "get_dynamic_tools"}) {
			t.Errorf("tools/list = %v, want exactly call_dynamic_tool and get_dynamic_tools", names)
		}
	},
	"tools/call/get_dynamic_tools": func(t *testing.T, raw json.RawMessage) {
		var d struct{ Moat, Direct map[string][]string }
		decode(t, raw, &d)
		for g, want := range d.Direct {
			if !slices.Equal(d.Moat[g], want) {
				t.Errorf("get_dynamic_tools(%s) lists %v; the upstream lists %v", g, d.Moat[g], want)
			}
		}
	},
	"tools/call/call_dynamic_tool": func(t *testing.T, raw json.RawMessage) {
		var d struct {
			Cases []struct {
				Group, Name  string
				Moat, Direct outcome
			}
		}
		decode(t, raw, &d)
		for _, c := range d.Cases {
			sameOutcome(t, c.Group+" "+c.Name, c.Moat, c.Direct, nil)
		}
		if len(d.Cases) > 0 && d.Cases[0].Moat.Error == "" {
			if got := toolText(t, d.Cases[0].Moat.Result); got != "hello from the TS SDK" {
				t.Errorf("echo through moat = %q", got)
			}
		}
	},
	"progress/ts": func(t *testing.T, raw json.RawMessage) {
		var d struct {
			Notifications []struct{ Progress, Total float64 }
			Result        json.RawMessage
		}
		decode(t, raw, &d)
		checkProgress(t, d.Notifications)
		if got := toolText(t, d.Result); got != "done 3 steps" {
			t.Errorf("result = %q, want done 3 steps", got)
		}
	},
	"progress/everything": func(t *testing.T, raw json.RawMessage) {
		var d struct {
			Notifications []struct{ Progress, Total float64 }
			Result        json.RawMessage
		}
		decode(t, raw, &d)
		checkProgress(t, d.Notifications)
		if got := toolText(t, d.Result); !strings.HasPrefix(got, "Long running operation completed") {
			t.Errorf("result = %q", got)
		}
	},
	"cancel": func(t *testing.T, raw json.RawMessage) {
		var d struct {
			Aborted bool
			Error   *struct {
				Message          string
				UnexpectedResult any
			}
			UpstreamCancelled bool
			After             outcome
			LateResponses     []string
		}
		decode(t, raw, &d)
		switch {
		case !d.Aborted:
			t.Errorf("the call ended before the client aborted it (no progress arrived?): %s", show(d.Error))
		case d.Error == nil || d.Error.UnexpectedResult != nil:
			t.Errorf("the aborted call returned a result: %s", show(d.Error))
		case !strings.Contains(strings.ToLower(d.Error.Message), "abort"):
			t.Errorf("the aborted call failed with %q, want the SDK's abort error", d.Error.Message)
		}
		if !d.UpstreamCancelled {
			t.Error("the upstream never saw the cancellation (no \"slow: cancelled\" in moat's log within 30 s)")
		}
		if len(d.LateResponses) > 0 {
			t.Errorf("moat answered the cancelled request anyway (MCP: a cancelled request gets no response); the client saw: %s", show(d.LateResponses))
		}
		if d.After.Error != "" || d.After.Result == nil {
			t.Errorf("the call after the cancellation failed: %s", d.After.Error)
		} else if got := toolText(t, d.After.Result); got != "after cancel" {
			t.Errorf("the call after the cancellation = %q", got)
		}
	},
	"logging/message": func(t *testing.T, raw json.RawMessage) {
		var d struct {
			Arrived bool
			Logs    []map[string]any
		}
		decode(t, raw, &d)
		if !d.Arrived {
			t.Errorf("the upstream's log message never reached the client; it got %s", show(d.Logs))
		}
		for _, l := range d.Logs {
			if l["data"] == "log line through moat" && l["level"] != "warning" {
				t.Errorf("log message level = %v, want warning", l["level"])
			}
		}
	},
	"resources/list":           listCheck,
	"resources/templates/list": listCheck,
	"prompts/list":             listCheck,
	"resources/read":           casesCheck("uri", readContents),
	"prompts/get":              casesCheck("name", nil),
	"completion/complete":      casesCheck("ref", completion),
	"resources/subscribe": func(t *testing.T, raw json.RawMessage) {
		var d struct {
			Updated    bool
			Updates    []string
			Everything outcome
		}
		decode(t, raw, &d)
		if !d.Updated {
			t.Errorf("no notifications/resources/updated for ts://static/hello after subscribing and touching it; got %v", d.Updates)
		}
		if d.Everything.Error != "" {
			t.Errorf("subscribing to a server-everything resource: %s", d.Everything.Error)
		}
	},
	"sampling":    roundTripCheck,
	"elicitation": roundTripCheck,
	"roots": func(t *testing.T, raw json.RawMessage) {
		var d struct {
			Before, After map[string]string
			Seen          map[string]bool
			Added         string
		}
		decode(t, raw, &d)
		for _, g := range []string{"ts", "everything"} {
			if !strings.Contains(d.Before[g], "file:///tmp/moat-client-root-1") {
				t.Errorf("%s: the upstream got roots %q, want the client's file:///tmp/moat-client-root-1", g, d.Before[g])
			}
			if !d.Seen[g] {
				t.Errorf("%s: after the client added a root and sent roots/list_changed, the upstream still sees %q", g, d.After[g])
			}
		}
	},
	"list_changed": func(t *testing.T, raw json.RawMessage) {
		var d struct {
			ToolsChanged, FreshToolListed, GzipIsError, ResourcesChanged, NewResourceListed bool
			ToolsAfter, ResourcesLastRead, RefreshErrors, MoatLog                           []string
			GzipText                                                                        string
		}
		decode(t, raw, &d)
		if !d.ToolsChanged {
			t.Error("an upstream added a tool, but no notifications/tools/list_changed reached the client")
		} else if !d.FreshToolListed {
			t.Error("an upstream added a tool; re-reading get_dynamic_tools(ts) after each tools/list_changed never showed it")
		}
		if !slices.Equal(d.ToolsAfter, []string{"call_dynamic_tool", "get_dynamic_tools"}) {
			t.Errorf("tools/list after the change = %v", d.ToolsAfter)
		}
		if d.GzipIsError {
			t.Errorf("gzip-file-as-resource failed: %s", d.GzipText)
		}
		if !d.ResourcesChanged {
			t.Error("an upstream added a resource, but no notifications/resources/list_changed reached the client")
		} else if !d.NewResourceListed {
			t.Errorf("an upstream added a resource; re-reading resources/list after each resources/list_changed never showed it; last read: %v\nmoat's log of lists and of group everything:\n%s",
				d.ResourcesLastRead, strings.Join(d.MoatLog, "\n"))
		}
		if len(d.RefreshErrors) > 0 {
			t.Errorf("the SDK's list_changed handlers got errors: %v", d.RefreshErrors)
		}
	},
	"shutdown": func(t *testing.T, raw json.RawMessage) {
		var d struct {
			Exit *struct {
				Code   *int
				Signal *string
			}
		}
		decode(t, raw, &d)
		if d.Exit == nil || d.Exit.Code == nil || *d.Exit.Code != 0 {
			t.Errorf("after the client closed its stdin, moat ended with %s, want exit status 0", show(d.Exit))
		}
	},
}

// checkProgress wants some of the 3 steps' notifications, in order. Moat
// writes every progress notification the server sent before its result
// ahead of that result (internal/upstream progressOrder), but the
// TypeScript SDK drops progress that arrives in the same read as the
// result: it hands notifications to a microtask and handles the response,
// which removes the request's progress handler, at once. So a result that
// follows its last step closely can take that step's notification with it.
func checkProgress(t *testing.T, got []struct{ Progress, Total float64 }) {
	t.Helper()
	if len(got) == 0 {
		t.Fatal("no progress notification reached the client")
	}
	if len(got) < 3 {
		t.Logf("only %d of 3 progress notifications arrived before the result", len(got))
	}
	for i, n := range got {
		if n.Total != 3 || n.Progress < 1 || n.Progress > 3 || (i > 0 && n.Progress <= got[i-1].Progress) {
			t.Errorf("progress notifications %s: want steps of 1..3 out of 3, increasing", show(got))
			return
		}
	}
}

// listCheck compares a list probe: moat's merged list against the union of
// the upstreams' lists.
func listCheck(t *testing.T, raw json.RawMessage) {
	var d struct {
		Moat   []map[string]any
		Direct map[string][]map[string]any
	}
	decode(t, raw, &d)
	sameList(t, d.Moat, d.Direct)
}

// readContents is what a user sees of a read: the contents. go-sdk adds
// ttlMs and cacheScope to results, which no 2025-11-25 client reads.
func readContents(v any) any { return field(v, "contents") }

// completion is what a user sees of a completion.
func completion(v any) any { return field(v, "completion") }

// casesCheck compares each case of a probe that asked moat and the upstream
// the same thing; label names the case's field that identifies it.
func casesCheck(label string, pick func(any) any) check {
	return func(t *testing.T, raw json.RawMessage) {
		var d struct {
			Cases []map[string]json.RawMessage
		}
		decode(t, raw, &d)
		for _, c := range d.Cases {
			var m, dir outcome
			decode(t, c["moat"], &m)
			decode(t, c["direct"], &dir)
			what := string(c["group"]) + " " + string(c[label])
			if a, ok := c["argument"]; ok {
				what += " " + string(a)
			}
			sameOutcome(t, what, m, dir, pick)
		}
	}
}

// roundTripCheck compares a request an upstream sent to the client through
// moat with the same request made directly: the client must get the same
// request, and the upstream the same answer.
func roundTripCheck(t *testing.T, raw json.RawMessage) {
	var d map[string]struct {
		Moat, Direct struct {
			outcome
			Requests []map[string]any
		}
	}
	decode(t, raw, &d)
	for _, g := range []string{"ts", "everything"} {
		c, ok := d[g]
		if !ok {
			t.Errorf("%s: no data", g)
			continue
		}
		if len(c.Moat.Requests) != 1 {
			t.Errorf("%s: the client's handler ran %d times through moat, want once: %s", g, len(c.Moat.Requests), show(c.Moat.Requests))
		}
		// The SDK fills in elicitation's default mode only on its own copy.
		for _, r := range append(c.Moat.Requests, c.Direct.Requests...) {
			if r["mode"] == nil {
				r["mode"] = "form"
			}
		}
		same(t, g+": the request the client got", c.Moat.Requests, c.Direct.Requests)
		sameOutcome(t, g+": what the upstream made of the client's answer", c.Moat.outcome, c.Direct.outcome, rawResultKeysSorted)
	}
}

// rawResultKeysSorted re-encodes the JSON that "everything" prints after
// "Raw result: " with sorted keys: Moat forwards the answer's content as a
// JSON object, whose key order is not part of its meaning.
func rawResultKeysSorted(v any) any {
	content, _ := field(v, "content").([]any)
	for _, c := range content {
		item, _ := c.(map[string]any)
		text, _ := item["text"].(string)
		before, after, ok := strings.Cut(text, "Raw result: ")
		var parsed any
		if !ok || json.Unmarshal([]byte(after), &parsed) != nil {
			continue
		}
		sorted, _ := json.Marshal(parsed)
		item["text"] = before + "Raw result: " + string(sorted)
	}
	return v
}

var coldChecks = map[string]check{
	"cold/resources/list":            coldListCheck,
	"cold/resources/templates/list":  coldListCheck,
	"cold/prompts/list":              coldListCheck,
	"cold/resources/read/ts":         coldCheck(readContents),
	"cold/resources/read/everything": coldCheck(readContents),
	"cold/prompts/get/ts":            coldCheck(nil),
	"cold/prompts/get/everything":    coldCheck(nil),
	"cold/completion/complete":       coldCheck(completion),
	"cold/tools/call":                coldCheck(nil),
	"cold/list_changed/auto_refresh": func(t *testing.T, raw json.RawMessage) {
		var d struct {
			Converged       bool
			Refreshed, Want []string
			RefreshErrors   []string
		}
		decode(t, raw, &d)
		if !d.Converged {
			t.Errorf("a client refreshing on list_changed never got the upstreams' resources\nit has: %v\nwant:   %v", first(d.Refreshed), first(d.Want))
		}
		if len(d.RefreshErrors) > 0 {
			t.Errorf("the SDK's automatic refreshes failed: %v", d.RefreshErrors)
		}
	},
}

func coldListCheck(t *testing.T, raw json.RawMessage) {
	var d struct{ Moat, Direct outcome }
	decode(t, raw, &d)
	if d.Direct.Error != "" || d.Moat.Error != "" {
		t.Fatalf("listing failed: through moat: %q; directly: %q", d.Moat.Error, d.Direct.Error)
	}
	var m []map[string]any
	var dir map[string][]map[string]any
	decode(t, d.Moat.Result, &m)
	decode(t, d.Direct.Result, &dir)
	sameList(t, m, dir)
}

func coldCheck(pick func(any) any) check {
	return func(t *testing.T, raw json.RawMessage) {
		var d struct{ Moat, Direct outcome }
		decode(t, raw, &d)
		sameOutcome(t, "asked at start", d.Moat, d.Direct, pick)
	}
}
