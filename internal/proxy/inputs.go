package proxy

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A client of MCP 2026-07-28 takes no request from its server: a server
// that needs the user (elicitation), the model (sampling) or the roots
// answers the call with an input-required result, and the client retries
// the call with the answers (multi-round-trip requests, SEP-2322). An
// upstream asks Moat for these in the middle of a call, in either
// generation: as a request of its own, or, if it speaks 2026-07-28 too,
// through go-sdk's client, which turns its input-required results into
// calls of the same handlers. So for such a client each call that can
// ask (call_dynamic_tool, resources/read, prompts/get) runs as an
// exchange, apart from the request that started it: the request returns
// when the call ends or asks, and the client's retry, naming the exchange
// in requestState, brings the answers and waits again.

// newProtocol is the first protocol version that takes no server requests.
const newProtocol = "2026-07-28"

// retryWait bounds how long an exchange waits for the client's retry after
// it asked for input: a client that drops the exchange must not keep the
// upstream call, and its server's work, running for ever.
const retryWait = 10 * time.Minute

// speaksNewProtocol reports whether ss negotiated 2026-07-28 or later.
func speaksNewProtocol(ss *mcp.ServerSession) bool {
	ip := ss.InitializeParams()
	return ip != nil && ip.ProtocolVersion >= newProtocol
}

// exchanges are the calls of a new-protocol client that are still running.
type exchanges struct {
	// stop is Run's context: exchanges end with the session, not only
	// with their calls.
	stop context.Context

	mu  sync.Mutex
	all map[string]*exchange // by token
	// logging holds the exchanges an upstream's log message may go with:
	// those running, and those that ended less than progressGrace ago (an
	// upstream's last messages may be handled after its result).
	logging map[*exchange]bool
}

// An exchange is one call of a new-protocol client, from its first request
// to its result, across the retries that bring the client's answers.
type exchange struct {
	token  string
	method string
	ss     *mcp.ServerSession
	ctx    context.Context // the call's: values of its first request
	cancel context.CancelFunc
	unhook func() bool // releases the session's hold on the exchange
	asks   chan *ask
	done   chan outcome // buffered: the call never waits for a reader
	// waiting is held by the request waiting for the call; a second retry
	// of the same call while one waits is refused.
	waiting sync.Mutex

	level mcp.LoggingLevel // the log level the first request asked for

	mu      sync.Mutex
	group   string
	next    int
	pending map[string]*ask // sent to the client, not answered yet
	timer   *time.Timer     // cancels the call if no retry comes
}

type outcome struct {
	res mcp.Result
	err error
}

// An ask is one input request an upstream made during the call.
type ask struct {
	req   mcp.InputRequest
	reply chan mcp.InputResponse // buffered
}

type exchangeKey struct{}

// exchangeOf returns the exchange ctx runs in, if any.
func exchangeOf(ctx context.Context) *exchange {
	x, _ := ctx.Value(exchangeKey{}).(*exchange)
	return x
}

// relayInputs is receiving middleware (see the file comment).
func (p *Server) relayInputs(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		ss, ok := req.GetSession().(*mcp.ServerSession)
		if !ok || !asksInput(method, req) || !speaksNewProtocol(ss) {
			return next(ctx, method, req)
		}
		if state, responses := retryOf(req); state != "" {
			x := p.exch.get(state, ss)
			if x == nil {
				return nil, invalidParams("%s: requestState %q names no call in progress (it ended, or waited more than %v for this retry); make the request again without requestState", method, state, retryWait)
			}
			x.answer(responses)
			return p.exch.wait(ctx, x)
		}
		x := p.exch.start(ctx, method, req)
		go func() {
			var o outcome
			defer func() { x.done <- o }()
			defer p.recovered(x.ctx, method)
			o.err = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: ErrInternal.Error()}
			o.res, o.err = next(x.ctx, method, req)
		}()
		return p.exch.wait(ctx, x)
	}
}

// asksInput reports whether a request is a call an upstream may ask input
// during: Moat's own get_dynamic_tools never does.
func asksInput(method string, req mcp.Request) bool {
	switch method {
	case "resources/read", "prompts/get":
		return !noParams(req)
	case "tools/call":
		r, ok := req.(*mcp.CallToolRequest)
		return ok && r.Params != nil && r.Params.Name == toolCall
	}
	return false
}

// retryOf returns the requestState and answers a retry carries.
func retryOf(req mcp.Request) (string, mcp.InputResponseMap) {
	switch r := req.GetParams().(type) {
	case *mcp.CallToolParamsRaw:
		return r.RequestState, r.InputResponses
	case *mcp.ReadResourceParams:
		return r.RequestState, r.InputResponses
	case *mcp.GetPromptParams:
		return r.RequestState, r.InputResponses
	}
	return "", nil
}

func (e *exchanges) start(ctx context.Context, method string, req mcp.Request) *exchange {
	level, _ := req.GetParams().GetMeta()[mcp.MetaKeyLogLevel].(string)
	x := &exchange{
		token:   rand.Text(),
		method:  method,
		ss:      req.GetSession().(*mcp.ServerSession),
		level:   mcp.LoggingLevel(level),
		asks:    make(chan *ask),
		done:    make(chan outcome, 1),
		pending: map[string]*ask{},
	}
	// The call outlives the request that started it when it asks for
	// input; it keeps that request's values (its log level above all).
	x.ctx, x.cancel = context.WithCancel(context.WithValue(context.WithoutCancel(ctx), exchangeKey{}, x))
	if e.stop != nil {
		x.unhook = context.AfterFunc(e.stop, func() { e.end(x) })
	}
	e.mu.Lock()
	if e.all == nil {
		e.all = map[string]*exchange{}
		e.logging = map[*exchange]bool{}
	}
	e.all[x.token] = x
	e.logging[x] = true
	e.mu.Unlock()
	return x
}

// get returns the exchange token names, if ss started it, and stops its
// abandonment timer.
func (e *exchanges) get(token string, ss *mcp.ServerSession) *exchange {
	e.mu.Lock()
	x := e.all[token]
	e.mu.Unlock()
	if x == nil || x.ss != ss {
		return nil
	}
	x.mu.Lock()
	if x.timer != nil {
		x.timer.Stop()
	}
	x.mu.Unlock()
	return x
}

func (e *exchanges) end(x *exchange) {
	x.cancel()
	if x.unhook != nil {
		x.unhook()
	}
	e.mu.Lock()
	delete(e.all, x.token)
	e.mu.Unlock()
	time.AfterFunc(progressGrace, func() {
		e.mu.Lock()
		delete(e.logging, x)
		e.mu.Unlock()
	})
}

// forGroup returns the one exchange whose call went to group, for an
// upstream request that came without its call's context (an upstream of
// the older protocol asks by a request of its own).
func (e *exchanges) forGroup(group string) (*exchange, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var found *exchange
	n := 0
	for _, x := range e.all {
		x.mu.Lock()
		g := x.group
		x.mu.Unlock()
		if g == group {
			found = x
			n++
		}
	}
	return found, n
}

// joined records that x's call went to group; it returns the log level the
// client asked of the call, for the upstream.
func (x *exchange) joined(group string) mcp.LoggingLevel {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.group = group
	return x.level
}

// logContext returns the context of a call to group whose request asked
// for log messages: a log message of the group goes to the client in it,
// which go-sdk filters by that request's level. nil means no request of
// the client's wants the message.
func (e *exchanges) logContext(group string) context.Context {
	e.mu.Lock()
	defer e.mu.Unlock()
	for x := range e.logging {
		x.mu.Lock()
		ok := x.group == group && x.level != ""
		x.mu.Unlock()
		if ok {
			return context.WithoutCancel(x.ctx)
		}
	}
	return nil
}

// wait returns the call's result, or an input-required result when it asks
// for input; ctx is the current request's.
func (e *exchanges) wait(ctx context.Context, x *exchange) (mcp.Result, error) {
	if !x.waiting.TryLock() {
		return nil, invalidParams("%s: a retry of this call (requestState %q) is already waiting for it; wait for that one's answer", x.method, x.token)
	}
	defer x.waiting.Unlock()
	if reqs := x.unanswered(); len(reqs) > 0 {
		return e.inputRequired(x, reqs)
	}
	select {
	case o := <-x.done:
		e.end(x)
		return o.res, o.err
	case a := <-x.asks:
		x.add(a)
		// Asks made together go out together.
		for more := true; more; {
			select {
			case a := <-x.asks:
				x.add(a)
			default:
				more = false
			}
		}
		return e.inputRequired(x, x.unanswered())
	case <-ctx.Done():
		// The client cancelled its request: the call ends with it.
		e.end(x)
		return nil, ctx.Err()
	}
}

func (e *exchanges) inputRequired(x *exchange, reqs mcp.InputRequestMap) (mcp.Result, error) {
	x.mu.Lock()
	x.timer = time.AfterFunc(retryWait, func() { e.end(x) })
	x.mu.Unlock()
	return inputRequired(x.method, reqs, x.token)
}

func (x *exchange) add(a *ask) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.next++
	x.pending["moat-"+strconv.Itoa(x.next)] = a
}

func (x *exchange) unanswered() mcp.InputRequestMap {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.pending) == 0 {
		return nil
	}
	m := make(mcp.InputRequestMap, len(x.pending))
	for id, a := range x.pending {
		m[id] = a.req
	}
	return m
}

// answer hands the client's answers to the asks waiting for them. An
// answer of the wrong kind, or to nothing asked, is dropped: the ask is
// made again.
func (x *exchange) answer(responses mcp.InputResponseMap) {
	x.mu.Lock()
	defer x.mu.Unlock()
	ids := make([]string, 0, len(responses))
	for id := range responses {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		a, ok := x.pending[id]
		if !ok || !answers(a.req, responses[id]) {
			continue
		}
		delete(x.pending, id)
		a.reply <- responses[id]
	}
}

// answers reports whether resp is the kind of answer req asked for.
func answers(req mcp.InputRequest, resp mcp.InputResponse) bool {
	switch req.(type) {
	case *mcp.ElicitParams:
		_, ok := resp.(*mcp.ElicitResult)
		return ok
	case *mcp.CreateMessageParams:
		_, ok := resp.(*mcp.CreateMessageWithToolsResult)
		return ok
	}
	return false
}

// ask sends req to the client of the exchange the upstream's request
// belongs to, and waits for its answer.
func (p *Server) ask(ctx context.Context, group string, req mcp.InputRequest) (mcp.InputResponse, error) {
	x := exchangeOf(ctx)
	if x == nil {
		var n int
		x, n = p.exch.forGroup(group)
		switch {
		case n == 0:
			return nil, fmt.Errorf("moat's client speaks MCP %s, where a server may ask for input only while it handles one of the client's calls, and no call to group %q is in progress", newProtocol, group)
		case n > 1:
			return nil, fmt.Errorf("moat's client speaks MCP %s, where a server may ask for input only within a call, and moat cannot tell which of the %d calls in progress to group %q this request belongs to (a server of %s sends it within the call)", newProtocol, n, group, newProtocol)
		}
	}
	a := &ask{req: req, reply: make(chan mcp.InputResponse, 1)}
	select {
	case x.asks <- a:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-x.ctx.Done():
		return nil, fmt.Errorf("the client's call ended before it answered")
	}
	select {
	case r := <-a.reply:
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-x.ctx.Done():
		return nil, fmt.Errorf("the client's call ended before it answered")
	}
}

// sample relays an upstream's sampling request through ask.
func (p *Server) sample(ctx context.Context, group string, cp *mcp.CreateMessageParams) (*mcp.CreateMessageResult, error) {
	r, err := p.ask(ctx, group, cp)
	if err != nil {
		return nil, err
	}
	res := r.(*mcp.CreateMessageWithToolsResult)
	if len(res.Content) > 1 {
		return nil, fmt.Errorf("the client answered the sampling request with %d content blocks; the server asked for one", len(res.Content))
	}
	out := &mcp.CreateMessageResult{Meta: res.Meta, Model: res.Model, Role: res.Role, StopReason: res.StopReason}
	if len(res.Content) == 1 {
		out.Content = res.Content[0]
	}
	return out, nil
}

// elicit relays an upstream's elicitation request through ask.
func (p *Server) elicit(ctx context.Context, group string, ep *mcp.ElicitParams) (*mcp.ElicitResult, error) {
	r, err := p.ask(ctx, group, ep)
	if err != nil {
		return nil, err
	}
	return r.(*mcp.ElicitResult), nil
}

// inputRequired builds the input-required result of method. go-sdk keeps
// a result's type unexported and sets it only on results of its own
// handlers; decoding is the one way to set it on Moat's.
func inputRequired(method string, reqs mcp.InputRequestMap, state string) (mcp.Result, error) {
	b, err := json.Marshal(struct {
		ResultType    string              `json:"resultType"`
		InputRequests mcp.InputRequestMap `json:"inputRequests"`
		RequestState  string              `json:"requestState"`
	}{"input_required", reqs, state})
	if err != nil {
		return nil, fmt.Errorf("relaying the server's input request: %w", err)
	}
	var res mcp.Result
	switch method {
	case "tools/call":
		res = new(mcp.CallToolResult)
	case "resources/read":
		res = new(mcp.ReadResourceResult)
	case "prompts/get":
		res = new(mcp.GetPromptResult)
	default:
		return nil, fmt.Errorf("no input-required result for %s", method)
	}
	if err := json.Unmarshal(b, res); err != nil {
		return nil, fmt.Errorf("relaying the server's input request: %w", err)
	}
	return res, nil
}
