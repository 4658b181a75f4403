#!/usr/bin/env bash
# Usage: scripts/with-keyring.sh CMD [ARG...]
#
# Runs CMD with a real, throwaway, unlocked Secret Service (gnome-keyring) on a
# private D-Bus session, and MOAT_TEST_KEYRING=1 so that tests know the keyring
# they see is disposable. The keyring lives in a fresh temporary XDG_DATA_HOME
# (removed afterwards); HOME and XDG_CACHE_HOME are left alone so the Go build
# and module caches keep working.
#
# CMD runs directly, unchanged, when a session bus already exists
# (DBUS_SESSION_BUS_ADDRESS set: a desktop session, or a nested call) or when
# dbus-run-session or gnome-keyring-daemon is missing (keyring tests then skip;
# scripts/test-deps.sh installs them).
set -euo pipefail

if [ "$#" -eq 0 ]; then
	echo "usage: scripts/with-keyring.sh CMD [ARG...]" >&2
	exit 2
fi

if [ -n "${DBUS_SESSION_BUS_ADDRESS:-}" ] ||
	! command -v dbus-run-session >/dev/null 2>&1 ||
	! command -v gnome-keyring-daemon >/dev/null 2>&1; then
	exec "$@"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/moat-keyring.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -m 700 "$tmp/data" "$tmp/run"
# A private XDG_RUNTIME_DIR keeps the throwaway daemon's control socket away
# from a real gnome-keyring the user may be running.
export XDG_DATA_HOME="$tmp/data" XDG_RUNTIME_DIR="$tmp/run" MOAT_TEST_KEYRING=1

# Inside the session: start the daemon in the foreground as our own child (a
# daemonised one can outlive the session when CMD exits quickly), wait until it
# owns org.freedesktop.secrets (otherwise D-Bus would activate a second,
# locked daemon), run CMD, then stop and reap the daemon.
# --unlock reads the password on stdin and creates the "login" collection.
set +e
dbus-run-session -- bash -c '
	set -uo pipefail
	printf %s pw | gnome-keyring-daemon --foreground --unlock --components=secrets >/dev/null &
	keyring=$!
	trap "kill \$keyring 2>/dev/null; wait \$keyring 2>/dev/null" EXIT
	trap "exit 130" INT
	trap "exit 143" TERM
	for _ in $(seq 100); do
		if dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
			org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q "boolean true"; then
			"$@"
			exit
		fi
		if ! kill -0 "$keyring" 2>/dev/null; then break; fi
		sleep 0.05
	done
	echo "with-keyring: gnome-keyring-daemon did not come up on the session bus within 5s" >&2
	exit 1
' with-keyring "$@"
status=$?
set -e
exit "$status"
