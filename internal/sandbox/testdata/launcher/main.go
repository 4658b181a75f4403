// Command launcher is a plain (non-race) build of Moat's sandbox launcher for
// tests run with -race: ThreadSanitizer cannot live under the RLIMIT_AS the
// launcher applies to itself.
package main

import (
	"fmt"
	"os"

	"github.com/moatmcp/moat/internal/sandbox"
)

func main() {
	sandbox.MaybeRunLauncher()
	fmt.Fprintln(os.Stderr, "usage: launcher sandbox-exec (started by the sandbox tests only)")
	os.Exit(2)
}
