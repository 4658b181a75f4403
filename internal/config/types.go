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
package config

import (
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

	// http and sse
	URL           string
	Headers       map[string]string
	OAuthClientID string
	OAuthScopes   []string

	Enabled  bool
	Features Features
	Timeout  Timeouts

	// SecretValues holds every non-empty value that a ${secret:NAME}
	// reference expanded to in this server, so logs and audit records can
	// redact them. Never print it.
	SecretValues []string
}

// Features are opt-out switches; each defaults to true.
type Features struct {
	Tools, Resources, Prompts bool
}

// Timeouts bound each kind of upstream request. Zero never occurs in a
// loaded config: the loader fills in the defaults.
type Timeouts struct {
	Tools, Resources, Prompts time.Duration
}
