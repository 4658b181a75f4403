//go:build unix

package secrets

import "testing"

// UseCheapKDFInTests lowers the Argon2id costs of stores created from now
// on to the smallest ones, for tests of other packages that open encrypted
// stores in their own process: at 64 MiB and 3 passes, every Open costs
// seconds under the race detector. The header records the costs, so the
// code paths are the same. It panics outside a test binary, so a moat can
// never run with it.
func UseCheapKDFInTests() {
	if !testing.Testing() {
		panic("secrets: UseCheapKDFInTests called outside a test binary")
	}
	defaultKDF = kdfParams{time: 1, memory: 64, threads: 1}
}
