// Package vendored checks that the code Moat keeps in third_party is the
// upstream release it names plus exactly the patch kept beside it, so a
// reviewer reads one small diff instead of trusting a copied tree.
package vendored

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// dropped are the parts of the go-sdk release left out of third_party/go-sdk
// (third_party/README.md): examples, documents, tools and repository
// settings no package builds.
var dropped = []string{".agents/", ".devcontainer/", ".github/", "examples/", "docs/", "design/", "conformance/", "scripts/", "mkdocs.yaml", "internal/docs/", "internal/readme/"}

// releaseSums are the go.sum hashes of the go-sdk releases third_party may
// hold.
var releaseSums = map[string]string{
	"v1.8.0": "h1:KIvahhYqwtbeniWVPs3TcXEA7b8jEtwfBpOTAI+Urx4=",
}

func TestGoSDKIsTheReleasePlusThePatch(t *testing.T) {
	root := filepath.Join("..", "..")
	const module = "github.com/modelcontextprotocol/go-sdk"
	var m struct {
		Version string
		Replace *struct{ Path string }
	}
	goJSON(t, root, &m, "list", "-m", "-json", module)
	if m.Replace == nil || m.Replace.Path != "./third_party/go-sdk" {
		t.Fatalf("go.mod does not replace %s with ./third_party/go-sdk (replace: %+v); third_party/README.md says why it must", module, m.Replace)
	}
	var release struct{ Dir, Sum string }
	goJSON(t, root, &release, "mod", "download", "-json", module+"@"+m.Version)
	// The replace takes the module out of go.sum, so the release compared
	// with is pinned here: its hash as the public checksum database has it.
	if want := releaseSums[m.Version]; release.Sum != want {
		t.Fatalf("go-sdk %s from the module proxy has hash %s, want %q (sum.golang.org's): a moved go.mod version needs its hash here", m.Version, release.Sum, want)
	}

	// Undo the patch on a copy of the kept tree, then compare it with the
	// release file by file.
	undone := t.TempDir()
	if err := os.CopyFS(undone, os.DirFS(filepath.Join(root, "third_party", "go-sdk"))); err != nil {
		t.Fatal(err)
	}
	patch, err := filepath.Abs(filepath.Join(root, "third_party", "go-sdk.patch"))
	if err != nil {
		t.Fatal(err)
	}
	apply := exec.Command("git", "apply", "-R", patch)
	apply.Dir = undone
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("third_party/go-sdk.patch does not undo cleanly on third_party/go-sdk: %v\n%s", err, out)
	}
	kept := files(t, undone)
	for name := range files(t, release.Dir) {
		if _, ok := kept[name]; !ok {
			if !isDropped(name) {
				t.Errorf("%s of go-sdk %s is missing from third_party/go-sdk", name, m.Version)
			}
			continue
		}
		want, err := os.ReadFile(filepath.Join(release.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(kept[name], want) {
			t.Errorf("third_party/go-sdk/%s differs from go-sdk %s beyond third_party/go-sdk.patch", name, m.Version)
		}
		delete(kept, name)
	}
	for name := range kept {
		t.Errorf("third_party/go-sdk/%s is not in go-sdk %s nor added by the patch", name, m.Version)
	}
}

func goJSON(t *testing.T, dir string, v any, args ...string) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
}

func files(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	all := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		all[filepath.ToSlash(rel)] = data
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func isDropped(name string) bool {
	for _, d := range dropped {
		if name == d || strings.HasPrefix(name, d) {
			return true
		}
	}
	return false
}
