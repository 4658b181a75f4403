package testutil

import (
	"os"
	"testing"

	"github.com/moatmcp/moat/internal/secrets"
)

// MainWithCheapKDF is the TestMain of packages whose tests open encrypted
// secret stores in their own process: Argon2id at its real cost (64 MiB)
// takes seconds per open under the race detector, so the stores they create
// use the smallest costs (the header records them: the code paths are the
// same). Moat processes the tests start keep the real costs.
func MainWithCheapKDF(m *testing.M) {
	secrets.UseCheapKDFInTests()
	os.Exit(m.Run())
}
