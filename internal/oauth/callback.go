package oauth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
)

// callbackPath is the only path the loopback listener answers.
const callbackPath = "/callback"

// callback is the loopback redirect listener of one login. It serves until
// close; only a GET of callbackPath whose state matches ends the wait.
type callback struct {
	ln     net.Listener
	srv    *http.Server
	served chan struct{}

	mu    sync.Mutex
	state string              // expected state, set when the authorize URL is known
	got   chan callbackResult // the first verified callback
	sent  bool                // got has been written
	done  chan struct{}       // closed when the login's outcome is known
	final error               // the outcome, for the browser
}

type callbackResult struct {
	res *auth.AuthorizationResult
	err error // an error= from the authorization server
}

// listen starts the listener on 127.0.0.1 with a random port.
func listen() (*callback, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("oauth: cannot listen on 127.0.0.1 for the login redirect: %w", err)
	}
	c := &callback{
		ln:     ln,
		served: make(chan struct{}),
		got:    make(chan callbackResult, 1),
		done:   make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc(callbackPath, c.serve)
	c.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	go func() {
		defer close(c.served)
		_ = c.srv.Serve(ln) // returns ErrServerClosed on close
	}()
	return c, nil
}

// redirectURL uses the IP, not "localhost", which may resolve to ::1 where
// nothing listens.
func (c *callback) redirectURL() string {
	return "http://" + c.ln.Addr().String() + callbackPath
}

func (c *callback) expect(state string) {
	c.mu.Lock()
	c.state = state
	c.mu.Unlock()
}

// finish records the login's outcome, which the waiting browser tab shows.
func (c *callback) finish(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
	default:
		c.final = err
		close(c.done)
	}
}

// close stops the listener and waits for its goroutine and handlers.
func (c *callback) close() {
	c.finish(errors.New("the login ended"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c.srv.Shutdown(ctx) != nil {
		c.srv.Close()
	}
	<-c.served
}

func (c *callback) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != callbackPath {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'")
	w.Header().Set("Referrer-Policy", "no-referrer")
	q := r.URL.Query()
	c.mu.Lock()
	want := c.state
	ok := want != "" && subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(want)) == 1
	first := ok && !c.sent
	if first {
		c.sent = true
	}
	c.mu.Unlock()
	if !ok {
		// A stray or forged request: refuse it and keep waiting for the real one.
		page(w, http.StatusBadRequest, "This is not the login Moat started",
			"The request's state does not match. Start again with `moat auth login`, and use the newest link.")
		return
	}
	if !first {
		page(w, http.StatusConflict, "Already answered", "This login has already received its answer; you can close this tab.")
		return
	}
	if e := q.Get("error"); e != "" {
		msg := clean(e)
		if d := q.Get("error_description"); d != "" {
			msg += ": " + clean(d)
		}
		err := fmt.Errorf("the authorization server refused the login: %s", msg)
		c.got <- callbackResult{err: err}
		page(w, http.StatusOK, "Login refused", "The authorization server said: "+msg)
		return
	}
	if q.Get("code") == "" {
		err := errors.New("the authorization server's answer has neither code nor error")
		c.got <- callbackResult{err: err}
		page(w, http.StatusBadRequest, "Login failed", err.Error())
		return
	}
	c.got <- callbackResult{res: &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}}
	// Show success only when the code has become a token (iss checked,
	// PKCE verified by the server).
	select {
	case <-c.done:
	case <-r.Context().Done():
		return
	}
	c.mu.Lock()
	final := c.final
	c.mu.Unlock()
	if final != nil {
		page(w, http.StatusOK, "Login failed", clean(final.Error()))
		return
	}
	page(w, http.StatusOK, "Logged in", "Moat has its token. You can close this tab.")
}

func page(w http.ResponseWriter, status int, title, body string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html><title>Moat: %s</title><h1>%s</h1><p>%s</p>\n",
		html.EscapeString(title), html.EscapeString(title), html.EscapeString(body))
}
