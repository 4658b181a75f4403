// Package testutil gives Moat's tests their real parts: the Go test MCP server
// (testdata/testserver), the moat binary, the npm servers under
// testdata/node_modules, and /proc checks that no process was left behind.
//
// Binaries are built once per test binary and cached under
// $TMPDIR/moat-test-<uid>/, keyed by a hash of their sources, so that
// `go test ./...` running many packages at once builds each at most once.
//
// When a real part is missing (no Node, npm packages not installed), helpers
// skip the test with a loud "SKIP (missing real part)" message on a developer
// machine, and fail it when CI=true: in CI a skip would hide a broken setup.
// `make test-deps` (scripts/test-deps.sh) installs everything.
package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RepoRoot returns the directory holding Moat's go.mod, found by walking up
// from the working directory (go test runs each package in its own directory).
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

func repoRoot() (string, error) {
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = fmt.Errorf("find repository root: %w", err)
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = fmt.Errorf("find repository root: no go.mod above the working directory; run the tests from inside the Moat checkout")
				return
			}
			dir = parent
		}
	})
	return rootDir, rootErr
}

// BuildTestServer builds testdata/testserver (once per test binary) and
// returns the path of the binary.
func BuildTestServer(t testing.TB) string {
	t.Helper()
	return testServerBuild.get(t)
}

// BuildMoat builds ./cmd/moat (once per test binary) and returns the path of the binary.
func BuildMoat(t testing.TB) string {
	t.Helper()
	return moatBuild.get(t)
}

// BuildTestdataCommand builds the main package testdata/<dir> (once per test
// binary, cached like BuildTestServer) and returns the path of the binary;
// for the fixtures of one test package, such as testdata/conformanceserver.
func BuildTestdataCommand(t testing.TB, dir string) string {
	t.Helper()
	testdataBuildsMu.Lock()
	b, ok := testdataBuilds[dir]
	if !ok {
		b = &build{name: filepath.Base(dir), pkg: "./testdata/" + dir, sources: []string{"testdata/" + dir}, withModule: true}
		testdataBuilds[dir] = b
	}
	testdataBuildsMu.Unlock()
	return b.get(t)
}

var (
	testdataBuildsMu sync.Mutex
	testdataBuilds   = map[string]*build{}
)

var (
	testServerBuild = &build{name: "testserver", pkg: "./testdata/testserver", sources: []string{"testdata/testserver"}, withModule: true}
	// Moat's own sources are everything outside testdata, so any change to any
	// package it may import gives a fresh binary.
	moatBuild = &build{name: "moat", pkg: "./cmd/moat", sources: []string{"."}, withModule: true}
)

// build is one binary built at most once per process.
type build struct {
	name       string
	pkg        string
	sources    []string // directories, relative to the repository root, whose files key the cache
	withModule bool     // also hash go.mod and go.sum

	once sync.Once
	path string
	err  error
}

func (b *build) get(t testing.TB) string {
	t.Helper()
	b.once.Do(func() { b.path, b.err = b.build() })
	if b.err != nil {
		t.Fatalf("build %s: %v", b.pkg, b.err)
	}
	return b.path
}

func (b *build) build() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	sum, err := hashSources(root, b.sources, b.withModule)
	if err != nil {
		return "", err
	}
	dir, err := cacheDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, b.name+"-"+sum[:16])
	if fi, err := os.Stat(out); err == nil && fi.Mode().IsRegular() {
		return out, nil
	}
	// Build next to the final name and rename, so that packages tested in
	// parallel never run a half-written binary.
	tmp, err := os.CreateTemp(dir, b.name+".building-*")
	if err != nil {
		return "", fmt.Errorf("create temporary binary: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command(goTool(), "build", "-o", tmp.Name(), b.pkg)
	cmd.Dir = root
	if outb, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", b.pkg, err, outb)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", fmt.Errorf("install built binary: %w", err)
	}
	pruneOld(dir, b.name+"-", out)
	return out, nil
}

// goTool finds the go command; `go test` puts $GOROOT/bin first in PATH.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

// cacheDir returns $TMPDIR/moat-test-<uid>, created private to this user. It
// refuses a directory someone else owns or can write, because we execute what
// is in it.
func cacheDir() (string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("moat-test-%d", os.Getuid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create test binary cache: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("check test binary cache: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("test binary cache %s is not a directory private to uid %d; remove it and run the tests again", dir, os.Getuid())
	}
	return dir, nil
}

// pruneOld removes builds of the same binary from earlier sources. Only those
// untouched for an hour: another test binary may be about to run them.
func pruneOld(dir, prefix, keep string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if !strings.HasPrefix(e.Name(), prefix) || p == keep {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Hour {
			os.Remove(p)
		}
	}
}

// hashSources hashes the names and contents of the files under dirs (skipping
// .git, node_modules, testdata directories inside them, and tests), so that a
// cached binary is reused only while its sources are unchanged.
func hashSources(root string, dirs []string, withModule bool) (string, error) {
	h := sha256.New()
	add := func(rel string) error {
		f, err := os.Open(filepath.Join(root, rel))
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(h, "%s\x00", rel)
		_, err = io.Copy(h, f)
		return err
	}
	for _, d := range dirs {
		base := filepath.Join(root, d)
		err := filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() {
				switch e.Name() {
				case ".git", "node_modules":
					return filepath.SkipDir
				case "testdata":
					if p != base {
						return filepath.SkipDir
					}
				}
				return nil
			}
			if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), "_test.go") {
				return nil
			}
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			return add(rel)
		})
		if err != nil {
			return "", fmt.Errorf("hash sources in %s: %w", d, err)
		}
	}
	if withModule {
		for _, f := range []string{"go.mod", "go.sum"} {
			if err := add(f); err != nil && !os.IsNotExist(err) {
				return "", fmt.Errorf("hash %s: %w", f, err)
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// missing reports a real part that is not installed: a failure under CI=true,
// a loud skip elsewhere.
func missing(t testing.TB, what string) {
	t.Helper()
	msg := fmt.Sprintf("SKIP (missing real part): %s; run `make test-deps` (scripts/test-deps.sh)", what)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s [CI=true: a missing real part is a failure]", msg)
	}
	t.Skip(msg)
}

// RequireNode skips (or, under CI=true, fails) the test when node is not on PATH.
func RequireNode(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		missing(t, "node is not on PATH (Node.js 20 or newer is needed)")
	}
}

// SystemdTool returns the path of one of systemd's own tools
// (systemd-socket-activate, systemd-analyze), skipping (or, under CI=true,
// failing) the test when it is not installed.
func SystemdTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, name+" is not on PATH (Debian/Ubuntu: the systemd package)")
	}
	return p
}

// NodeBin returns the path of testdata/node_modules/.bin/<name>, skipping (or,
// under CI=true, failing) the test when Node or the npm package is missing.
func NodeBin(t testing.TB, name string) string {
	t.Helper()
	RequireNode(t)
	p := filepath.Join(RepoRoot(t), "testdata", "node_modules", ".bin", name)
	if _, err := os.Stat(p); err != nil {
		missing(t, fmt.Sprintf("%s is not installed (testdata/node_modules is missing or stale)", p))
	}
	return p
}
