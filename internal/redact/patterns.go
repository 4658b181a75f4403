package redact

import (
	"regexp"
	"strings"
)

// pattern is one well-known credential format. The expressions are strict
// on prefix and length so that ordinary text does not match; hints are
// literals of which at least one must occur before the expression runs.
type pattern struct {
	name  string
	hints []string
	re    *regexp.Regexp
}

func (p *pattern) present(s string) bool {
	for _, h := range p.hints {
		if strings.Contains(s, h) {
			return true
		}
	}
	return false
}

// patterns are checked in this order; a later one never matches inside an
// earlier one's marker, since markers contain '[' and ':'.
var patterns = []*pattern{
	{"private-key", []string{"PRIVATE KEY-----"}, regexp.MustCompile(
		// A whole PEM block, or from BEGIN to the end of a truncated one.
		`-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY-----|[A-Za-z0-9+/=\s\\:,-]*)`)},
	{"aws-access-key", []string{"AKIA", "ASIA"}, regexp.MustCompile(
		`\b(?:AKIA|ASIA)[A-Z0-9]{16}\b`)},
	{"github-token", []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"}, regexp.MustCompile(
		`\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})\b`)},
	{"slack-token", []string{"xox"}, regexp.MustCompile(
		`\bxox[abprs]-[A-Za-z0-9-]{10,250}`)},
	{"openai-key", []string{"sk-"}, regexp.MustCompile(
		// Project, service-account, admin and Anthropic-style keys with a
		// long tail, or the classic sk- followed by 32+ letters and digits.
		`\bsk-(?:(?:proj|svcacct|admin|ant)-[A-Za-z0-9_-]{32,250}|[A-Za-z0-9]{32,250})`)},
	{"google-api-key", []string{"AIza"}, regexp.MustCompile(
		`\bAIza[0-9A-Za-z_-]{35}`)},
	{"jwt", []string{"eyJ"}, regexp.MustCompile(
		// Header and payload are base64url JSON objects, so both start eyJ.
		`\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*`)},
}

// PatternNames lists the credential patterns, for documentation and doctor.
func PatternNames() []string {
	names := make([]string, len(patterns))
	for i, p := range patterns {
		names[i] = p.name
	}
	return names
}
