package importer

import (
	"testing"

	"github.com/moatmcp/moat/internal/testutil"
)

func TestMain(m *testing.M) { testutil.MainWithCheapKDF(m) }
