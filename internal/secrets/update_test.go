package secrets

import (
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// TestUpdateIsOneStepAcrossStores: two stores on one directory, as two
// processes have, each increment a counter many times at once; with the
// read and the write under one lock, no increment is lost.
func TestUpdateIsOneStepAcrossStores(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	a := openFile(t, dir, "pass")
	b := openFile(t, dir, "pass")
	const each = 40
	var wg sync.WaitGroup
	for _, s := range []*Store{a, b} {
		wg.Go(func() {
			for range each {
				err := s.Update(t.Context(), "counter", func(cur Secret, found bool) (Secret, error) {
					n := 0
					if found {
						n, _ = strconv.Atoi(cur.Reveal())
					}
					return NewSecret(strconv.Itoa(n + 1)), nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	v, err := a.Get(t.Context(), "counter")
	if err != nil {
		t.Fatal(err)
	}
	if v.Reveal() != strconv.Itoa(2*each) {
		t.Fatalf("counter = %s after %d increments", v.Reveal(), 2*each)
	}

	// An error from f changes nothing.
	stop := errors.New("no")
	if err := a.Update(t.Context(), "counter", func(Secret, bool) (Secret, error) { return Secret{}, stop }); !errors.Is(err, stop) {
		t.Fatalf("Update with a failing f: %v", err)
	}
	if v, _ := b.Get(t.Context(), "counter"); v.Reveal() != strconv.Itoa(2*each) {
		t.Fatalf("a failed Update changed the value to %s", v.Reveal())
	}
}
