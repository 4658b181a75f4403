# Moat: `make run` runs Moat on the example config; `make test` runs every test.
# Each installs what it needs first: `make run` the example's two npm servers
# (scripts/run-deps.sh); `make test` those and the tests' own parts
# (scripts/test-deps.sh: npm clients and servers, gnome-keyring, zsh, fish,
# qemu and a kernel when root).

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# The OTLP/HTTP trace exporter links gRPC for its config types
# (opentelemetry-go#2579); Moat never speaks gRPC, and this gRPC-supported tag
# drops its x/net/trace, about 5 MB of the binary.
TAGS    := grpcnotrace
FUZZTIME ?= 30s

# examples/moat.json finds the test servers through this variable.
export MOAT_REPO := $(CURDIR)

.PHONY: all build install run run-deps inspect test test-deps bench profile fuzz lint clean

all: build

build:
	$(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o bin/moat ./cmd/moat
	$(GO) build -o bin/testserver ./testdata/testserver

# install puts moat in $(go env GOBIN), else $(go env GOPATH)/bin.
install:
	$(GO) install -tags $(TAGS) -ldflags "$(LDFLAGS)" ./cmd/moat

run-deps:
	@scripts/run-deps.sh

test-deps: run-deps
	@scripts/test-deps.sh

# The demo keeps its audit log, and its secret file store when no keychain
# answers, under .run/ rather than beside your real ones. Without a keychain
# or MOAT_PASSPHRASE that store is protected by file permissions only, as on
# any headless host (README, "Secrets, OAuth and the audit log").
#
# stdout is the MCP stream, so a client may launch `make run` itself: the
# build and the install report on stderr, and make echoes nothing.
run:
	@$(MAKE) --no-print-directory build run-deps >&2
	@XDG_STATE_HOME=$(CURDIR)/.run/state XDG_DATA_HOME=$(CURDIR)/.run/data exec ./bin/moat examples/moat.json

# The demo in the MCP Inspector (a web UI from the npm registry): the same
# environment as make run, passed with -e since the Inspector starts moat.
inspect: build run-deps
	npx -y @modelcontextprotocol/inspector -e MOAT_REPO=$(CURDIR) \
		-e XDG_STATE_HOME=$(CURDIR)/.run/state -e XDG_DATA_HOME=$(CURDIR)/.run/data \
		./bin/moat examples/moat.json

# Every test, with the race detector, inside a throwaway unlocked keyring;
# then the tests of the go-sdk packages third_party/go-sdk.patch changes
# (a module of its own, so ./... does not reach it).
test: test-deps lint
	scripts/with-keyring.sh $(GO) test -race -count=1 -timeout 20m ./...
	cd third_party/go-sdk && $(GO) test -race -count=1 ./internal/json ./internal/jsonrpc2 ./jsonrpc

# lint: gofmt, go vet, then staticcheck at a pinned version, installed into
# $(go env GOPATH)/bin when missing or another version. Checks: every check
# except the naming and doc-comment-form style checks (ST1003, ST1016,
# ST1020-ST1023), which only restate taste; every bug check (SA*) is on.
# One family of SA1019 notes is let through: go-sdk marks the roots,
# sampling and logging features deprecated for protocol 2026-07-28
# (SEP-2577), and Moat forwards them on purpose for clients of the older
# protocol versions. Any other finding, SA1019 included, fails lint.
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK_CHECKS  ?= all,-ST1003,-ST1016,-ST1020,-ST1021,-ST1022,-ST1023

# macOS gets a reduced sandbox (see SECURITY.md), so it must keep building:
# `go vet` for darwin compiles every package and test there.
lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	@bin="$$($(GO) env GOPATH | cut -d: -f1)/bin"; \
	if ! "$$bin/staticcheck" -version 2>/dev/null | grep -qF "($(patsubst v%,%,$(STATICCHECK_VERSION)))"; then \
		echo "installing staticcheck $(STATICCHECK_VERSION) into $$bin"; \
		GOBIN="$$bin" $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) || exit 1; \
	fi; \
	echo "staticcheck -checks $(STATICCHECK_CHECKS) ./..."; \
	out="$$("$$bin/staticcheck" -checks "$(STATICCHECK_CHECKS)" ./... 2>&1)"; rc=$$?; \
	left="$$(printf '%s\n' "$$out" | grep -v 'SEP-2577' | grep . || true)"; \
	if [ -n "$$left" ]; then printf '%s\n' "$$left"; exit 1; fi; \
	if [ $$rc -ne 0 ] && [ -z "$$out" ]; then echo "staticcheck failed (exit $$rc)"; exit $$rc; fi

# Every benchmark, one package at a time (-p 1: go test would run two
# packages' benchmarks at once and each would disturb the other), then the
# table of README's "Performance" (printed, and written into README.md
# between its bench markers) from this one run, with the machine's load
# during it (internal/benchreport).
bench: build test-deps
	$(GO) run ./internal/benchreport -readme README.md -- $(GO) test -p 1 -run '^$$' -bench . -benchmem -count=1 -timeout 60m ./...

# A CPU profile of a serving moat, not of the benchmark's client: the echo
# benchmark (defaults) drives it for PROFILE_CALLS calls; the top functions
# are printed and the profile kept in moat-cpu.pprof (go tool pprof it).
PROFILE_CALLS ?= 3000
profile: build test-deps
	rm -f moat-cpu.pprof
	MOAT_CPUPROFILE=$(CURDIR)/moat-cpu.pprof $(GO) test -run '^$$' -bench 'EchoRoundTrip/defaults' -benchtime $(PROFILE_CALLS)x -count=1 ./cmd/moat
	$(GO) tool pprof -top -nodecount 40 moat-cpu.pprof

# Each Fuzz* target of every package runs for FUZZTIME (fuzz/README.md lists
# them); `make test` replays their seeds and every crash kept in
# <package>/testdata/fuzz/<Target>/. A crash is written there by go test:
# commit it as the regression test. All targets run; failures are listed.
fuzz:
	@failed=""; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || failed="$$failed $$pkg.$$f"; \
		done; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz targets that failed:$$failed"; exit 1; fi

clean:
	rm -rf bin
