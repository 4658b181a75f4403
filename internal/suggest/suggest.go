// Package suggest proposes the word a person probably meant. It is every
// "did you mean" of Moat (config keys and values, policy, commands, flags,
// import tool names), so they all forgive the same typos.
package suggest

import (
	"fmt"
	"strings"
)

// Closest returns the word of known nearest to word when it is close: at
// most two edits away (one for words of up to four letters), where a swap
// of two adjacent letters counts as one edit; "" otherwise.
func Closest(word string, known []string) string {
	best, bestDist := "", 3
	if len(word) <= 4 {
		bestDist = 2
	}
	for _, k := range known {
		if d := distance(word, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// Hint is `did you mean "X"?` for the word of known that word probably
// means, or "": one that differs only in case (said so, since case
// matters), the closest one (see Closest, ignoring word's case), or, for
// words of four letters or more, the first one that word starts.
func Hint(word string, known []string) string {
	for _, k := range known {
		if strings.EqualFold(k, word) && k != word {
			return fmt.Sprintf("did you mean %q? (case matters)", k)
		}
	}
	lower := strings.ToLower(word)
	best := Closest(lower, known)
	if best == word {
		return ""
	}
	if best == "" && len(lower) >= 4 {
		for _, k := range known {
			if strings.HasPrefix(k, lower) {
				best = k
				break
			}
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("did you mean %q?", best)
}

// distance is the optimal string alignment distance between a and b
// (Levenshtein plus adjacent transpositions), in bytes; long words are
// simply far apart, so a hostile input costs little.
func distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
