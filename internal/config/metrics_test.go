package config

import (
	"slices"
	"testing"
)

func TestMetricsBlock(t *testing.T) {
	for _, tt := range []struct {
		name string
		src  string
		want Metrics
	}{
		{"absent", `{"mcpServers": {}}`, Metrics{}},
		{"loopback", mt(`{"listen": "127.0.0.1:9464"}`), Metrics{Listen: "127.0.0.1:9464"}},
		{"localhost with tokens", mt(`{"listen": "localhost:9464", "tokens": ["prom"]}`), Metrics{Listen: "localhost:9464", Tokens: []string{"prom"}}},
		{"off loopback", `{"mcpServers": {}, "gateway": {"tls": {"cert_file": "/c.pem", "key_file": "/k.pem"}}, "metrics": {"listen": "0.0.0.0:9464", "tokens": ["prom"]}}`,
			Metrics{Listen: "0.0.0.0:9464", Tokens: []string{"prom"}, TLS: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(writeConfig(t, tt.src), &LoadOptions{Getenv: env(nil)})
			if err != nil {
				t.Fatal(err)
			}
			got := cfg.Metrics
			if got.Listen != tt.want.Listen || got.TLS != tt.want.TLS || !slices.Equal(got.Tokens, tt.want.Tokens) {
				t.Errorf("Metrics = %+v, want %+v", got, tt.want)
			}
		})
	}
}
