package hygiene

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/moatmcp/moat/internal/lazyregexp"
)

// hiddenInstructionPatterns are phrasings typical of tool poisoning: text
// addressed to the model rather than describing the tool.
var hiddenInstructionPatterns = []struct {
	re     *lazyregexp.Regexp
	reason string
}{
	{lazyregexp.New(`(?i)<\s*/?\s*(important|system|instructions?|secret|hidden|admin|critical|sudo)\b[^>]{0,80}>`),
		"contains an <IMPORTANT>-style tag addressed to the model"},
	{lazyregexp.New(`(?i)\b(ignore|disregard|forget|override)\s+(all\s+|any\s+|the\s+)?(previous|prior|above|earlier|other|system)\s+(instructions|prompts?|rules|directions)`),
		"tells the model to ignore its previous instructions"},
	{lazyregexp.New(`(?i)\b(do\s+not|don'?t|never)\s+(tell|inform|mention\s+(this\s+)?to|reveal\s+(this\s+)?to|notify|show)\s+(it\s+to\s+)?the\s+user`),
		"tells the model to keep something from the user"},
	{lazyregexp.New(`(?i)\b(before|instead of|prior to)\s+(using|calling)\s+(any|every|all|other)\s+tools?\b`),
		"tells the model how to use other tools"},
}

// Suspicious returns short reasons why s (a tool's name, title or
// description, as the upstream sent it) looks like it carries hidden
// instructions: invisible characters, <IMPORTANT>-style tags, "ignore
// previous instructions", "do not tell the user", and references to other
// groups or to their tools. It returns nil when nothing is found.
//
// Many tool and group names are ordinary words ("fail", "progress",
// "files"), so a name only counts as a reference where the text points at
// it (see [refers]); a name shaped like an identifier ("read_file",
// "create-issue", "sendEmail") counts wherever it stands as a whole word.
// Names shorter than 4 characters are not looked for.
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
		if refers(s, g) || qualifies(s, g, otherTools) {
			out = append(out, fmt.Sprintf("mentions another group, %q", Clean(g, 64)))
		}
	}
	seen := map[string]bool{}
	for _, t := range otherTools {
		if !seen[t] && refers(s, t) {
			seen[t] = true
			out = append(out, fmt.Sprintf("mentions %q, a tool of another group", Clean(t, 64)))
		}
	}
	return out
}

// refers reports whether s refers to name: anywhere as a whole word when
// name looks like an identifier, else only in a form that points at it as a
// tool, server or group rather than using the word in prose: after a verb
// such as "call" or "use", before "tool", "server" or "group", in quotes or
// backticks, before "(", or qualified ("files.fail", "files__fail").
func refers(s, name string) bool {
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
		// "__" qualifies a name by its group ("files__fail"): a boundary.
		left := start == 0 || !identByte(ls[start-1]) || strings.HasSuffix(ls[:start], "__")
		if left && (end == len(ls) || !identByte(ls[end])) {
			if identifierLike(name) || pointedAt(ls[:start], ls[end:]) {
				return true
			}
		}
		i = start + 1
	}
}

// qualifies reports whether s names one of tools inside group as
// "group.tool" or "group__tool" (the forms clients and proxies use to
// qualify a tool by its server).
func qualifies(s, group string, tools []string) bool {
	ls, lg := strings.ToLower(s), strings.ToLower(group)
	for i := 0; ; {
		k := strings.Index(ls[i:], lg)
		if k < 0 {
			return false
		}
		start, end := i+k, i+k+len(lg)
		if start == 0 || !identByte(ls[start-1]) {
			for _, sep := range []string{".", "__"} {
				r, ok := strings.CutPrefix(ls[end:], sep)
				if !ok {
					continue
				}
				for _, t := range tools {
					lt := strings.ToLower(t)
					if lt != "" && strings.HasPrefix(r, lt) && (len(r) == len(lt) || !identByte(r[len(lt)])) {
						return true
					}
				}
			}
		}
		i = start + 1
	}
}

var (
	// referringBefore ends with a verb that takes a tool as its object,
	// perhaps with an article: "call the", "then use", "run".
	referringBefore = lazyregexp.New(`\b(call|calls|calling|invoke|invokes|invoking|use|uses|using|run|runs|running|execute|executes|executing|trigger|triggers|triggering)\s+(the\s+|a\s+)?$`)
	// qualified ends with a qualifier: "files.", "files__".
	qualified = lazyregexp.New(`[a-z0-9_-](\.|__)$`)
	// referringAfter starts with a noun that names what the word is.
	referringAfter = lazyregexp.New(`^\s*(tool|tools|server|group|function|command|mcp)\b`)
)

// pointedAt reports whether a word between before and after (both lower
// case) is pointed at as a tool or group rather than used in prose.
func pointedAt(before, after string) bool {
	if before != "" && after != "" {
		if q := before[len(before)-1]; (q == '`' || q == '"' || q == '\'') && after[0] == q {
			return true
		}
	}
	return strings.HasPrefix(after, "(") || qualified.MatchString(before) ||
		referringBefore.MatchString(before) || referringAfter.MatchString(after)
}

// identifierLike reports whether name is shaped like an identifier rather
// than a word: it holds '_', '-', '.', a digit, or an upper-case letter
// after its first character.
func identifierLike(name string) bool {
	for i, c := range name {
		if c == '_' || c == '-' || c == '.' || unicode.IsDigit(c) || i > 0 && unicode.IsUpper(c) {
			return true
		}
	}
	return false
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

func identByte(c byte) bool {
	return c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 0x80
}
