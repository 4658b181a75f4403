// Package docs checks that the documents stay true to the code: every test
// SECURITY.md and THREAT_MODEL.md name as proof exists, and the systemd
// units README.md shows are ones systemd accepts.
package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	testName = regexp.MustCompile(`\b(?:Test|Fuzz|Benchmark)[A-Z][A-Za-z0-9_]+`)
	testFunc = regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark)[A-Za-z0-9_]+)\(`)
)

func TestEveryNamedTestExists(t *testing.T) {
	root := filepath.Join("..", "..")
	defined := map[string]bool{}
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if path != root && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, m := range testFunc.FindAllSubmatch(data, -1) {
			defined[string(m[1])] = true
		}
		return nil
	})
	for _, doc := range []string{"SECURITY.md", "THREAT_MODEL.md", "README.md"} {
		data, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range testName.FindAllString(string(data), -1) {
			if name == "TestName" { // the placeholder in "go test -run TestName"
				continue
			}
			if !defined[name] {
				t.Errorf("%s names %s as proof, but no such test exists", doc, name)
			}
		}
	}
}
