#!/usr/bin/env bash
# Installs the real parts Moat's tests run against, and says what it cannot install.
#
#   - npm packages pinned in testdata/package-lock.json (server-everything,
#     server-filesystem), into testdata/node_modules;
#   - gnome-keyring (a real Secret Service for the keyring tests), with apt-get
#     when run as root; otherwise it prints the command to run;
#   - systemd (systemd-socket-activate, systemd-analyze) the same way;
#   - qemu-system-x86 and xz-utils the same way, and Debian's kernel .deb
#     (apt-get download, not installed) into the cache of scripts/vm-run.sh,
#     for the tests that run in a cgroup v2 VM.
#
# Idempotent and silent when everything is in place. A missing Node.js is a
# warning (those tests skip loudly) except under CI=true, where it is an error.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
testdata="$root/testdata"
status=0

say() { printf 'test-deps: %s\n' "$*" >&2; }

# npm writes node_modules/.package-lock.json on every install, so it is older
# than package-lock.json exactly when the lock changed since the last install.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	say "Node.js (20 or newer) and npm are not installed; tests against the npm MCP servers will skip."
	say "Install them (Debian/Ubuntu: apt-get install nodejs npm, or https://nodejs.org/) and run make test-deps again."
	if [ "${CI:-}" = true ]; then status=1; fi
elif [ ! -d "$testdata/node_modules" ] || [ "$testdata/package-lock.json" -nt "$testdata/node_modules/.package-lock.json" ]; then
	say "installing npm packages from testdata/package-lock.json"
	npm ci --prefix "$testdata" --no-audit --no-fund --loglevel=error </dev/null >/dev/null
fi

# gnome-keyring pulls dbus-user-session (dbus-run-session). Not dbus-x11: its
# dbus-launch autolaunch leaves daemons behind when a test has no session bus.
if ! command -v gnome-keyring-daemon >/dev/null 2>&1 || ! command -v dbus-run-session >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		say "installing gnome-keyring (a real Secret Service for the keyring tests)"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnome-keyring >/dev/null
	else
		say "gnome-keyring-daemon or dbus-run-session is missing; the real-keyring tests will skip."
		say "Install them: sudo apt-get install --no-install-recommends gnome-keyring dbus-daemon (Debian/Ubuntu), or your distribution's gnome-keyring package."
		if [ "${CI:-}" = true ]; then status=1; fi
	fi
fi

# zsh and fish: `moat completion` scripts are checked with their own parsers.
for sh in zsh fish; do
	if ! command -v "$sh" >/dev/null 2>&1; then
		if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
			say "installing $sh (to check moat's $sh completion script)"
			apt-get update -qq
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$sh" >/dev/null
		else
			say "$sh is missing; its completion test will skip (install it: sudo apt-get install $sh)"
			if [ "${CI:-}" = true ]; then status=1; fi
		fi
	fi
done

# systemd's own tools: systemd-socket-activate starts the gateway as a
# .socket unit would, and systemd-analyze verifies README's units.
if ! command -v systemd-socket-activate >/dev/null 2>&1 || ! command -v systemd-analyze >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		say "installing systemd (systemd-socket-activate and systemd-analyze, for the gateway's socket activation)"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
	else
		say "systemd-socket-activate or systemd-analyze is missing; the socket activation tests will skip."
		say "Install them: sudo apt-get install --no-install-recommends systemd"
		if [ "${CI:-}" = true ]; then status=1; fi
	fi
fi

# qemu-system-x86 boots the cgroup v2 VM (scripts/vm-run.sh,
# testutil.RunInVM) and xz-utils unpacks the kernel's modules for its
# initramfs. Then the kernel .deb is fetched into the cache, so that no test
# downloads it mid-run.
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v xz >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		say "installing qemu-system-x86 and xz-utils (the cgroup v2 VM of the sandbox tests)"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 xz-utils >/dev/null
	else
		say "qemu-system-x86_64 or xz is missing; the cgroup v2 VM tests will skip."
		say "Install them: sudo apt-get install --no-install-recommends qemu-system-x86 xz-utils"
		if [ "${CI:-}" = true ]; then status=1; fi
	fi
fi
if command -v qemu-system-x86_64 >/dev/null 2>&1 && ! "$root/scripts/vm-run.sh" --check >/dev/null 2>&1; then
	if ! "$root/scripts/vm-run.sh" --fetch; then
		say "could not fetch the VM's kernel; the cgroup v2 VM tests will skip (run scripts/vm-run.sh --fetch)."
		if [ "${CI:-}" = true ]; then status=1; fi
	fi
fi

exit "$status"
