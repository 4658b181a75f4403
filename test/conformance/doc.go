// Package conformance runs the official MCP conformance suite
// (npm @modelcontextprotocol/conformance 0.1.13, pinned in
// testdata/package.json) against Moat, so that `make test` notices when Moat
// stops being transparent to what the protocol requires.
//
// Why it exists: Moat sits between every client and every server. Its own
// tests check what Moat means to do; the suite checks, with the checks the
// SDK authors maintain, what a client and a server actually see. Running it
// in two ways in the same test makes the comparison fair:
//
//   - directly: the fixture upstream testdata/conformanceserver, which
//     implements the suite's fixed scenario names (the suite's own
//     reference server is not shipped on npm), behind the stdio→HTTP bridge
//     supergateway 4.0.0 (the suite's server mode speaks only streamable
//     HTTP);
//   - behind Moat: the same bridge in front of `moat CONFIG`, whose one
//     upstream is that fixture over stdio. The bridge starts one process per
//     HTTP session, so every scenario meets a cold moat that has only just
//     started connecting its upstream: nothing waits for it to warm up.
//
// Every scenario that passes directly must pass behind Moat, except those
// in baseline.yaml, each with its reason: Moat shows its client two tools
// (get_dynamic_tools, call_dynamic_tool), so scenarios that call an upstream
// tool by name cannot pass by design. A baselined scenario that passes, or
// that fails for another reason than the baseline says, fails the test too,
// so the baseline stays honest. Scenarios the fixture cannot pass even
// directly (they test the HTTP server, which is the bridge's) are listed in
// the baseline's "direct" section.
//
// The suite's client scenarios test Moat's upstream side: the suite starts a
// scenario server and runs testdata/conformanceclient, which starts moat with
// that server as its one upstream and drives moat like a model would.
//
// A scenario passes when none of its checks is FAILURE or WARNING (the rule
// of the suite's --expected-failures). The test logs a score table, direct
// against behind Moat, from the same run:
//
//	go test -count=1 -run TestConformance -v ./test/conformance/
//
// Everything listens on 127.0.0.1 only (Node listeners through a preload,
// see suite_test.go), and the bridges and their per-session children are
// stopped by process group when each phase ends.
package conformance
