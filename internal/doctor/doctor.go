// Package doctor runs the checks behind `moat doctor`: is this setup safe,
// and does it work? Run returns a Report of Checks, each OK, Warn or Fail
// with what to do about it; WriteText and the Report's JSON form present it.
//
// Doctor starts every enabled stdio server once, through the real sandbox,
// and connects to every enabled remote server once, so what it reports is
// what `moat serve` would get on this machine: the resolved command, the
// protocol version, the tools, and which sandbox protections the kernel
// enforced for that very child.
//
// Nothing in a Report ever holds a secret value: config errors never carry
// them, literal credentials in the config are named by place only, and every
// message passes through a redactor that knows the values the config's
// ${secret:NAME} references resolved to.
package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/redact"
	"github.com/moatmcp/moat/internal/sandbox"
	"github.com/moatmcp/moat/internal/secrets"
	"github.com/moatmcp/moat/internal/upstream"
)

// Status is the verdict of one Check.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn" // works, but less safe or less useful than it could be
	Fail Status = "fail" // broken, or unsafe enough that Moat refuses it
)

// Symbol is how WriteText marks a status.
func (s Status) Symbol() string {
	switch s {
	case OK:
		return "✓"
	case Warn:
		return "⚠"
	}
	return "✗"
}

// Sections of a Report, in the order WriteText prints them. Per-server
// sections are "server NAME".
const (
	SectionConfig  = "config"
	SectionSecrets = "secrets"
	SectionAudit   = "audit log"
	SectionMachine = "machine"
)

// Check is one line of the report.
type Check struct {
	Section string `json:"section"`          // SectionConfig, ..., or "server NAME"
	Server  string `json:"server,omitempty"` // the server's name for per-server checks
	Name    string `json:"name"`             // stable identifier, e.g. "config.valid", "server.reachable"
	Status  Status `json:"status"`
	Message string `json:"message"`
	// Details are further lines (every problem of an invalid config).
	Details []string `json:"details,omitempty"`
	Fix     string   `json:"fix,omitempty"` // what to do, when Status is not OK
	// Protections is the whole sandbox report of a server's child (on
	// "server.sandbox") or of the machine (on "machine.base"), for scripts.
	Protections []sandbox.Protection `json:"protections,omitempty"`
}

// Report is everything doctor found.
type Report struct {
	Config string  `json:"config"` // the config file checked
	Checks []Check `json:"checks"`
}

// Count returns how many checks have status s.
func (r *Report) Count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// Failed reports whether any check failed.
func (r *Report) Failed() bool { return r.Count(Fail) > 0 }

// MarshalJSON adds a summary to the checks, so scripts need not count.
func (r *Report) MarshalJSON() ([]byte, error) {
	type plain Report
	return json.Marshal(struct {
		*plain
		Summary map[Status]int `json:"summary"`
	}{(*plain)(r), map[Status]int{OK: r.Count(OK), Warn: r.Count(Warn), Fail: r.Count(Fail)}})
}

// WriteText prints r for people: one line per check, grouped by section,
// with each fix indented below it, and a summary line.
func WriteText(w io.Writer, r *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "moat doctor: %s\n", r.Config)
	section := ""
	for _, c := range r.Checks {
		if c.Section != section {
			section = c.Section
			fmt.Fprintf(&b, "\n%s\n", title(section))
		}
		fmt.Fprintf(&b, "  %s %s\n", c.Status.Symbol(), c.Message)
		for _, d := range c.Details {
			fmt.Fprintf(&b, "      %s\n", d)
		}
		if c.Fix != "" {
			fmt.Fprintf(&b, "      fix: %s\n", c.Fix)
		}
	}
	fmt.Fprintf(&b, "\n%d ok, %d %s, %d %s\n", r.Count(OK), r.Count(Warn), plural(r.Count(Warn), "warning"), r.Count(Fail), plural(r.Count(Fail), "problem"))
	_, err := io.WriteString(w, b.String())
	return err
}

func title(section string) string {
	if name, ok := strings.CutPrefix(section, "server "); ok {
		return fmt.Sprintf("Server %q", name)
	}
	return strings.ToUpper(section[:1]) + section[1:]
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// Options say what to check and give doctor the parts that cmd/moat wires.
type Options struct {
	// ConfigPath is the config file, absolute (see config.ResolvePath).
	ConfigPath string
	// Getenv looks up ${VAR} and the OTEL_* variables of the trace
	// exporter; nil means os.LookupEnv.
	Getenv func(string) (string, bool)
	// Home is the user's home directory, where dynamic-mcp left its tokens;
	// "" skips that check.
	Home string
	// OpenStore opens the secret store with the config's secrets.backend
	// ("" or "auto", "keychain", "file"); nil means secrets.Open with
	// MOAT_PASSPHRASE for the file store. It must never prompt.
	OpenStore func(ctx context.Context, backend string) (*secrets.Store, error)
	// SecretsDir is the encrypted file store's directory whose permissions
	// are checked; "" means secrets.DefaultDir.
	SecretsDir string
	// HTTPClient builds the guarded client of a remote server (required to
	// check remote servers); OAuth its OAuth handler, or nil.
	HTTPClient func(s *config.Server) (*http.Client, error)
	OAuth      func(s *config.Server) (auth.OAuthHandler, error)
	// AuditPath is the audit log's path when the config has no audit.path;
	// "" means auditlog.DefaultPath.
	AuditPath string
	// ConnectTimeout bounds each phase of a connect (start, initialize,
	// listing); 0 means upstream.DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// Progress, when set, is called as each server's check finishes, with
	// the number done so far; calls never overlap.
	Progress func(server string, done, total int)
	// Probe reports what this machine can enforce; nil means sandbox.Probe.
	Probe func() sandbox.Report
	// GatewaySocket is where a gateway of this user listens; "" means
	// socket.DefaultPath.
	GatewaySocket string
	// Tokens lists the names of the gateway tokens the secret store holds
	// (moat token); nil skips that check.
	Tokens func(ctx context.Context, s *secrets.Store) ([]string, error)
	// Now is the time certificates are judged at; nil means time.Now.
	Now func() time.Time
	// OIDCClient reaches gateway.oidc's issuer; nil means the gateway's
	// own (oidcverify.NewClient).
	OIDCClient *http.Client
	// OAuthClient builds the client that reaches a server's authorization
	// server (netguard.NewOAuthClient); nil skips the token_exchange
	// discovery.
	OAuthClient func(s *config.Server) (*http.Client, error)
}

// Run performs every check. It returns when all servers have answered or
// timed out; ctx cancels the whole run.
func Run(ctx context.Context, o Options) *Report {
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = upstream.DefaultConnectTimeout
	}
	if o.Probe == nil {
		o.Probe = sandbox.Probe
	}
	d := &run{o: o, red: redact.New(), probe: o.Probe()}
	d.checkConfigFile()
	d.checkSecretStore(ctx)
	d.loadConfig()
	d.checkLiterals()
	d.checkDynamicMCP()
	d.checkServers(ctx)
	d.checkGateway()
	d.checkMetrics()
	d.checkOIDC(ctx)
	d.checkAudit(ctx)
	d.checkTracing(ctx)
	d.checkMachine()
	// Checks run in the order their inputs become known; people read them
	// by section.
	slices.SortStableFunc(d.checks, func(a, b Check) int { return sectionRank(a) - sectionRank(b) })
	r := &Report{Config: o.ConfigPath, Checks: d.checks}
	for i := range r.Checks {
		c := &r.Checks[i]
		c.Message, c.Fix = d.red.String(c.Message), d.red.String(c.Fix)
		for j := range c.Details {
			c.Details[j] = d.red.String(c.Details[j])
		}
	}
	return r
}

func (d *run) now() time.Time {
	if d.o.Now != nil {
		return d.o.Now()
	}
	return time.Now()
}

// run is the state of one Run.
type run struct {
	o     Options
	red   *redact.Redactor
	store *secrets.Store // nil when it cannot be opened
	cfg   *config.Config // nil when the config does not load
	// perUser is what each per-user server takes per identity (its
	// ${secret:} names); unshared, those with no shared value stored.
	perUser  map[string][]string
	unshared map[string]bool
	probe    sandbox.Report // what this machine can enforce
	checks   []Check
}

func (d *run) add(c Check) { d.checks = append(d.checks, c) }

// sectionRank orders sections: config, secrets, the servers (already in name
// order), the gateway, the metrics, the audit log, tracing, the machine.
func sectionRank(c Check) int {
	switch c.Section {
	case SectionConfig:
		return 0
	case SectionSecrets:
		return 1
	case SectionGateway:
		return 3
	case SectionMetrics:
		return 4
	case SectionAudit:
		return 5
	case SectionTracing:
		return 6
	case SectionMachine:
		return 7
	}
	return 2
}
