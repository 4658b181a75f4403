package policy

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits holds the rate limiters and concurrency counters of every group
// and tool, and the global ones, in process. It is safe for concurrent use.
//
// A call is limited three times: by its tool's own limiter (when a "tools"
// entry sets one), by its group's and by the global one; it goes through
// only when all three have room, and a refusal spends nothing. A call made
// for a gateway identity whose policy sets "global" limits is limited a
// fourth time, by that identity's own limiter over all its groups (see
// [Limits.UpdateIdentities]; each identity has its own).
//
// [Limits.Update] installs new policies (after a config reload). A rate
// limiter whose scope and settings are unchanged keeps its state, so a
// reload neither refills nor empties a bucket; one whose settings changed
// starts afresh, full. Concurrency counters keep counting calls in flight
// across a reload and take the new cap at once.
type Limits struct {
	mu         sync.Mutex
	global     Settings
	groups     map[string]*Policy
	identities map[string]*Policy
	limiters   map[limiterKey]*rate.Limiter
	counters   map[scopeKey]*counter
}

// scopeKey names one limiter: scope "global", "identity" (identity set),
// "group" (group set) or "tool" (group and tool set).
type scopeKey struct{ scope, identity, group, tool string }

type limiterKey struct {
	scopeKey
	rate  Rate
	burst int
}

type counter struct{ n, max int }

// NewLimits returns an empty registry; call Update before use. Until then
// every call is refused, because no group has a policy.
func NewLimits() *Limits {
	return &Limits{
		limiters: map[limiterKey]*rate.Limiter{},
		counters: map[scopeKey]*counter{},
	}
}

// Update installs the effective policy of each group and the policy whose
// Global settings apply over all groups (the merged defaults; nil for the
// built-in global limits). Groups not in groups are refused from now on.
func (l *Limits) Update(global *Policy, groups map[string]*Policy) {
	if global == nil {
		global = &Policy{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.global = global.GlobalSettings()
	l.groups = groups
	l.prune()
}

// UpdateIdentities installs the policies of the gateway identities, by
// name (nil for none): the IdentitySettings of each bound that identity's
// calls over all groups (AllowAs, AcquireAs). An identity not in
// identities has no limiter of its own from now on. As with Update, a
// limiter whose identity and settings are unchanged keeps its state.
func (l *Limits) UpdateIdentities(identities map[string]*Policy) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.identities = identities
	l.prune()
}

// prune drops the limiters the current policies no longer want and gives
// the concurrency counters their current caps.
func (l *Limits) prune() {
	for k := range l.limiters {
		if want, ok := l.limiterKey(k.scopeKey); !ok || want != k {
			delete(l.limiters, k)
		}
	}
	for k, c := range l.counters {
		switch max, ok := l.capOf(k); {
		case ok:
			c.max = max
		case c.n == 0:
			delete(l.counters, k)
		default: // cap removed: the calls in flight drain, no new limit
			c.max = math.MaxInt
		}
	}
}

// settingsOf returns the settings of one scope, or false when that scope
// has no policy.
func (l *Limits) settingsOf(k scopeKey) (Settings, bool) {
	switch k.scope {
	case "global":
		return l.global, true
	case "identity":
		p := l.identities[k.identity]
		if p == nil {
			return Settings{}, false
		}
		return p.IdentitySettings(), true
	}
	p := l.groups[k.group]
	if p == nil {
		return Settings{}, false
	}
	if k.scope == "group" {
		return p.GroupSettings(), true
	}
	return p.ToolSettings(k.tool), true
}

// limiterKey is the key the limiter of scope k has under the current
// policies; false when the scope has no rate.
func (l *Limits) limiterKey(k scopeKey) (limiterKey, bool) {
	s, ok := l.settingsOf(k)
	if !ok || s.Rate.IsZero() {
		return limiterKey{}, false
	}
	return limiterKey{scopeKey: k, rate: s.Rate, burst: s.burst()}, true
}

func (l *Limits) capOf(k scopeKey) (int, bool) {
	s, ok := l.settingsOf(k)
	if !ok || s.MaxConcurrent == 0 {
		return 0, false
	}
	return s.MaxConcurrent, true
}

// scopes lists the scopes a call of tool in group counts against, global
// first. tool "" (a resource read or prompt) counts against group and
// global only; identity "" (no gateway identity) against no identity's.
func scopes(identity, group, tool string) []scopeKey {
	s := []scopeKey{{scope: "global"}}
	if identity != "" {
		s = append(s, scopeKey{scope: "identity", identity: identity})
	}
	s = append(s, scopeKey{scope: "group", group: group})
	if tool != "" {
		s = append(s, scopeKey{scope: "tool", group: group, tool: tool})
	}
	return s
}

// Allow reports whether a call of tool in group may start now, and if not,
// how long to wait before retrying. A refused call spends no tokens.
func (l *Limits) Allow(group, tool string) (ok bool, retryAfter time.Duration) {
	return l.AllowAsAt(time.Now(), "", group, tool)
}

// AllowAt is Allow at time now (for tests with a fake clock). A group
// without a policy is refused with retryAfter 0.
func (l *Limits) AllowAt(now time.Time, group, tool string) (ok bool, retryAfter time.Duration) {
	return l.AllowAsAt(now, "", group, tool)
}

// AllowAs is Allow for a call made for the gateway identity named
// identity ("" for none), which also counts against that identity's rate.
func (l *Limits) AllowAs(identity, group, tool string) (ok bool, retryAfter time.Duration) {
	return l.AllowAsAt(time.Now(), identity, group, tool)
}

// AllowAsAt is AllowAs at time now.
func (l *Limits) AllowAsAt(now time.Time, identity, group, tool string) (ok bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.groups[group] == nil {
		return false, 0
	}
	var taken []*rate.Reservation
	for _, sk := range scopes(identity, group, tool) {
		k, limited := l.limiterKey(sk)
		if !limited {
			continue
		}
		lim := l.limiters[k]
		if lim == nil {
			lim = rate.NewLimiter(k.rate.Limit(), k.burst)
			l.limiters[k] = lim
		}
		r := lim.ReserveN(now, 1)
		if !r.OK() {
			retryAfter = max(retryAfter, time.Second)
			continue
		}
		if d := r.DelayFrom(now); d > 0 {
			retryAfter = max(retryAfter, d)
		}
		taken = append(taken, r)
	}
	if retryAfter == 0 {
		return true, 0
	}
	for _, r := range taken {
		r.CancelAt(now)
	}
	return false, retryAfter
}

// A BusyError says a concurrency cap is reached. Acquire never waits: a
// model that gets this error can retry once a call finishes, which is
// better than a call hanging with no feedback.
type BusyError struct {
	Scope    string // "tool", "group", "identity" or "global"
	Group    string
	Tool     string
	Identity string // the gateway identity the call was made for, if any
	Max      int
}

func (e *BusyError) Error() string {
	switch e.Scope {
	case "identity":
		return fmt.Sprintf("%d calls of identity %q are already running, the most its policy allows (global.max_concurrent of gateway.identities.%s.policy); retry when one has finished", e.Max, e.Identity, e.Identity)
	case "tool":
		return fmt.Sprintf("%d calls of tool %q of group %q are already running, the most its policy allows (max_concurrent); retry when one has finished", e.Max, e.Tool, e.Group)
	case "group":
		return fmt.Sprintf("%d calls to group %q are already running, the most its policy allows (max_concurrent); retry when one has finished", e.Max, e.Group)
	}
	return fmt.Sprintf("%d calls are already running over all groups, the most the global policy allows (global.max_concurrent); retry when one has finished", e.Max)
}

// Acquire takes a slot for one call of tool in group (tool "" for resource
// reads and prompts) in every applicable concurrency counter, or returns a
// *BusyError at once when one is full. release must be called exactly once
// when the call ends; extra calls do nothing.
func (l *Limits) Acquire(ctx context.Context, group, tool string) (release func(), err error) {
	return l.AcquireAs(ctx, "", group, tool)
}

// AcquireAs is Acquire for a call made for the gateway identity named
// identity ("" for none), which also takes a slot of that identity's
// max_concurrent.
func (l *Limits) AcquireAs(ctx context.Context, identity, group, tool string) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.groups[group] == nil {
		return nil, fmt.Errorf("group %q has no policy loaded; Moat refuses its calls (fail closed)", group)
	}
	var held []*counter
	for _, sk := range scopes(identity, group, tool) {
		c := l.counters[sk]
		if c == nil {
			max, capped := l.capOf(sk)
			if !capped {
				continue
			}
			c = &counter{max: max}
			l.counters[sk] = c
		}
		if c.n >= c.max {
			return nil, &BusyError{Scope: sk.scope, Group: group, Tool: tool, Identity: identity, Max: c.max}
		}
		held = append(held, c)
	}
	for _, c := range held {
		c.n++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			for _, c := range held {
				c.n--
			}
		})
	}, nil
}
