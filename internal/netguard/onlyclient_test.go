package netguard

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// forbiddenHTTP finds, in one parsed file, every way of getting an HTTP
// client other than netguard: building an http.Client or http.Transport
// (literal, new() or a zero-value variable) and the package-level defaults.
func forbiddenHTTP(fset *token.FileSet, f *ast.File) []string {
	name := ""
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == "net/http" {
			name = "http"
			if imp.Name != nil {
				name = imp.Name.Name
			}
		}
	}
	if name == "" || name == "_" {
		return nil
	}
	isHTTP := func(e ast.Expr, sels ...string) string {
		s, ok := e.(*ast.SelectorExpr)
		if !ok {
			return ""
		}
		if id, ok := s.X.(*ast.Ident); ok && id.Name == name {
			for _, want := range sels {
				if s.Sel.Name == want {
					return "http." + want
				}
			}
		}
		return ""
	}
	var found []string
	report := func(n ast.Node, what string) {
		found = append(found, fmt.Sprintf("%s: %s", fset.Position(n.Pos()), what))
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CompositeLit:
			if s := isHTTP(n.Type, "Client", "Transport"); s != "" {
				report(n, s+"{...}")
			}
		case *ast.CallExpr:
			if id, ok := n.Fun.(*ast.Ident); ok && id.Name == "new" && len(n.Args) == 1 {
				if s := isHTTP(n.Args[0], "Client", "Transport"); s != "" {
					report(n, "new("+s+")")
				}
			}
		case *ast.ValueSpec:
			if s := isHTTP(n.Type, "Client", "Transport"); s != "" {
				report(n, "var of type "+s)
			}
		case *ast.SelectorExpr:
			if s := isHTTP(n, "DefaultClient", "DefaultTransport", "Get", "Post", "Head", "PostForm"); s != "" {
				report(n, s)
			}
		}
		return true
	})
	return found
}

func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// TestOnlyNetguardBuildsHTTPClients keeps every HTTP request Moat makes on
// the guarded client: any other package that builds its own client or
// transport, or uses http.DefaultClient and friends, fails here.
func TestOnlyNetguardBuildsHTTPClients(t *testing.T) {
	root := moduleRoot(t)
	self := filepath.Join(root, "internal", "netguard")
	fset := token.NewFileSet()
	var found []string
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			base := d.Name()
			// third_party holds go-sdk, which Moat hands the guarded
			// client (as it did from the module cache): not Moat's code.
			if path == self || base == "testdata" || base == "vendor" || base == "third_party" || (path != root && strings.HasPrefix(base, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files++
		found = append(found, forbiddenHTTP(fset, f)...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("found no Go files to check")
	}
	for _, f := range found {
		t.Errorf("%s: use netguard.NewClient or netguard.NewOAuthClient instead, so the request gets the TLS, SSRF and size guards", f)
	}
}

// TestForbiddenHTTPFinds proves the checker above sees each pattern, so its
// silence on the module means something.
func TestForbiddenHTTPFinds(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filepath.Join("testdata", "badclient.go.txt"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range forbiddenHTTP(fset, f) {
		got = append(got, s[strings.LastIndex(s, ": ")+2:])
	}
	want := []string{
		"http.Client{...}", "http.Client{...}", "http.Transport{...}", "http.Transport{...}",
		"new(http.Client)", "var of type http.Client", "http.DefaultClient", "http.DefaultTransport",
		"http.Get", "http.Post", "http.Head", "http.PostForm",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("findings in testdata/badclient.go.txt (-want +got):\n%s", diff)
	}
}
