package proxy_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/testutil"
)

// groupList is the get_dynamic_tools description: the groups and their
// states, as the model reads them.
func groupList(t *testing.T, c *client) string {
	t.Helper()
	res, err := c.cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(res.Tools, func(t *mcp.Tool) bool { return t.Name == "get_dynamic_tools" })
	if i < 0 {
		t.Fatalf("no get_dynamic_tools in %v", res.Tools)
	}
	return res.Tools[i].Description
}

// TestStartingGroupSaysSo (issue 20, item 4): while a server's first start
// is slow (the test server "installs" until its gate file exists, as
// `npx -y` does while npm fetches), the group list the model reads says
// the group is starting, on its first start, and shows the server's last
// stderr line; once the start ends, the group serves without a restart.
func TestStartingGroupSaysSo(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "gate")
	c := start(t, cfgOf(stdio(t, "slow", "-start-gate", gate)), nil)

	var list string
	testutil.Eventually(t, "the group list to show the starting group's stderr line", func() bool {
		list = groupList(t, c)
		return strings.Contains(list, `last stderr line: "testserver slow: installing`)
	})
	for _, want := range []string{"- slow: test server slow (starting for ", "first start: a package manager may be installing it"} {
		if !strings.Contains(list, want) {
			t.Errorf("the group list lacks %q:\n%s", want, list)
		}
	}
	t.Logf("the model reads:\n%s", list)

	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	res := c.mustCall(t, "get_dynamic_tools", map[string]any{"group": "slow"})
	if res.IsError || !strings.Contains(text(res), `"name":"echo"`) {
		t.Fatalf("get_dynamic_tools after the slow start: isError=%v %.500s", res.IsError, text(res))
	}
	testutil.Eventually(t, "the group list to say the group is ready", func() bool {
		list = groupList(t, c)
		return strings.Contains(list, "- slow: test server slow (ready, ")
	})
}
