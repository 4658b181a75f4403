package config

import (
	"maps"
	"slices"
)

// Equal reports whether s and o describe the same upstream, so that a
// reload can keep a running server: every field that would need a restart
// is compared (transport, command, args, env, url, headers, OAuth, enabled,
// features, timeouts). Description is not compared: it only changes what
// the client is told, so callers take it from the new config without a
// restart. SecretValues is derived from the compared fields and skipped.
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
		s.URL == o.URL &&
		maps.Equal(s.Headers, o.Headers) &&
		s.OAuthClientID == o.OAuthClientID &&
		slices.Equal(s.OAuthScopes, o.OAuthScopes) &&
		s.Enabled == o.Enabled &&
		s.Features == o.Features &&
		s.Timeout == o.Timeout
}
