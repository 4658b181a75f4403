package redact

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// findSlowly is find by brute force, the reference the automaton must
// agree with: at each end position, the longest form that ends there (of
// equal ones, the first given), overlapping regions merged as find does.
func findSlowly(forms []form, s string) []span {
	var spans []span
	for i := range len(s) {
		best := -1
		for k, f := range forms {
			if strings.HasSuffix(s[:i+1], f.text) && (best < 0 || len(f.text) > len(forms[best].text)) {
				best = k
			}
		}
		if best < 0 {
			continue
		}
		sp := span{start: i + 1 - len(forms[best].text), end: i + 1, label: forms[best].label}
		for len(spans) > 0 && sp.start < spans[len(spans)-1].end {
			last := spans[len(spans)-1]
			spans = spans[:len(spans)-1]
			if last.start <= sp.start {
				sp.start, sp.label = last.start, last.label
			}
		}
		spans = append(spans, sp)
	}
	return spans
}

// TestAutomatonAgreesWithBruteForce: on forms that share prefixes and
// suffixes, occur inside one another and repeat, and on text built of
// their pieces, the automaton finds exactly what brute force finds.
func TestAutomatonAgreesWithBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "abcab\\x00\"é"
	word := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	for round := range 300 {
		var forms []form
		var names []string
		for k := range 1 + rng.IntN(12) {
			text := word(1 + rng.IntN(8))
			if k > 0 && rng.IntN(3) == 0 { // share a piece with an earlier form
				prev := forms[rng.IntN(len(forms))].text
				text = prev[:rng.IntN(len(prev)+1)] + text
			}
			forms = append(forms, form{text, k})
			names = append(names, fmt.Sprintf("n%d", k))
		}
		if rng.IntN(4) == 0 { // an exact duplicate under another name
			forms = append(forms, form{forms[0].text, len(forms)})
			names = append(names, "dup")
		}
		a := build(slices.Clone(forms), names)
		for range 20 {
			var b strings.Builder
			for range rng.IntN(10) {
				if rng.IntN(2) == 0 {
					f := forms[rng.IntN(len(forms))].text
					b.WriteString(f[rng.IntN(len(f)):])
				} else {
					b.WriteString(word(rng.IntN(4)))
				}
			}
			s := b.String()
			if got, want := find(a, s), findSlowly(forms, s); !slices.Equal(got, want) {
				t.Fatalf("round %d: forms %v, text %q:\nautomaton %v\nbrute force %v", round, forms, s, got, want)
			}
		}
	}
}

// BenchmarkCompile builds the automaton of 400 token values (50 people's
// current and previous access and refresh tokens of one server, say), and
// reports its size: what each Add of a gateway with that many costs.
func BenchmarkCompile(b *testing.B) {
	var secrets []secret
	for i := range 400 {
		secrets = append(secrets, secret{fmt.Sprintf("oauth-%d", i), fmt.Sprintf("xt-%016x%016x", rand.Uint64(), rand.Uint64())})
	}
	var a *automaton
	b.ReportAllocs()
	for b.Loop() {
		a = compile(secrets)
	}
	b.ReportMetric(float64(a.size())/(1<<20), "MB/automaton")
}

// size is roughly how many bytes a holds.
func (a *automaton) size() int {
	return 4*(len(a.root)+len(a.first)+len(a.edgeNext)+len(a.fail)+len(a.longest)+len(a.label)) + 2*len(a.edgeClass)
}
