package netguard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkGuardedRoundTrip compares a small loopback request through the
// guarded client with the same request through a plain client, to show what
// the guard costs per request (connections are reused in both).
func BenchmarkGuardedRoundTrip(b *testing.B) {
	body := strings.Repeat("x", 1024)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
	defer s.Close()
	guarded, err := NewClient(s.URL, &Options{Headers: map[string]string{"X-Team": "infra", "Authorization": "Bearer x"}})
	if err != nil {
		b.Fatal(err)
	}
	plain := &http.Client{Transport: &http.Transport{}}
	for _, bc := range []struct {
		name string
		c    *http.Client
	}{{"plain", plain}, {"guarded", guarded}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest("GET", s.URL+"/mcp", nil)
				req.Header.Set("X-Team", "infra")
				req.Header.Set("Authorization", "Bearer x")
				resp, err := bc.c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
		bc.c.CloseIdleConnections()
	}
}
