// Package config loads Moat's configuration: dynamic-mcp's JSON format
// (mcpServers, ${VAR} expansion, timeouts), checked strictly against the
// embedded config-schema.json so the editor schema and the loader agree.
//
// [Load] refuses a file other users could change, then reads it with a
// parser that keeps positions and rejects duplicate keys; every problem
// in the file is reported at once as an [*Error], each with its JSON
// pointer, line, column and fix. ${VAR} and ${secret:NAME} are expanded in
// one pass, and an unset variable is an error, never a literal. [Watch]
// reports edits to the file, however an editor saves it.
//
// Moat's own keys (inherit_env, cwd, sandbox, allow_insecure_http,
// allow_private_network, tls, policy per server; defaults, audit, secrets
// and gateway at the top level) are optional, with safe defaults. Where secrets
// may go: ${secret:NAME} is expanded only in env, url, headers and
// oauth_client_id, whose values Moat redacts. A stdio server's command and
// args are its /proc/PID/cmdline, which every local user can read, and in
// paths (cwd, sandbox.fs, tls files, audit.path) and policies, which are
// logged and printed, only ${VAR} is expanded: a secret reference there is
// an error. Paths also
// expand a leading "~" or "~/" to $HOME (after ${VAR}, so HOME's own text is
// never expanded) and must then be absolute. A plain http:// url to a host
// other than loopback (127.0.0.0/8, ::1, localhost) needs
// "allow_insecure_http": true.
package config

import (
	"encoding/json"
	"os"
	"strings"
	"time"
)

// Transport is how Moat reaches an upstream server.
type Transport string

const (
	Stdio Transport = "stdio"
	HTTP  Transport = "http" // streamable HTTP
	SSE   Transport = "sse"  // legacy 2024-11-05 HTTP+SSE
)

// Default timeouts, as in dynamic-mcp.
const (
	DefaultToolTimeout     = 30 * time.Second
	DefaultResourceTimeout = 10 * time.Second
	DefaultPromptTimeout   = 10 * time.Second
)

// Config is a loaded, validated and expanded configuration.
type Config struct {
	Path    string             // absolute path of the file it was read from
	Hash    string             // hex SHA-256 of the file's bytes, for audit and reload
	Servers map[string]*Server // by name, enabled and disabled alike

	Defaults Defaults // key "defaults"
	Audit    Audit    // key "audit"
	Secrets  Secrets  // key "secrets"
	Gateway  Gateway  // key "gateway"
	Metrics  Metrics  // key "metrics"
}

// Metrics is the "metrics" block: where `moat serve` serves Prometheus
// metrics. It is top-level, not under "gateway", because a stdio moat
// serves them too; a listener off loopback borrows gateway.tls.
type Metrics struct {
	// Listen is key "listen", HOST:PORT; "" when the block is absent
	// (no metrics are served).
	Listen string
	// Tokens is key "tokens": names of gateway tokens (`moat token create
	// NAME`) whose bearer may scrape. When set, a scrape needs one of them;
	// a listener off loopback requires them.
	Tokens []string
	// TLS is set when Listen is off loopback: /metrics is then served over
	// HTTPS with gateway.tls.
	TLS bool
}

// DefaultSocketMode is gateway.socket_mode when the key is absent.
const DefaultSocketMode os.FileMode = 0o660

// Gateway is the "gateway" block: how `moat serve --listen unix:PATH`
// makes its socket and who may connect to it. The loader fills in
// SocketMode.
type Gateway struct {
	// SocketMode is key "socket_mode", an octal string from "0600" to
	// "0777" without the bit that lets other users connect (o+w);
	// DefaultSocketMode when not set.
	SocketMode os.FileMode
	// SocketGroup is key "socket_group": a group name or numeric gid the
	// socket is given to, checked for its form only (the gateway resolves
	// it); "" leaves the gateway's own group.
	SocketGroup string
	// Identities is key "identities", by name. Nil when the key is absent
	// (or empty): then only the gateway's own user may connect.
	Identities map[string]*Identity
	// TLS is key "tls": the certificate `moat serve --listen HOST:PORT`
	// serves; nil when absent (plain HTTP, on a loopback address only).
	TLS *GatewayTLS
	// AllowedOrigins is key "allowed_origins": the Origin header values an
	// HTTP request may carry (MCP clients send none; browsers do). Nil
	// refuses every request with an Origin.
	AllowedOrigins []string
	// OIDC is key "oidc": the issuer whose JWT access tokens the HTTP
	// listener accepts; nil when absent (moat tokens only).
	OIDC *GatewayOIDC
	// PerUserIdle is key "per_user_idle": how long an identity's own
	// sessions of per-user servers live unused; DefaultPerUserIdle when
	// not set.
	PerUserIdle time.Duration
}

// DefaultPerUserIdle is how long an identity's per-user servers stay up
// unused: a working session keeps them warm, a user gone for the day does
// not hold a process per server.
const DefaultPerUserIdle = 15 * time.Minute

// GatewayTLS is gateway.tls: the HTTP listener's certificate.
type GatewayTLS struct {
	// CertFile and KeyFile are keys "cert_file" and "key_file": absolute
	// paths of a PEM certificate chain and its private key, both required.
	CertFile, KeyFile string
	// MinVersion is key "min_version": "1.2" (the default) or "1.3".
	MinVersion string
}

// Identity is one entry of gateway.identities: who a peer of the gateway's
// socket is, and what that principal may see and use.
type Identity struct {
	Name string
	// UIDs is key "uids": peer uids that are this identity. No uid is
	// listed under two identities (the loader refuses it).
	UIDs []int
	// Groups is key "unix_groups" as written: group names or numeric
	// gids. A peer whose primary or supplementary groups include one is
	// this identity, unless its uid is listed under another.
	Groups []string
	// Servers is key "servers": the configured servers (groups) this
	// identity may see and use; nil when absent (every server), empty
	// when [] (none).
	Servers []string
	// Tokens is key "tokens": names of gateway tokens (`moat token
	// create NAME`) whose bearer is this identity over HTTP. No token is
	// listed under two identities (the loader refuses it).
	Tokens []string
	// OIDC is key "oidc": the JWT bearers (of gateway.oidc's issuer) that
	// are this identity; nil when absent.
	OIDC *IdentityOIDC
	// Policy is key "policy", kept raw with ${VAR} expanded in its string
	// values like a server's, or nil; policy.ParseIdentity parses it. It
	// holds only decision rules and "global" limits (per identity, over
	// all its calls).
	Policy json.RawMessage
}

// SharedBy names what makes id match more than one person ("several
// uids", "unix_groups", "oidc.groups", "oidc.scopes"), or "": each such
// person gets their own copy of a per-user server, but with the
// identity's secrets and login.
func (id *Identity) SharedBy() string {
	var by []string
	if len(id.UIDs) > 1 {
		by = append(by, "several uids")
	}
	if len(id.Groups) > 0 {
		by = append(by, "unix_groups")
	}
	if id.OIDC != nil && len(id.OIDC.Groups) > 0 {
		by = append(by, "oidc.groups")
	}
	if id.OIDC != nil && len(id.OIDC.Scopes) > 0 {
		by = append(by, "oidc.scopes")
	}
	return strings.Join(by, " and ")
}

// Defaults apply to every server.
type Defaults struct {
	// Sandbox is "defaults.sandbox" as written. The loader has already
	// merged it into every stdio server's Sandbox (a field the server sets
	// wins), so callers read Server.Sandbox, not this.
	Sandbox Sandbox
	// Policy is "defaults.policy", a JSON object kept raw (with ${VAR}
	// expanded in its strings) for the policy package, or nil. It is not
	// merged into Server.Policy: how a default and a server's own policy
	// combine is the policy package's decision.
	Policy json.RawMessage
}

// Audit is the "audit" block. The loader fills in Fsync and OnFailure.
type Audit struct {
	// Path of the audit log, with ~/ and ${VAR} expanded, absolute; "" means
	// the default, $XDG_STATE_HOME/moat/audit.jsonl (computed by the caller).
	Path       string
	Fsync      string // "always", "batch" (the default) or "off"
	OnFailure  string // "deny" (the default: refuse calls when the log cannot be written) or "continue"
	RecordArgs bool   // key "record_args": record (redacted) argument values, not just their shape
	Rotate     Rotate
	// CheckpointEvery is the number of records between signed checkpoints;
	// 0 means the audit package's default.
	CheckpointEvery int
	// Syslog, when set, also sends each record to syslog (RFC 5424):
	// "local", "unix:///path", "udp://host:port" or "tcp://host:port". The
	// file stays the source of truth.
	Syslog string
	// SyslogFormat is how each record is sent to Syslog: "json" (the
	// default, the audit line as written), "ocsf" or "cef".
	SyslogFormat string
}

// The audit.syslog_format values.
const (
	SyslogJSON = "json"
	SyslogOCSF = "ocsf"
	SyslogCEF  = "cef"
)

// Rotate is "audit.rotate"; zero fields mean "not by this criterion" for
// MaxSize and MaxAge, and "keep every rotated file" for Keep. Without a
// "rotate" block the loader fills in DefaultRotate.
type Rotate struct {
	MaxSize uint64        // key "max_size": a size
	MaxAge  time.Duration // key "max_age": a duration
	Keep    int           // key "keep": rotated files to keep
}

// DefaultRotate rotates the audit log at 64 MiB or after 30 days, whichever
// comes first, and keeps every rotated file: retention is the operator's
// decision, never a default that deletes evidence. Each file is sealed and
// chained to the next, and start-up reads only the current file's end.
var DefaultRotate = Rotate{MaxSize: 64 << 20, MaxAge: 30 * 24 * time.Hour}

// Secrets is the "secrets" block. The loader fills in Backend.
type Secrets struct {
	Backend string // "auto" (the default: keychain, else the file store), "keychain" or "file"
	// RequireEncryption (key "require_encryption") refuses the file store
	// protected by permissions only: without a key source, Moat fails.
	RequireEncryption bool
}

// Server is one upstream, with every ${VAR} already expanded.
type Server struct {
	Name        string
	Description string
	Type        Transport
	// TypeInferred is true when the file gave a url but no type: Moat then
	// tries streamable HTTP and falls back to legacy SSE, as the MCP spec
	// describes for backwards compatibility.
	TypeInferred bool

	// stdio
	Command string
	Args    []string
	Env     map[string]string
	// InheritEnv names the variables of Moat's own environment the child
	// also gets: exact names ("LANG") or prefixes ending in '*' ("NODE_*").
	InheritEnv []string
	// Cwd is the child's working directory: absolute, with ~/ and ${VAR}
	// expanded; "" means a private empty directory.
	Cwd string
	// RunAs is key "run_as": the user (name or uid, optionally ":group")
	// the child runs as, when Moat runs as root; "" means Moat's own.
	RunAs string
	// Sandbox is the server's "sandbox" block with "defaults.sandbox"
	// merged in (a field the server sets wins) and Mode filled in.
	Sandbox Sandbox

	// http and sse
	URL           string
	Headers       map[string]string
	OAuthClientID string
	OAuthScopes   []string
	// TokenExchange is key "token_exchange"; nil when absent.
	TokenExchange *TokenExchange
	// AllowInsecureHTTP permits a plain http:// url to a host that is not
	// loopback (key allow_insecure_http).
	AllowInsecureHTTP bool
	// AllowPrivateNetwork permits connections to RFC 1918 and ULA addresses
	// (key allow_private_network).
	AllowPrivateNetwork bool
	TLS                 TLS
	// SecretHeaders names, in file order, the headers whose value came
	// (even partly) from ${secret:NAME}, so they are never sent over plain
	// HTTP and are redacted by name. Set by the loader.
	SecretHeaders []string

	Enabled  bool
	Features Features
	Timeout  Timeouts

	// PerUser is key "per_user": on a gateway, each identity gets its own
	// session of this server (for stdio, its own process) with its own
	// ${secret:NAME} values (`moat secret set --identity ID NAME`), started
	// on its first use and stopped after Gateway.PerUserIdle unused. A
	// stdio moat serves one user, and runs it as any other server.
	PerUser bool

	// MaxMessageBytes (key "max_message_bytes") is the largest message Moat
	// reads from this server: one stdio line, one HTTP response body or one
	// server-sent event. A larger one fails the call it answers, and only
	// that call. The loader fills it in: the key's value, else twice the
	// largest max_result_bytes the policy allows, from
	// DefaultMaxMessageBytes to MaxMessageBytesCeiling. It is never smaller
	// than that max_result_bytes (the loader refuses such a config).
	MaxMessageBytes uint64

	// Policy is the server's "policy" object kept raw, with ${VAR} expanded
	// in every string value, or nil; the policy package parses it.
	// "defaults.policy" is not merged in (see Defaults.Policy).
	Policy json.RawMessage

	// SecretValues holds every non-empty value that a ${secret:NAME}
	// reference expanded to in this server, so logs and audit records can
	// redact them. Never print it.
	SecretValues []string
}

// Features are opt-out switches; each defaults to true.
type Features struct {
	Tools, Resources, Prompts bool
}

// Timeouts bound each kind of upstream request. Zero never occurs in
// Tools, Resources or Prompts of a loaded config: the loader fills in the
// defaults.
type Timeouts struct {
	Tools, Resources, Prompts time.Duration
	// Connect (key "connect") bounds one start of the server: spawning
	// its process (or its first HTTP request), initialize and reading its
	// lists. Zero means the key is absent: the upstream package's
	// defaults apply, a generous one for a stdio server's first start
	// (when a package manager may be installing it) and a shorter one for
	// later restarts.
	Connect time.Duration
}

// Sandbox limits a stdio server's child process. A zero field means "not
// set": the sandbox package's default applies.
type Sandbox struct {
	Mode        string        // "best-effort" (the default) or "strict"; filled in by the loader for stdio servers
	Memory      uint64        // key "memory": bytes, the server's cgroup memory limit (RLIMIT_AS where no cgroup can be made)
	CPU         time.Duration // key "cpu": CPU time over the child's life (RLIMIT_CPU)
	MaxFiles    uint64        // key "max_files": open files (RLIMIT_NOFILE), at least 16
	MaxProcs    uint64        // key "max_procs": processes (RLIMIT_NPROC, per user), at least 1
	MaxFileSize uint64        // key "max_file_size": largest file the child may write (RLIMIT_FSIZE)
	// FSRead and FSWrite are the Landlock allow-lists of "fs": {"read": [...],
	// "write": [...]}, absolute, with ~/ and ${VAR} expanded. Both are nil
	// when "fs" is absent (no filesystem restriction); when "fs" is given
	// both are non-nil, a missing list counting as [] (nothing allowed).
	FSRead, FSWrite []string
	// NetConnect is "net": {"connect": [ports]}: the TCP ports the child may
	// connect to; nil when absent (unrestricted), non-nil empty for [].
	NetConnect []uint16
	// Network is key "network": false runs the child in its own network
	// namespace with only loopback; nil when absent.
	Network *bool
	// Namespaces is key "namespaces": false lets the child share Moat's
	// user, PID, mount and IPC namespaces (it then sees every process of
	// the user and every file Moat hides); nil when absent (its own).
	Namespaces *bool
}

// TLS is a remote server's "tls" block.
type TLS struct {
	MinVersion string // key "min_version": "1.2" (the default, filled in by the loader) or "1.3"
	// CAFile, CertFile and KeyFile (keys ca_file, cert_file, key_file) are
	// absolute, with ~/ and ${VAR} expanded; "" means none. CertFile and
	// KeyFile are given together or not at all.
	CAFile, CertFile, KeyFile string
	// Pins are "sha256/<base64 of the SHA-256 of the SubjectPublicKeyInfo>";
	// when set, the connection must present one of them.
	Pins []string
}
