// Package attacks is Moat's attack-regression suite: each test runs the real
// moat binary (built by testutil.BuildMoat) against a hostile upstream or
// hostile input, and asserts two things: the attack fails in a way a user
// would notice, and the audit log records it (read after moat stops, and
// accepted by `moat audit verify --allow-unsealed`). Each test's comment
// names the SECURITY.md row it proves.
//
// The hostile upstreams are testdata/testserver and testdata/hostile; every
// server listens on loopback only, and no test sends a packet off
// 127.0.0.0/8 (the SSRF test runs moat in an empty network namespace).
//
// Run it with
//
//	go test -race ./test/attacks
//
// The package holds only tests; this file carries its documentation.
package attacks
