package oauth

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// fuzzState is the state the login expects; like a real one it needs no
// escaping, so a query can carry it in many spellings.
const fuzzState = "st4te-Xy_9.Q~z"

// FuzzCallbackQuery sends the loopback redirect listener's handler a GET of
// /callback with a fuzzed query string, parsed by net/http exactly as the
// real listener would. The handler must never panic; the login may get an
// answer (code or error) only when the query's first "state" parameter is
// exactly the expected state, and a code only with that state; "Logged in"
// is shown only then; and the page has no markup but its own, whatever the
// query held.
func FuzzCallbackQuery(f *testing.F) {
	for _, q := range []string{
		"state=" + fuzzState + "&code=abc",
		"code=abc&state=" + fuzzState + "&iss=https%3A%2F%2Fissuer",
		"state=" + fuzzState + "&error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
		"state=" + fuzzState,
		"state=wrong&code=stolen",
		"state=wrong&state=" + fuzzState + "&code=dup",
		"state=" + fuzzState + "&state=wrong&code=dup",
		"STATE=" + fuzzState + "&code=case",
		"State=" + fuzzState + "&code=case",
		"%73tate=" + fuzzState + "&code=escaped-key",
		"state=" + url.QueryEscape(strings.ToUpper(fuzzState)) + "&code=case-value",
		"state=" + fuzzState + "%00&code=nul",
		"state=" + fuzzState + "%ff&code=invalid-utf8",
		"state=%ff%fe&code=x",
		"state=" + fuzzState + ";code=semicolon",
		"state=" + fuzzState + "&code=" + strings.Repeat("A", 8000),
		"state=" + fuzzState + "&code=%E2%80%AE%1B%5B31m",
		"state=" + fuzzState[:len(fuzzState)-1] + "&code=prefix",
		"state=" + fuzzState + "x&code=longer",
		"state=+" + fuzzState + "&code=space",
		"",
		"&&&==&",
		"%zz",
	} {
		f.Add(q, true)
		f.Add(q, false)
	}
	f.Fuzz(func(t *testing.T, query string, expecting bool) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(
			"GET /callback?" + query + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")))
		if err != nil {
			return // net/http answers 400 itself; the handler never sees it
		}
		c := &callback{got: make(chan callbackResult, 1), done: make(chan struct{})}
		if expecting {
			c.expect(fuzzState)
		}
		c.finish(nil) // the token exchange already succeeded: success shows at once
		w := httptest.NewRecorder()
		c.serve(w, req)

		exact := expecting && firstState(req.URL.RawQuery) == fuzzState
		var res *callbackResult
		select {
		case r := <-c.got:
			res = &r
		default:
		}
		body := w.Body.String()
		switch {
		case res != nil && !exact:
			t.Fatalf("query %q (expecting %v) reached the login: %+v", query, expecting, res)
		case res != nil && res.res != nil && (res.res.State != fuzzState || res.res.Code == ""):
			t.Fatalf("query %q gave result %+v", query, res.res)
		case strings.Contains(body, "Logged in") && (res == nil || res.res == nil):
			t.Fatalf("query %q shows success without a code for the login:\n%s", query, body)
		case exact && res == nil:
			t.Fatalf("query %q has the exact state but the login got no answer (status %d)", query, w.Code)
		}
		if n := strings.Count(body, "<"); n != 7 {
			t.Fatalf("query %q put markup in the page (%d '<', want 7):\n%s", query, n, body)
		}
		if w.Header().Get("Content-Security-Policy") != "default-src 'none'" {
			t.Fatalf("query %q: page served without its Content-Security-Policy", query)
		}
	})
}

// firstState is the value of the first parameter named exactly "state" in
// raw, decoded as a form value; it is written apart from net/url's Query so
// the check does not just repeat the handler.
func firstState(raw string) string {
	for pair := range strings.SplitSeq(raw, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if strings.Contains(k, ";") || strings.Contains(v, ";") {
			continue // net/url drops pairs with a semicolon
		}
		key, err1 := url.QueryUnescape(k)
		val, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			continue // net/url drops pairs it cannot decode
		}
		if key == "state" {
			return val
		}
	}
	return ""
}
