package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/moatmcp/moat/internal/lazyregexp"
)

var (
	varName    = lazyregexp.New(`^[A-Za-z_][A-Za-z0-9_]*$`)
	secretName = lazyregexp.New(`^[A-Za-z0-9_.-]+$`)
)

// expansion is where a string being expanded came from, for messages.
type expansion struct {
	path  string // JSON pointer of the string
	off   int    // its offset in the file
	where string // e.g. `server "files" args[1]`
	// srv records the values of ${secret:NAME} for redaction. nil where a
	// secret may not be used: in paths and policies, which are logged,
	// audited and printed by `moat policy check`.
	srv *Server
	// argv marks a stdio server's command and args: the child's
	// /proc/PID/cmdline, which every local user can read, so no secret.
	argv bool
	// shared marks a per-user server's value that is the gateway's own
	// (token_exchange.client_secret): its secrets come from the shared
	// store, not each identity's.
	shared bool
}

// expand replaces every ${NAME} with the environment variable NAME and every
// ${secret:NAME} with the stored secret, in one pass: replaced text is never
// scanned again. Anything else starting with "${" is a problem, so no literal
// placeholder ever reaches a child process or a server.
func (c *checker) expand(s string, at expansion) (string, bool) {
	var out strings.Builder
	ok := true
	rest := s
	for {
		i := strings.Index(rest, "${")
		if i < 0 {
			out.WriteString(rest)
			break
		}
		out.WriteString(rest[:i])
		rest = rest[i:]
		j := strings.IndexByte(rest, '}')
		if j < 0 {
			c.ps.add(at.path, at.off, fmt.Sprintf("unterminated %q in %s", rest, at.where),
				"close it with \"}\": write ${NAME} or ${secret:NAME}")
			return "", false
		}
		ref := rest[2:j]
		rest = rest[j+1:]
		val, found := c.resolve(ref, at)
		if !found {
			ok = false
			continue
		}
		out.WriteString(val)
	}
	return out.String(), ok
}

// resolve returns the value of one reference (the text between "${" and "}").
func (c *checker) resolve(ref string, at expansion) (string, bool) {
	if name, isSecret := strings.CutPrefix(ref, "secret:"); isSecret {
		if !secretName.MatchString(name) {
			c.ps.add(at.path, at.off, fmt.Sprintf("invalid secret name %q in %s", name, at.where),
				"secret names use letters, digits, '_', '.' and '-'")
			return "", false
		}
		if at.argv {
			c.ps.add(at.path, at.off, fmt.Sprintf("${secret:%s} in %s would put the secret on the server's command line, "+
				"which every local user can read (/proc/PID/cmdline)", name, at.where),
				fmt.Sprintf(`pass it in "env" instead, e.g. "env": {"API_TOKEN": "${secret:%s}"}, under the variable the server reads; `+
					"a server that takes a secret only as an argument exposes it to every process on the host: ask its authors for an environment variable", name))
			return "", false
		}
		if at.srv == nil {
			c.ps.add(at.path, at.off, fmt.Sprintf("${secret:%s} cannot be used in %s", name, at.where),
				"secrets are expanded only in env, url, headers, oauth_client_id and token_exchange.client_secret, where Moat redacts them; use ${VAR} or a literal here")
			return "", false
		}
		resolve, fix := c.opts.Secret, fmt.Sprintf("store it with `moat secret set %s`", name)
		if at.srv.PerUser && c.opts.UserSecret != nil && !at.shared {
			// Its error names the identity and the command.
			srv := at.srv.Name
			resolve, fix = func(name string) (string, error) { return c.opts.UserSecret(srv, name) }, ""
		}
		if resolve == nil {
			c.ps.add(at.path, at.off, fmt.Sprintf("${secret:%s} in %s: secret references need the secret store", name, at.where),
				"run moat with its secret store available")
			return "", false
		}
		v, err := resolve(name)
		if err != nil {
			c.ps.add(at.path, at.off, fmt.Sprintf("secret %q used in %s cannot be read: %v", name, at.where, err), fix)
			return "", false
		}
		if v != "" && !slices.Contains(at.srv.SecretValues, v) {
			at.srv.SecretValues = append(at.srv.SecretValues, v)
		}
		c.sawSecret = true
		return v, true
	}
	if !varName.MatchString(ref) {
		c.ps.add(at.path, at.off, fmt.Sprintf("invalid reference %q in %s", "${"+ref+"}", at.where),
			"write ${NAME} (letters, digits and '_', not starting with a digit) or ${secret:NAME}; there is no default or escape syntax")
		return "", false
	}
	v, ok := c.getenv(ref)
	if !ok {
		lower := strings.ToLower(ref)
		c.ps.add(at.path, at.off, fmt.Sprintf("${%s} is not set (used in %s)", ref, at.where),
			unsetHint(ref, lower, at.argv))
		return "", false
	}
	return v, true
}

// unsetHint is the fix for an unset ${NAME}: export it, or keep it in the
// secret store, which command and args cannot refer to.
func unsetHint(ref, lower string, argv bool) string {
	if argv {
		return fmt.Sprintf("export %s before starting moat; if it is a secret, pass it to the server in \"env\" as ${secret:%s} "+
			"(after `moat secret set %s`) rather than on its command line", ref, lower, lower)
	}
	return fmt.Sprintf("export %s before starting moat, or store it with `moat secret set %s` and write ${secret:%s}", ref, lower, lower)
}
