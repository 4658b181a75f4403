#!/usr/bin/env bash
# Installs what `make run` needs and nothing else: the two npm MCP servers of
# examples/moat.json (server-everything, server-filesystem), pinned in
# scripts/example-servers/package-lock.json, into its node_modules. The tests' own
# parts (clients, the conformance suite, a keyring, a VM) are
# scripts/test-deps.sh's job.
#
# Idempotent and silent when everything is in place.
set -euo pipefail

examples="$(cd "$(dirname "${BASH_SOURCE[0]}")/example-servers" && pwd)"
say() { printf 'run-deps: %s\n' "$*" >&2; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	say "Node.js (20 or newer) and npm are not installed; the example's servers everything and files need them (the testserver group works without)."
	say "Install them (Debian/Ubuntu: sudo apt-get install nodejs npm) and run make run again."
	exit 0
fi
# npm writes node_modules/.package-lock.json on every install, so it is older
# than package-lock.json exactly when the lock changed since the last install.
if [ ! -d "$examples/node_modules" ] || [ "$examples/package-lock.json" -nt "$examples/node_modules/.package-lock.json" ]; then
	say "installing the example's MCP servers from scripts/example-servers/package-lock.json"
	npm ci --prefix "$examples" --no-audit --no-fund --loglevel=error </dev/null >/dev/null
fi
