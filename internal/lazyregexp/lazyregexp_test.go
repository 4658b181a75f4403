package lazyregexp

import (
	"strings"
	"sync"
	"testing"
)

func TestCompiledOnFirstUse(t *testing.T) {
	if !inTest {
		t.Fatal("a test binary is not recognised: a bad expression would surface only at its first use")
	}
	r := &Regexp{expr: `^a(b+)c$`} // as New makes it outside tests
	if r.rx != nil {
		t.Fatal("compiled before use")
	}
	if !r.MatchString("abbc") || r.MatchString("ac") {
		t.Error("MatchString")
	}
	if got := r.FindStringIndex("abc"); len(got) != 2 || got[1] != 3 {
		t.Errorf("FindStringIndex = %v", got)
	}
	if got := New(`b+`).ReplaceAllString("abbc", "x"); got != "axc" {
		t.Errorf("ReplaceAllString = %q", got)
	}
	if got := New(`b+`).FindString("abbc"); got != "bb" {
		t.Errorf("FindString = %q", got)
	}
}

// A bad expression panics at New in a test binary, naming the expression.
func TestBadExpressionFailsTests(t *testing.T) {
	defer func() {
		if p := recover(); p == nil || !strings.Contains(strings.ToLower(fmtAny(p)), "missing closing )") {
			t.Errorf("New(`(`) in a test: panic %v, want regexp's error", p)
		}
	}()
	New(`(`)
}

func fmtAny(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	if e, ok := v.(error); ok {
		return e.Error()
	}
	return ""
}

// Calls that race to the first use compile the expression once and all
// match (run with -race).
func TestConcurrentFirstUse(t *testing.T) {
	r := &Regexp{expr: `^x+$`}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if !r.MatchString("xxx") {
				t.Error("no match")
			}
		})
	}
	wg.Wait()
}
