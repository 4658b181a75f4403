// Package metrics exports what a serving moat does as Prometheus series:
// its calls and their outcomes, refusals, latency, upstream health, the
// audit log's write latency and queue, and a gateway's sessions. It exists
// so that an operator sees a fleet of moats on a dashboard and is alerted
// on refusals or a failing upstream without reading audit logs.
//
// It owns its own registry (never the process-wide default one, which any
// imported library could write to). Every label value is bounded by the
// config or by code: group and identity names come from the config, kinds,
// outcomes, layers and rule kinds are constants. Nothing a client or an
// upstream chooses freely (a tool name, an argument, a URI) becomes a
// label, so no one can grow the series without bound.
package metrics

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/auditlog"
	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/upstream"
)

// outcomes are every audit.Outcome a call may have; a group's series are
// made for each at once, so that a rate over a zero count is 0, not absent.
var outcomes = []audit.Outcome{audit.OutcomeOK, audit.OutcomeError, audit.OutcomeTimeout,
	audit.OutcomeLimited, audit.OutcomeDenied, audit.OutcomeCancelled}

// AuthRefusal says why an HTTP request to a gateway was refused.
type AuthRefusal string

// The reasons an HTTP request is refused at the gateway's front.
const (
	AuthNoToken      AuthRefusal = "no_token"
	AuthBadToken     AuthRefusal = "invalid_token"
	AuthNoIdentity   AuthRefusal = "no_identity"
	AuthOrigin       AuthRefusal = "origin"
	AuthTooMany      AuthRefusal = "too_many_sessions"
	AuthWrongSession AuthRefusal = "wrong_identity"
	// AuthScope: a valid OIDC token without a required scope (403).
	AuthScope AuthRefusal = "insufficient_scope"
)

// Metrics is one moat's registry and its collectors. A nil *Metrics (no
// metrics configured) counts nothing, so callers need not check.
type Metrics struct {
	reg *prometheus.Registry

	calls       *prometheus.CounterVec
	refusals    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	up          *prometheus.GaugeVec
	restarts    *prometheus.CounterVec
	exits       *prometheus.CounterVec
	auditWrite  prometheus.Histogram
	sessions    *prometheus.GaugeVec
	authRefused *prometheus.CounterVec

	// series caches each group and kind's children, so a call costs a
	// read-locked map lookup and no label hashing.
	mu     sync.RWMutex
	series map[seriesKey]*callSeries

	// started counts each copy's child processes (by group, identity and
	// principal), to tell a restart from the first start; ready holds the
	// copies ready; upGroups are the groups with an up series.
	startMu  sync.Mutex
	started  map[string]int
	ready    map[string]bool
	upGroups map[string]bool
}

type seriesKey struct {
	group string
	kind  guard.Kind
}

type callSeries struct {
	duration prometheus.Observer
	calls    map[audit.Outcome]prometheus.Counter
}

// New makes a registry with moat's series and the Go runtime's and the
// process's collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_calls_total",
			Help: "Calls through the guard chain, by group, kind (tool, resource, prompt, subscribe, complete) and outcome (as the audit log records it)."},
			[]string{"group", "kind", "outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_refusals_total",
			Help: "Calls refused, by the layer that refused them and the kind of rule (the part of the audit log's rule before its first ':'; the audit log has the whole rule)."},
			[]string{"layer", "rule"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "moat_call_duration_seconds",
			Help:    "Time from a call entering the guard chain to its result, by group and kind.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}},
			[]string{"group", "kind"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moat_upstream_up",
			Help: "1 while the group's upstream is connected and ready, 0 while it is unavailable or stopped idle (absent until it first starts); identity names a per-user server's copies, and the value counts those ready (one per person of an identity that can be several)."},
			[]string{"group", "identity"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_upstream_restarts_total",
			Help: "Child processes of the group started after its first; identity names a per-user server's copy."},
			[]string{"group", "identity"}),
		exits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_upstream_child_exits_total",
			Help: "Child processes of the group that exited (crashed, or stopped by moat); identity names a per-user server's copy."},
			[]string{"group", "identity"}),
		auditWrite: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "moat_audit_write_duration_seconds",
			Help:    "Time to write one audit record (until durable, or in the file for a call's outcome), waiting included.",
			Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5}}),
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moat_gateway_sessions",
			Help: "Gateway sessions open, by identity (from the config's gateway.identities)."},
			[]string{"identity"}),
		authRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moat_gateway_auth_refusals_total",
			Help: "HTTP requests the gateway refused before any session, by reason."},
			[]string{"reason"}),
		series:  map[seriesKey]*callSeries{},
		started: map[string]int{},
		ready:   map[string]bool{},
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.calls, m.refusals, m.duration, m.up, m.restarts, m.exits, m.auditWrite, m.sessions, m.authRefused)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Layer counts each call by its outcome (auditlog.Outcome: the audit log's
// classification), its refusal by layer and rule kind, and its duration.
// It refuses nothing; placed outermost it sees every inner layer's
// refusal. A nil *Metrics's layer is no layer: it returns next itself.
func (m *Metrics) Layer() guard.Layer {
	return func(next guard.Handler) guard.Handler {
		if m == nil {
			return next
		}
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			start := time.Now()
			res, err := next(ctx, c)
			s := m.seriesOf(c.Group, c.Kind)
			s.duration.Observe(time.Since(start).Seconds())
			outcome, denial := auditlog.Outcome(res, err)
			s.calls[outcome].Inc()
			if denial != nil {
				m.Refused(denial.Layer, denial.Rule)
			}
			return res, err
		}
	}
}

// seriesOf is the cached children of group and kind, made on first use.
func (m *Metrics) seriesOf(group string, kind guard.Kind) *callSeries {
	k := seriesKey{group, kind}
	m.mu.RLock()
	s := m.series[k]
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s = m.series[k]; s != nil {
		return s
	}
	s = &callSeries{duration: m.duration.WithLabelValues(group, kind.String()), calls: map[audit.Outcome]prometheus.Counter{}}
	for _, o := range outcomes {
		s.calls[o] = m.calls.WithLabelValues(group, kind.String(), string(o))
	}
	m.series[k] = s
	return s
}

// Refused counts a refusal by layer and rule kind: the rule up to its
// first ':', since what follows may name a tool, an argument or a pattern
// ("deny:delete_*", "args:TOOL.ARG:regex").
func (m *Metrics) Refused(layer guard.LayerName, rule string) {
	if m == nil {
		return
	}
	kind, _, _ := strings.Cut(rule, ":")
	m.refusals.WithLabelValues(string(layer), kind).Inc()
}

// Upstream follows an upstream's events (upstream.Options.OnEvent). A
// gateway runs a per-user server once per identity (its events' detail
// names it), and once per person for an identity that can be several
// (detail "principal"): each identity's copies are a series of their own,
// whose up value counts the copies ready, so one copy going idle or down
// never hides another's, and a copy's first start is no restart.
func (m *Metrics) Upstream(e upstream.Event) {
	if m == nil {
		return
	}
	identity := e.Detail["identity"]
	copyKey := e.Group + "\x00" + identity + "\x00" + e.Detail["principal"]
	m.startMu.Lock()
	defer m.startMu.Unlock()
	switch e.Kind {
	case "upstream_ready", "upstream_unavailable", "upstream_idle":
		if m.upGroups == nil {
			m.upGroups = map[string]bool{}
		}
		m.upGroups[e.Group] = true
		if e.Kind == "upstream_ready" {
			m.ready[copyKey] = true
		} else {
			delete(m.ready, copyKey)
		}
		n := 0
		prefix := e.Group + "\x00" + identity + "\x00"
		for k := range m.ready {
			if strings.HasPrefix(k, prefix) {
				n++
			}
		}
		m.up.WithLabelValues(e.Group, identity).Set(float64(n))
	case "child_start":
		m.started[copyKey]++
		if m.started[copyKey] > 1 {
			m.restarts.WithLabelValues(e.Group, identity).Inc()
		}
	case "child_exit":
		m.exits.WithLabelValues(e.Group, identity).Inc()
	case "per_user_retired":
		// The copy is gone (its person left): its next start is a first.
		delete(m.started, copyKey)
		delete(m.ready, copyKey)
	}
}

// Retain drops the up series of groups a reloaded config no longer runs
// (removed or disabled): a server that is gone is neither up nor down.
// Counters keep their history.
func (m *Metrics) Retain(cfg *config.Config) {
	if m == nil {
		return
	}
	m.startMu.Lock()
	defer m.startMu.Unlock()
	for g := range m.upGroups {
		if s := cfg.Servers[g]; s == nil || !s.Enabled {
			m.up.DeletePartialMatch(prometheus.Labels{"group": g})
			delete(m.upGroups, g)
			for k := range m.ready {
				if strings.HasPrefix(k, g+"\x00") {
					delete(m.ready, k)
				}
			}
		}
	}
}

// Audit follows the audit log: each write's latency, and its queue.
func (m *Metrics) Audit(l *auditlog.Log) {
	if m == nil {
		return
	}
	l.Observe(func(d time.Duration) { m.auditWrite.Observe(d.Seconds()) })
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "moat_audit_queue_depth",
		Help: "Audit records waiting to be written."}, func() float64 { return float64(l.Pending()) }))
}

// SessionStarted counts a gateway session of identity as open until the
// returned func is called.
func (m *Metrics) SessionStarted(identity string) (ended func()) {
	if m == nil {
		return func() {}
	}
	g := m.sessions.WithLabelValues(identity)
	g.Inc()
	return g.Dec
}

// AuthRefused counts an HTTP request refused at the gateway's front.
func (m *Metrics) AuthRefused(why AuthRefusal) {
	if m == nil {
		return
	}
	m.authRefused.WithLabelValues(string(why)).Inc()
}
