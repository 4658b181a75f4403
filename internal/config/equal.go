package config

import (
	"maps"
	"slices"
)

// Equal reports whether s and o describe the same upstream, so that a
// reload can keep a running server: every field that would need a restart
// is compared (transport, command, args, env, inherit_env, cwd, the
// effective sandbox, url, headers and which of them hold secrets, OAuth,
// allow_insecure_http, allow_private_network, tls, enabled, features,
// timeouts, max_message_bytes).
//
// Not compared: Description, which only changes what the client is told,
// and Policy, which the guard applies per call, so a policy edit takes
// effect without restarting the server (and without dropping its
// sessions); callers take both from the new config. A policy edit that
// changes the derived MaxMessageBytes does restart the server: the limit
// is fixed in the transport when it connects. SecretValues is derived from
// the compared fields and skipped. The gateway block is not a server's:
// a change to its identities or socket restarts no server.
func (s *Server) Equal(o *Server) bool {
	if s == nil || o == nil {
		return s == o
	}
	return s.Name == o.Name &&
		s.Type == o.Type &&
		s.TypeInferred == o.TypeInferred &&
		s.Command == o.Command &&
		slices.Equal(s.Args, o.Args) &&
		maps.Equal(s.Env, o.Env) &&
		slices.Equal(s.InheritEnv, o.InheritEnv) &&
		s.Cwd == o.Cwd && s.RunAs == o.RunAs &&
		s.Sandbox.equal(o.Sandbox) &&
		s.URL == o.URL &&
		maps.Equal(s.Headers, o.Headers) &&
		slices.Equal(s.SecretHeaders, o.SecretHeaders) &&
		s.OAuthClientID == o.OAuthClientID &&
		slices.Equal(s.OAuthScopes, o.OAuthScopes) &&
		s.TokenExchange.equal(o.TokenExchange) &&
		s.AllowInsecureHTTP == o.AllowInsecureHTTP &&
		s.AllowPrivateNetwork == o.AllowPrivateNetwork &&
		s.TLS.MinVersion == o.TLS.MinVersion &&
		s.TLS.CAFile == o.TLS.CAFile &&
		s.TLS.CertFile == o.TLS.CertFile &&
		s.TLS.KeyFile == o.TLS.KeyFile &&
		slices.Equal(s.TLS.Pins, o.TLS.Pins) &&
		s.Enabled == o.Enabled &&
		s.Features == o.Features &&
		s.Timeout == o.Timeout &&
		s.MaxMessageBytes == o.MaxMessageBytes &&
		s.PerUser == o.PerUser
}
