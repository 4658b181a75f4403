package config

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Generous bounds: a callback must come within wait; "no callback" is
// judged over quiet, several debounce periods long.
const (
	testDebounce = 100 * time.Millisecond
	wait         = 10 * time.Second
	quiet        = 800 * time.Millisecond
)

type watched struct {
	path    string
	changes chan struct{}
	ready   chan struct{}
}

// startWatch runs Watch on path until the test ends.
func startWatch(t *testing.T, path string) *watched {
	t.Helper()
	w := &watched{path: path, changes: make(chan struct{}, 100), ready: make(chan struct{}, 10)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := watch(ctx, path, testDebounce, func() { w.changes <- struct{}{} }, func() { w.ready <- struct{}{} }); err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	w.waitReady(t)
	return w
}

func (w *watched) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-w.ready:
	case <-time.After(wait):
		t.Fatal("the watch was not established")
	}
}

func (w *watched) expectChange(t *testing.T, what string) {
	t.Helper()
	select {
	case <-w.changes:
	case <-time.After(wait):
		t.Fatalf("no callback within %v after %s", wait, what)
	}
}

func (w *watched) expectQuiet(t *testing.T, what string) {
	t.Helper()
	select {
	case <-w.changes:
		t.Fatalf("unexpected callback after %s", what)
	case <-time.After(quiet):
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestWatchWriteInPlace(t *testing.T) {
	p := writeConfig(t, `{"mcpServers": {}}`)
	w := startWatch(t, p)
	write(t, p, `{"mcpServers": {"a": {}}}`)
	w.expectChange(t, "writing the file in place")
	w.expectQuiet(t, "one write")
}

func TestWatchAtomicRenameSave(t *testing.T) {
	p := writeConfig(t, `{"mcpServers": {}}`)
	w := startWatch(t, p)
	for i := range 3 { // the first save replaces the original inode; later ones must still be seen
		tmp := filepath.Join(filepath.Dir(p), ".moat.json.swp")
		write(t, tmp, `{"mcpServers": {}}`)
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
		w.expectChange(t, "an atomic rename save #"+string(rune('1'+i)))
	}
}

func TestWatchDeleteAndRecreate(t *testing.T) {
	p := writeConfig(t, `{"mcpServers": {}}`)
	w := startWatch(t, p)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	w.expectChange(t, "deleting the file")
	write(t, p, `{"mcpServers": {}}`)
	w.expectChange(t, "re-creating the file")
	write(t, p, `{"mcpServers": {"x": {}}}`)
	w.expectChange(t, "writing the re-created file")
}

func TestWatchBurstGivesOneCallback(t *testing.T) {
	p := writeConfig(t, `{"mcpServers": {}}`)
	w := startWatch(t, p)
	for range 10 {
		write(t, p, `{"mcpServers": {}}`)
	}
	w.expectChange(t, "a burst of 10 writes")
	w.expectQuiet(t, "the burst's first callback")
}

func TestWatchIgnoresOtherFiles(t *testing.T) {
	p := writeConfig(t, `{"mcpServers": {}}`)
	w := startWatch(t, p)
	write(t, filepath.Join(filepath.Dir(p), "other.json"), "{}")
	write(t, p+".bak", "{}")
	w.expectQuiet(t, "writing other files in the same directory")
}

func TestWatchSymlinkTarget(t *testing.T) {
	real := writeConfig(t, `{"mcpServers": {}}`)
	link := filepath.Join(t.TempDir(), "moat.json")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, link)
	write(t, real, `{"mcpServers": {"a": {}}}`)
	w.expectChange(t, "writing the symlink's target")
}

func TestWatchSurvivesDirectoryRemoval(t *testing.T) {
	old := rewatchInterval
	rewatchInterval = 50 * time.Millisecond
	t.Cleanup(func() { rewatchInterval = old })
	dir := filepath.Join(t.TempDir(), "conf")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "moat.json")
	write(t, p, `{"mcpServers": {}}`)
	w := startWatch(t, p)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, p, `{"mcpServers": {}}`)
	w.waitReady(t)
	// Changes seen before the loss, or the one Watch reports after
	// re-establishing the watch, may both arrive; what matters is that
	// edits after it are seen.
	w.expectChange(t, "the directory came back")
	for len(w.changes) > 0 {
		<-w.changes
	}
	time.Sleep(quiet) // let any pending debounce fire before the final edit
	for len(w.changes) > 0 {
		<-w.changes
	}
	write(t, p, `{"mcpServers": {"b": {}}}`)
	w.expectChange(t, "an edit after the watch was re-established")
}

func TestWatchMissingDirectory(t *testing.T) {
	err := Watch(context.Background(), filepath.Join(t.TempDir(), "nope", "moat.json"), 0, func() {})
	if err == nil {
		t.Error("Watch on a missing directory returned nil, want an error")
	}
}
