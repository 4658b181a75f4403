package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is the quiet time Watch waits for when given 0: editors
// write a file in several steps, and one reload should follow them all.
const DefaultDebounce = 250 * time.Millisecond

// rewatchInterval is how often Watch retries when its watch was lost (the
// directory removed, or the watcher failed).
var rewatchInterval = time.Second

// Watch calls changed once after each burst of changes to the config file
// at path, when no further change came for debounce. It watches the file's
// directory, not the file, so saves that replace the file (write a
// temporary file, rename it over the old one) and deleting and re-creating
// it are all seen; if path is a symlink, the target's directory is watched
// too. changed runs on Watch's goroutine, so calls never overlap; it should
// load and validate the file itself (the file may be gone or half-written).
//
// Watch blocks until ctx is done and then returns nil. It returns an error
// only if the directory cannot be watched at the start; later failures are
// logged and the watch is re-established.
func Watch(ctx context.Context, path string, debounce time.Duration, changed func()) error {
	return watch(ctx, path, debounce, changed, nil)
}

// watch is Watch with a hook called each time the watch is (re)established,
// which lets tests write only once the watcher can see it.
func watch(ctx context.Context, path string, debounce time.Duration, changed, testOnlyReady func()) error {
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	targets, err := watchTargets(path)
	if err != nil {
		return err
	}
	w, err := newDirWatcher(targets)
	if err != nil {
		return err
	}
	defer func() {
		if w != nil {
			w.Close()
		}
	}()
	if testOnlyReady != nil {
		testOnlyReady()
	}

	timer := time.NewTimer(debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		var lost bool
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			changed()
		case ev, ok := <-w.Events:
			switch {
			case !ok:
				lost = true
			case targets[filepath.Dir(ev.Name)] == filepath.Base(ev.Name):
				timer.Reset(debounce)
			case ev.Has(fsnotify.Remove|fsnotify.Rename) && targets[filepath.Clean(ev.Name)] != "":
				lost = true // a watched directory itself went away
			}
		case err, ok := <-w.Errors:
			if !ok {
				lost = true
				break
			}
			slog.Warn("config watcher error; still watching", "path", path, "err", err)
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				timer.Reset(debounce) // events were dropped: assume the file changed
			}
		}
		if lost {
			w.Close()
			if w = rewatch(ctx, path, targets); w == nil {
				return nil
			}
			if testOnlyReady != nil {
				testOnlyReady()
			}
			timer.Reset(debounce) // the file may have changed while unwatched
		}
	}
}

// watchTargets maps each directory to watch to the base name that matters
// in it: the config's own, and its symlink target's.
func watchTargets(path string) (map[string]string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: watch %s: %w", path, err)
	}
	targets := map[string]string{filepath.Dir(abs): filepath.Base(abs)}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		targets[filepath.Dir(real)] = filepath.Base(real)
	}
	return targets, nil
}

func newDirWatcher(targets map[string]string) (*fsnotify.Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("config: watch: %w", err)
	}
	for dir := range targets {
		if err := w.Add(dir); err != nil {
			w.Close()
			return nil, fmt.Errorf("config: watch %s: %w", dir, err)
		}
	}
	return w, nil
}

// rewatch retries until the directories can be watched again, or ctx is
// done (then it returns nil).
func rewatch(ctx context.Context, path string, targets map[string]string) *fsnotify.Watcher {
	slog.Warn("config watch lost; retrying", "path", path)
	t := time.NewTicker(rewatchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		w, err := newDirWatcher(targets)
		if err == nil {
			slog.Info("config watch re-established", "path", path)
			return w
		}
		if !errors.Is(err, os.ErrNotExist) {
			slog.Warn("config watch still failing", "path", path, "err", err)
		}
	}
}
