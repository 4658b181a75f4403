package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzSeeds returns the contents of the seed files of fuzz target in the
// repository's testdata/fuzz/<target>/, and fails when there are none: a
// target without seeds would fuzz from nothing and replay nothing in make
// test.
func FuzzSeeds(f *testing.F, target string) [][]byte {
	f.Helper()
	dir := filepath.Join(RepoRoot(f), "testdata", "fuzz", target)
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) == 0 {
		f.Fatalf("no seeds in %s", dir)
	}
	seeds := make([][]byte, 0, len(files))
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, data)
	}
	return seeds
}
