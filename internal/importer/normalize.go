package importer

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/moatmcp/moat/internal/lazyregexp"
)

var (
	varName = lazyregexp.New(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// defaulted is Claude Code's ${VAR:-default}.
	defaulted = lazyregexp.New(`^([A-Za-z_][A-Za-z0-9_]*):?-`)
	// bareVar is Gemini's $VAR (no braces).
	bareVar = lazyregexp.New(`^\$([A-Za-z_][A-Za-z0-9_]*)`)
)

// normalizer rewrites one source tool's variable syntax into Moat's:
// ${NAME} for the environment and ${secret:NAME} for the secret store.
type normalizer struct {
	format     string
	projectDir string
	inputs     map[string]bool // secret names that VS Code ${input:ID}s became
}

// value rewrites s. notes are conversions the user should know about
// (a dropped default); err means s holds a reference Moat cannot express,
// so the caller drops the value. The text is scanned once, left to right,
// and text outside references is copied byte for byte (no "}}" games).
func (n *normalizer) value(s string) (out string, notes []string, err error) {
	var b strings.Builder
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "${"):
			j := strings.IndexByte(s[i:], '}')
			if j < 0 {
				return "", nil, fmt.Errorf("unterminated %q", s[i:])
			}
			rep, note, err := n.ref(s[i+2 : i+j])
			if err != nil {
				return "", nil, err
			}
			if note != "" {
				notes = append(notes, note)
			}
			b.WriteString(rep)
			i += j + 1
		case n.format == FormatOpenCode && strings.HasPrefix(s[i:], "{env:"):
			j := strings.IndexByte(s[i:], '}')
			name := ""
			if j > 0 {
				name = s[i+5 : i+j]
			}
			if !varName.MatchString(name) {
				return "", nil, fmt.Errorf("OpenCode reference %q is not {env:NAME}", s[i:min(len(s), i+j+1)])
			}
			b.WriteString("${" + name + "}")
			i += j + 1
		case n.format == FormatOpenCode && strings.HasPrefix(s[i:], "{file:"):
			return "", nil, fmt.Errorf("OpenCode's {file:...} substitution has no Moat equivalent")
		case n.format == FormatGemini && bareVar.MatchString(s[i:]):
			m := bareVar.FindStringSubmatch(s[i:])
			b.WriteString("${" + m[1] + "}")
			i += len(m[0])
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String(), notes, nil
}

// ref rewrites the inside of one ${...}.
func (n *normalizer) ref(r string) (rep, note string, err error) {
	switch {
	case strings.HasPrefix(r, "secret:"):
		return "${" + r + "}", "", nil
	case strings.HasPrefix(r, "env:"):
		name := strings.TrimPrefix(r, "env:")
		if !varName.MatchString(name) {
			return "", "", fmt.Errorf("%q is not a usable environment variable name", name)
		}
		return "${" + name + "}", "", nil
	case strings.HasPrefix(r, "input:"):
		name := secretName(strings.TrimPrefix(r, "input:"))
		n.inputs[name] = true
		return "${secret:" + name + "}", "", nil
	}
	switch r {
	case "workspaceFolder", "workspaceRoot":
		if n.projectDir != "" {
			return n.projectDir, "${" + r + "} replaced by " + n.projectDir, nil
		}
	case "workspaceFolderBasename":
		if n.projectDir != "" {
			return filepath.Base(n.projectDir), "${" + r + "} replaced by " + filepath.Base(n.projectDir), nil
		}
	case "userHome":
		return "${HOME}", "", nil
	case "pathSeparator", "/":
		return string(filepath.Separator), "", nil
	}
	if varName.MatchString(r) {
		return "${" + r + "}", "", nil
	}
	if m := defaulted.FindStringSubmatch(r); m != nil {
		return "${" + m[1] + "}", fmt.Sprintf("the default in ${%s} is dropped: Moat needs %s set (or a ${secret:...})", r, m[1]), nil
	}
	return "", "", fmt.Errorf("${%s} has no Moat equivalent", r)
}

// secretName turns any text into a secret name: lowercase letters, digits,
// '_', '.' and '-', starting with a letter or digit, at most 64 characters.
func secretName(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.'
		switch {
		case ok:
			b.WriteRune(r)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
	}
	out := strings.Trim(b.String(), "-._")
	if len(out) > 64 {
		out = strings.TrimRight(out[:64], "-._")
	}
	if out == "" {
		out = "secret"
	}
	return out
}

var serverNameRE = lazyregexp.New(`^[A-Za-z0-9_.-]{1,64}$`)

// serverName makes name valid for Moat (1 to 64 of A-Z a-z 0-9 _ . -).
func serverName(name string) string {
	if serverNameRE.MatchString(name) && name != "." && name != ".." {
		return name
	}
	var b strings.Builder
	for _, r := range name {
		if r < 128 && serverNameRE.MatchString(string(r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), ".")
	if len(out) > 64 {
		out = out[:64]
	}
	if out == "" {
		out = "server"
	}
	return out
}
