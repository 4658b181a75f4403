package redact

import (
	"strings"

	"github.com/moatmcp/moat/internal/lazyregexp"
)

// pattern is one well-known credential format. Every match begins with one
// of starts, so the expression (anchored with ^) is only tried where such a
// literal occurs; that keeps a scan of ordinary text at the speed of
// strings.Index. The expressions are strict on prefix and length so that
// ordinary text does not match.
type pattern struct {
	name      string
	starts    []string
	wordStart bool // the match must not follow a letter, digit or '_'
	re        *lazyregexp.Regexp
	block     bool // re matches a PEM header; the match runs to its END line
}

// maxPatternLen bounds a pattern match (PEM blocks aside), for the windows
// rescanned around markers.
const maxPatternLen = 300

// patterns are applied in this order.
var patterns = []*pattern{
	// A whole PEM block, or from BEGIN to the end of a truncated one.
	{name: "private-key", starts: []string{"-----BEGIN"}, block: true, re: lazyregexp.New(
		`^-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----`)},
	{name: "aws-access-key", starts: []string{"AKIA", "ASIA"}, wordStart: true, re: lazyregexp.New(
		`^(?:AKIA|ASIA)[A-Z0-9]{16}\b`)},
	{name: "github-token", starts: []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"}, wordStart: true, re: lazyregexp.New(
		`^(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})\b`)},
	// Personal, project and group access tokens (glpat-), 20 characters
	// or, in the newer routable format, more.
	{name: "gitlab-token", starts: []string{"glpat-"}, wordStart: true, re: lazyregexp.New(
		`^glpat-[A-Za-z0-9_.-]{20,250}`)},
	// Secret and restricted keys, live or test mode (a test key still
	// reads and writes the account's test data).
	{name: "stripe-key", starts: []string{"sk_live_", "sk_test_", "rk_live_", "rk_test_"}, wordStart: true, re: lazyregexp.New(
		`^[sr]k_(?:live|test)_[A-Za-z0-9]{24,247}`)},
	{name: "slack-token", starts: []string{"xox"}, wordStart: true, re: lazyregexp.New(
		`^xox[abprs]-[A-Za-z0-9-]{10,250}`)},
	// Project, service-account, admin and Anthropic-style keys with a long
	// tail, or the classic sk- followed by 32+ letters and digits.
	{name: "openai-key", starts: []string{"sk-"}, wordStart: true, re: lazyregexp.New(
		`^sk-(?:(?:proj|svcacct|admin|ant)-[A-Za-z0-9_-]{32,250}|[A-Za-z0-9]{32,250})`)},
	{name: "google-api-key", starts: []string{"AIza"}, wordStart: true, re: lazyregexp.New(
		`^AIza[0-9A-Za-z_-]{35}`)},
	// Header and payload are base64url JSON objects, so both start eyJ.
	{name: "jwt", starts: []string{"eyJ"}, wordStart: true, re: lazyregexp.New(
		`^eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*`)},
}

var (
	pemEnd  = lazyregexp.New(`^-----END[A-Z0-9 ]*PRIVATE KEY-----`)
	pemBody = lazyregexp.New(`^[A-Za-z0-9+/=\s\\:,-]*`)
)

// findAll returns the [start, end) of each non-overlapping match in s. It
// is linear in len(s): the next occurrence of each literal is remembered,
// not searched again for every candidate.
func (p *pattern) findAll(s string) [][2]int {
	var locs [][2]int
	next := make([]int, len(p.starts)) // next occurrence at or after i; -1: none
	for k := range next {
		next[k] = -2 // not searched yet
	}
	ends := nextIndex{s: s, lit: "-----END", at: -2}
	for i := 0; i < len(s); {
		j := -1
		for k, lit := range p.starts {
			if next[k] == -2 || next[k] >= 0 && next[k] < i {
				next[k] = -1
				if x := strings.Index(s[i:], lit); x >= 0 {
					next[k] = i + x
				}
			}
			if next[k] >= 0 && (j < 0 || next[k] < j) {
				j = next[k]
			}
		}
		if j < 0 {
			break
		}
		if p.wordStart && j > 0 && isWord(s[j-1]) {
			i = j + 1
			continue
		}
		loc := p.re.FindStringIndex(s[j:])
		if loc == nil || loc[1] == 0 {
			i = j + 1
			continue
		}
		end := j + loc[1]
		if p.block {
			end = ends.blockEnd(end)
		}
		locs = append(locs, [2]int{j, end})
		i = end
	}
	return locs
}

// nextIndex finds successive occurrences of lit in s without rescanning.
type nextIndex struct {
	s, lit string
	at     int // last found occurrence; -1 none left; -2 not searched
}

func (n *nextIndex) from(pos int) int {
	if n.at == -1 || n.at >= pos {
		return n.at
	}
	n.at = -1
	if x := strings.Index(n.s[pos:], n.lit); x >= 0 {
		n.at = pos + x
	}
	return n.at
}

// blockEnd returns where the PEM block whose header ends at pos ends: after
// its END line, or, when there is none, after the base64 body.
func (n *nextIndex) blockEnd(pos int) int {
	for at := n.from(pos); at >= 0; at = n.from(at + 1) {
		if m := pemEnd.FindStringIndex(n.s[at:]); m != nil {
			return at + m[1]
		}
	}
	return pos + len(pemBody.FindString(n.s[pos:]))
}

func isWord(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// PatternNames lists the credential patterns, for documentation and doctor.
func PatternNames() []string {
	names := make([]string, len(patterns))
	for i, p := range patterns {
		names[i] = p.name
	}
	return names
}
