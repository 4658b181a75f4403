package doctor

import (
	"os"
	"testing"

	"github.com/moatmcp/moat/internal/secrets"
)

// TestMain makes the encrypted secret stores these tests open in their own
// process cheap to unlock (Argon2id at 64 MiB costs seconds per open under
// the race detector); moat processes the tests start keep the real costs.
func TestMain(m *testing.M) {
	secrets.UseCheapKDFInTests()
	os.Exit(m.Run())
}
