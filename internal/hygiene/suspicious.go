package hygiene

import (
	"fmt"
	"regexp"
	"strings"
)

// hiddenInstructionPatterns are phrasings typical of tool poisoning: text
// addressed to the model rather than describing the tool.
var hiddenInstructionPatterns = []struct {
	re     *regexp.Regexp
	reason string
}{
	{regexp.MustCompile(`(?i)<\s*/?\s*(important|system|instructions?|secret|hidden|admin|critical|sudo)\b[^>]{0,80}>`),
		"contains an <IMPORTANT>-style tag addressed to the model"},
	{regexp.MustCompile(`(?i)\b(ignore|disregard|forget|override)\s+(all\s+|any\s+|the\s+)?(previous|prior|above|earlier|other|system)\s+(instructions|prompts?|rules|directions)`),
		"tells the model to ignore its previous instructions"},
	{regexp.MustCompile(`(?i)\b(do\s+not|don'?t|never)\s+(tell|inform|mention\s+(this\s+)?to|reveal\s+(this\s+)?to|notify|show)\s+(it\s+to\s+)?the\s+user`),
		"tells the model to keep something from the user"},
	{regexp.MustCompile(`(?i)\b(before|instead of|prior to)\s+(using|calling)\s+(any|every|all|other)\s+tools?\b`),
		"tells the model how to use other tools"},
}

// Suspicious returns short reasons why s (a tool's name, title or
// description, as the upstream sent it) looks like it carries hidden
// instructions: invisible characters, <IMPORTANT>-style tags, "ignore
// previous instructions", "do not tell the user", and mentions of other
// groups or of their tools' names (names shorter than 4 characters are not
// looked for). It returns nil when nothing is found.
func Suspicious(s string, otherGroups []string, otherTools []string) []string {
	var out []string
	if n := countInvisible(s); n > 0 {
		out = append(out, fmt.Sprintf("contains %d invisible, bidi or control characters", n))
	}
	for _, p := range hiddenInstructionPatterns {
		if p.re.MatchString(s) {
			out = append(out, p.reason)
		}
	}
	for _, g := range otherGroups {
		if mentions(s, g) {
			out = append(out, fmt.Sprintf("mentions another group, %q", Clean(g, 64)))
		}
	}
	seen := map[string]bool{}
	for _, t := range otherTools {
		if !seen[t] && mentions(s, t) {
			seen[t] = true
			out = append(out, fmt.Sprintf("mentions %q, a tool of another group", Clean(t, 64)))
		}
	}
	return out
}

func countInvisible(s string) int {
	n := 0
	for _, r := range s {
		if r != '\n' && r != '\t' && r != '\r' && invisible(r) {
			n++
		}
	}
	return n
}

// mentions reports whether name occurs in s as a whole word (not inside a
// longer identifier), ignoring case.
func mentions(s, name string) bool {
	if len(name) < 4 {
		return false
	}
	ls, ln := strings.ToLower(s), strings.ToLower(name)
	for i := 0; ; {
		k := strings.Index(ls[i:], ln)
		if k < 0 {
			return false
		}
		start, end := i+k, i+k+len(ln)
		if (start == 0 || !identByte(ls[start-1])) && (end == len(ls) || !identByte(ls[end])) {
			return true
		}
		i = start + 1
	}
}

func identByte(c byte) bool {
	return c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 0x80
}
