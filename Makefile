# Moat: `make run` runs Moat on the example config; `make test` runs every test.
# Both install what they need first (npm test servers, gnome-keyring when root).

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME ?= 30s

# examples/moat.json finds the test servers through this variable.
export MOAT_REPO := $(CURDIR)

.PHONY: all build run test test-deps bench fuzz lint clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/moat ./cmd/moat
	$(GO) build -o bin/testserver ./testdata/testserver

test-deps:
	@scripts/test-deps.sh

# The demo keeps its audit log, and its encrypted secret file when no
# keychain answers, under .run/ rather than beside your real ones; that file
# store's passphrase is a demo value unless MOAT_PASSPHRASE is set.
run: build test-deps
	XDG_STATE_HOME=$(CURDIR)/.run/state XDG_DATA_HOME=$(CURDIR)/.run/data \
	MOAT_PASSPHRASE="$${MOAT_PASSPHRASE:-moat-make-run-demo}" ./bin/moat examples/moat.json

# Every test, with the race detector, inside a throwaway unlocked keyring.
test: test-deps lint
	scripts/with-keyring.sh $(GO) test -race -count=1 -timeout 20m ./...

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Benchmarks print their own numbers (see README, "Performance").
bench: build test-deps
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./...

# Each fuzz target runs for FUZZTIME; `make test` replays their corpora.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

clean:
	rm -rf bin
