package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/moatmcp/moat/internal/auditlog"
	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/metrics"
)

// metricsPath is the one path the metrics listener serves.
const metricsPath = "/metrics"

// newMetrics is the registry of a serving moat whose config has a
// "metrics" block; nil otherwise (the one-shot commands count nothing).
func newMetrics(cfg *config.Config, command string) *metrics.Metrics {
	if command != "serve" || cfg.Metrics.Listen == "" {
		return nil
	}
	return metrics.New()
}

// serveMetrics serves /metrics on metrics.listen until ctx ends; wg waits
// for its server. It never fails serve: a port already taken (a second
// stdio moat of this config, started by a second client) or a certificate
// that does not load is one warning, and MCP is served without metrics.
func serveMetrics(ctx context.Context, log *slog.Logger, cfg *config.Config, mt *metrics.Metrics, auditLog *auditlog.Log, wg *sync.WaitGroup) {
	if mt == nil {
		return
	}
	mc := cfg.Metrics
	var tc *tls.Config
	if mc.TLS {
		var err error
		if tc, err = gatewayTLS(cfg.Gateway.TLS); err != nil {
			log.Warn("metrics are not served: "+err.Error(), "listen", mc.Listen)
			return
		}
	}
	l, err := net.Listen("tcp", mc.Listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			log.Warn(fmt.Sprintf("metrics are not served: %s is already in use (another moat serving this config has it?); this moat serves MCP without metrics. "+
				"To scrape every moat, give each config its own metrics.listen port in %s", mc.Listen, cfg.Path), "listen", mc.Listen)
		} else {
			log.Warn("metrics are not served: "+err.Error()+"; this moat serves MCP without metrics (`moat doctor` checks metrics.listen)", "listen", mc.Listen)
		}
		return
	}
	if tc != nil {
		l = tls.NewListener(l, tc)
	}
	mux := http.NewServeMux()
	h := mt.Handler()
	if len(mc.Tokens) > 0 {
		h = scrapeAuth(newRefusalLog(auditLog, log), mc.Tokens, storeTokens(), h)
	}
	mux.Handle(metricsPath, h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	log.Info("metrics listening", "url", scheme(tc != nil)+"://"+l.Addr().String()+metricsPath)
	wg.Go(func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("serving metrics failed", "err", err)
		}
	})
	wg.Go(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	})
}

func scheme(tls bool) string {
	if tls {
		return "https"
	}
	return "http"
}

// scrapeAuth lets through a request whose bearer token is one of allowed
// (token names, checked against the secret store like the gateway's):
// metrics show which servers and identities exist and how they are used.
// A refused scrape is audited as the gateway's refusals are.
func scrapeAuth(refusals *refusalLog, allowed []string, tokens *tokenVerifier, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := bearer(r.Header.Get("Authorization"))
		challenge := `Bearer realm="moat-metrics"`
		if ok {
			name, err := tokens.verify(r.Context(), tok)
			if err == nil && slices.Contains(allowed, name) {
				next.ServeHTTP(w, r)
				return
			}
			if err == nil {
				err = fmt.Errorf("token %q is not in metrics.tokens", name)
			}
			refusals.write(r, nil, map[string]string{"listener": "metrics", "reason": err.Error()})
			challenge += `, error="invalid_token"`
		} else {
			refusals.write(r, nil, map[string]string{"listener": "metrics", "reason": "no bearer token"})
		}
		w.Header().Set("WWW-Authenticate", challenge)
		http.Error(w, "moat: a token listed in metrics.tokens is required (Authorization: Bearer TOKEN; see `moat token create`)", http.StatusUnauthorized)
	})
}
