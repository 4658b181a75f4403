// Package clients is Moat's client-compatibility suite: it runs the real moat
// binary under the clients people use, not under go-sdk, whose request shapes
// differ from theirs.
//
// Claude Desktop, Cursor, VS Code and the MCP Inspector are built on the
// official TypeScript SDK. Its client sends no params on resources/list,
// resources/templates/list and prompts/list, and a numeric progressToken when
// a caller asks for progress (both once crashed Moat), and its own shapes for
// logging/setLevel, completion/complete and resources/subscribe. The driver testdata/clients/tsclient.mjs makes every request through
// the SDK's own methods (pinned in testdata/package.json), reports one JSON
// line per probe, and runs the same probes directly against the upstreams, so
// that the tests here can assert two things: Moat is still running after
// every probe, and what the client sees through Moat is what it would see
// without it (apart from the _meta.group Moat adds to listed items). A cold
// run asks before the upstreams can have connected, because a client asks
// once, at start. The Inspector CLI is driven as a user would run it.
//
// Run it with
//
//	go test ./test/clients
//
// Node and `make test-deps` are needed; without them the tests skip (and
// fail under CI=true). The package holds only tests; this file carries its
// documentation.
package clients
