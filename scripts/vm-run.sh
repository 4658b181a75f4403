#!/usr/bin/env bash
# Runs one program inside a throwaway Linux VM whose only cgroup hierarchy is
# cgroup v2 with every controller, so that Moat's cgroup v2 code runs on a
# real kernel even on a host with a v1 or hybrid hierarchy.
#
#   scripts/vm-run.sh [--user UID] [--env KEY=VALUE]... [--copy PATH]... -- PROGRAM [ARGS...]
#   scripts/vm-run.sh --fetch     download the newest Debian kernel into the cache
#   scripts/vm-run.sh --check     exit 0 when qemu and a cached kernel are there (3: no qemu, 4: no kernel)
#
# The VM (qemu-system-x86_64, KVM when /dev/kvm works, else TCG; 1 GiB, 2 CPUs,
# no network) boots Debian's kernel with scripts/vminit as PID 1 and sees:
#   - the host's root filesystem, read-only (9p), so host programs run as they are;
#   - fresh /proc, /sys, /dev, /dev/pts, /dev/shm, and tmpfs on /tmp and /run;
#   - cgroup2 on /sys/fs/cgroup, every controller enabled in the root's subtree.
# PROGRAM runs with stdin /dev/null, stdout and stderr on the console (one
# stream, which this script prints on its stdout), environment PATH (the
# caller's), HOME=/tmp, TMPDIR=/tmp and the --env pairs only, in the caller's
# directory (or /tmp if it cannot enter it). As root (default) it starts in
# /sys/fs/cgroup/test; with --user UID, as UID (gid UID, no other groups) in
# /sys/fs/cgroup/user.slice/deleg, delegated to UID as systemd's Delegate=yes
# does. Both cgroups start empty of other processes, with no controllers
# enabled in their own subtree_control.
#
# The guest's /tmp hides the host's: PROGRAM, when under /tmp, and each
# --copy PATH (under /tmp, file or directory) are copied in at the same path.
#
# Exit status: PROGRAM's (128+N if killed by signal N); 124 when the VM ran
# past VM_TIMEOUT seconds (default 300); 125 when the VM failed (kernel
# panic, init error, qemu error: the console above says which); 3 when qemu is
# not installed; 2 for a usage error. PROGRAM's output ends with a newline
# (added if it had none). The console's last line inside the VM is
# VM-EXIT-STATUS=<n>; this script swallows it and what follows.
#
# Environment: VM_TIMEOUT (seconds), VM_ACCEL=kvm|tcg (default: kvm if a
# test boot under it works, found once per machine), VM_DEBUG=1 (show the kernel's messages). Cache:
# ${XDG_CACHE_HOME:-$HOME/.cache}/moat-vm/<kernel version>/ holds the .deb,
# the extracted kernel and modules, and initramfs builds keyed by the init's
# sources; a run uses the newest kernel there and downloads one
# (apt-get download, never installed) only when none is cached.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/moat-vm"

say() { printf 'vm-run: %s\n' "$*" >&2; }
usage() {
	sed -n '5,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

mode=run uid=0
copies=() envs=()
while [ $# -gt 0 ]; do
	case "$1" in
	--user) [ $# -ge 2 ] || usage; uid=$2; shift 2 ;;
	--env) [ $# -ge 2 ] || usage; envs+=("$2"); shift 2 ;;
	--copy) [ $# -ge 2 ] || usage; copies+=("$2"); shift 2 ;;
	--fetch) mode=fetch; shift ;;
	--check) mode=check; shift ;;
	--) shift; break ;;
	*) usage ;;
	esac
done
case "$uid" in '' | *[!0-9]*) say "--user wants a numeric uid, not '$uid'"; exit 2 ;; esac
if [ "$mode" = run ] && [ $# -eq 0 ]; then usage; fi

need_qemu() {
	if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
		say "qemu-system-x86_64 is not installed."
		say "Install it: sudo apt-get install --no-install-recommends qemu-system-x86 (or run scripts/test-deps.sh as root)."
		exit 3
	fi
}

# newest_cached prints the newest kernel version with a complete cache entry.
newest_cached() {
	local d
	for d in "$cache"/*/vmlinuz; do
		[ -f "$d" ] && basename "$(dirname "$d")"
	done | sort -V | tail -n 1
}

# newest_available prints the newest linux-image-6.*-amd64 (generic flavour)
# apt knows, e.g. 6.12.117+deb12-amd64.
newest_available() {
	apt-cache search --names-only '^linux-image-6\..*-amd64$' 2>/dev/null |
		awk '{print $1}' | grep -v -e '-cloud-amd64$' -e '-rt-amd64$' |
		sed 's/^linux-image-//' | sort -V | tail -n 1
}

# fetch downloads and unpacks the newest kernel unless it is cached already.
fetch() {
	local kver tmp
	kver=$(newest_available)
	if [ -z "$kver" ] && [ "$(id -u)" -eq 0 ]; then
		apt-get update -qq
		kver=$(newest_available)
	fi
	if [ -z "$kver" ]; then
		say "apt knows no linux-image-6.*-amd64 package; run apt-get update (as root) and try again."
		exit 1
	fi
	if [ -f "$cache/$kver/vmlinuz" ]; then
		return
	fi
	say "downloading Debian's kernel linux-image-$kver into $cache (once)"
	mkdir -p "$cache"
	tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
	# shellcheck disable=SC2064
	trap "rm -rf '$tmp'" EXIT
	local sandbox=()
	if [ "$(id -u)" -eq 0 ]; then sandbox=(-o APT::Sandbox::User=root); fi
	(cd "$tmp" && apt-get download -qq "${sandbox[@]}" "linux-image-$kver" >/dev/null)
	mkdir "$tmp/x" "$tmp/k"
	dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/x"
	local config="$tmp/x/boot/config-$kver" opt
	for opt in CONFIG_SECURITY_LANDLOCK=y CONFIG_CGROUPS=y CONFIG_MEMCG=y CONFIG_CGROUP_PIDS=y \
		CONFIG_VIRTIO_PCI=y CONFIG_SERIAL_8250_CONSOLE=y CONFIG_DEVTMPFS=y CONFIG_BLK_DEV_INITRD=y CONFIG_RD_GZIP=y \
		'CONFIG_9P_FS=[ym]' 'CONFIG_NET_9P_VIRTIO=[ym]' 'CONFIG_LSM=".*landlock'; do
		if ! grep -q "^$opt" "$config"; then
			say "linux-image-$kver lacks $opt (see $config); the VM tests need it."
			exit 1
		fi
	done
	mv "$tmp/x/boot/vmlinuz-$kver" "$tmp/k/vmlinuz"
	mv "$config" "$tmp/k/config"
	mv "$tmp/x/lib/modules/$kver" "$tmp/k/modules"
	mv "$tmp"/linux-image-*.deb "$tmp/k/"
	rm -rf "$cache/$kver"
	mv "$tmp/k" "$cache/$kver"
	rm -rf "$tmp"
	trap - EXIT
}

case "$mode" in
fetch)
	fetch
	exit 0
	;;
check)
	need_qemu
	if [ -z "$(newest_cached)" ]; then
		say "no kernel in $cache; run scripts/test-deps.sh (as root) or scripts/vm-run.sh --fetch"
		exit 4
	fi
	exit 0
	;;
esac

need_qemu
kver=$(newest_cached)
if [ -z "$kver" ]; then
	fetch
	kver=$(newest_cached)
fi
kdir="$cache/$kver"

# The init is rebuilt, and the initramfs repacked, whenever its sources or
# the module's dependencies change.
hash=$(cd "$root" && cat scripts/vminit/*.go go.mod go.sum | sha256sum | cut -c1-16)
init="$cache/vminit-$hash"
if [ ! -x "$init" ]; then
	(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$init.tmp.$$" ./scripts/vminit)
	mv "$init.tmp.$$" "$init"
fi
initramfs="$kdir/initramfs-$hash.cpio.gz"
if [ ! -f "$initramfs" ]; then
	"$init" pack -o "$initramfs" -init "$init" -modules "$kdir/modules" -module 9p -module 9pnet_virtio
fi

# PROGRAM runs at the same path: resolve it as the caller's shell would.
prog=$1
shift
case "$prog" in
*/*) ;;
*)
	p=$(command -v "$prog" 2>/dev/null) || { say "$prog: not found in PATH"; exit 127; }
	prog=$p
	;;
esac
if [ ! -e "$prog" ]; then
	say "$prog: no such file"
	exit 127
fi
prog=$(realpath "$prog")
case "$prog" in /tmp/*) copies+=("$prog") ;; esac

run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
specargs=(-o "$run/spec.cpio" -uid "$uid" -dir "$PWD"
	-env "PATH=$PATH" -env HOME=/tmp -env TMPDIR=/tmp)
for e in ${envs[@]+"${envs[@]}"}; do specargs+=(-env "$e"); done
for c in ${copies[@]+"${copies[@]}"}; do specargs+=(-copy "$(realpath "$c")"); done
"$init" spec "${specargs[@]}" -- "$prog" "$@"
# The kernel unpacks concatenated archives in turn; the uncompressed one first.
cat "$run/spec.cpio" "$initramfs" >"$run/initrd"

# KVM when it works. Under nested virtualization /dev/kvm can create a VM and
# yet the guest stops on a "KVM internal error" (qemu then hangs paused), so
# the first run on a machine boots /bin/true under KVM to find out, and the
# verdict is kept per host kernel.
accel=${VM_ACCEL:-}
if [ -z "$accel" ]; then
	verdict="$kdir/accel-host-$(uname -r)"
	if [ -s "$verdict" ]; then
		accel=$(cat "$verdict")
	elif ! "$init" kvm-ok 2>/dev/null; then
		accel=tcg
	else
		accel=tcg
		if VM_ACCEL=kvm VM_TIMEOUT=20 "${BASH_SOURCE[0]}" -- /bin/true >/dev/null 2>&1; then accel=kvm; fi
		echo "$accel" >"$verdict.$$" && mv "$verdict.$$" "$verdict"
		if [ "$accel" = tcg ]; then say "KVM is there but cannot boot this kernel (nested virtualization?); using TCG, which is slower (kept in $verdict)"; fi
	fi
fi
case "$accel" in
kvm) accelargs=(-enable-kvm -cpu host) ;;
tcg) accelargs=(-accel tcg -cpu max) ;;
*) say "VM_ACCEL must be kvm or tcg, not '$accel'"; exit 2 ;;
esac

# loglevel=1 keeps the kernel quiet but for KERN_EMERG, which is where a
# panic is printed; panic=-1 with -no-reboot turns a panic into qemu's exit.
cmdline="console=ttyS0 panic=-1 cgroup_no_v1=all rdinit=/init"
if [ "${VM_DEBUG:-}" = 1 ]; then
	cmdline+=" loglevel=7"
else
	cmdline+=" quiet loglevel=1"
fi

timeout=${VM_TIMEOUT:-300}

# boot runs the VM once. The program's exit status comes back through the
# serial console; "$run/started" tells a VM that never reached the init (a
# kernel that died while booting) from one whose program failed.
boot() {
	local append=$cmdline
	# VM_BREAK_FIRST_BOOT=1 (for the harness's test of the retry) points the
	# first boot at an init that does not exist: a real kernel that dies
	# before the init starts.
	if [ "${VM_BREAK_FIRST_BOOT:-}" = 1 ] && [ "$attempt" = 1 ]; then
		append=${cmdline/rdinit=\/init/rdinit=\/no-such-init}
	fi
	rm -f "$run/status" "$run/started"
	set +e
	timeout -k 5 "$timeout" qemu-system-x86_64 "${accelargs[@]}" \
		-M pc -m 1024 -smp 2 \
		-nodefaults -nographic -no-reboot -serial stdio -monitor none -nic none \
		-kernel "$kdir/vmlinuz" -initrd "$run/initrd" -append "$append" \
		-virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
		</dev/null |
		awk -v statusfile="$run/status" -v startedfile="$run/started" '
			# What comes before the init starts (BIOS, early kernel) is shown,
			# on stderr, only if the init never does; what comes after its last
			# line, never. Stdout carries only what the program printed.
			done { next }
			!started && /VM-INIT-STARTED\r?$/ { started = 1; early = ""; printf "" > startedfile; close(startedfile); next }
			!started { early = early $0 "\n"; next }
			/^VM-EXIT-STATUS=[0-9]+\r?$/ { sub(/\r$/, ""); sub(/^VM-EXIT-STATUS=/, ""); print > statusfile; done = 1; next }
			{ print; fflush() }
			END { if (!started) printf "%s", early > "/dev/stderr" }'
	rc=("${PIPESTATUS[@]}")
	set -e
}

# A kernel that dies before the init starts has run nothing of the program,
# so booting again cannot hide a failure of it. Emulated SMP (TCG) rarely
# trips over the kernel's own code patching while booting ("Oops: int3"),
# which is the emulator's fault, not the test's; another boot is the cure.
# Three boots, so that the retry test (whose first boot is broken on purpose)
# survives one such Oops on a loaded machine, as a real run survives one.
for attempt in 1 2 3; do
	boot
	if [ -e "$run/started" ] || [ "${rc[0]}" -eq 124 ]; then break; fi
	if [ "$attempt" -lt 3 ]; then say "booting once more: the kernel stopped before the init started (its messages above)"; fi
done

if [ -s "$run/status" ]; then
	exit "$(cat "$run/status")"
fi
if [ "${rc[0]}" -eq 124 ]; then
	say "the VM ran past VM_TIMEOUT=$timeout seconds and was stopped."
	exit 124
fi
say "the VM stopped without reporting the program's exit status (qemu exit ${rc[0]}): a kernel panic, an init error or a qemu error, shown above. VM_DEBUG=1 shows the kernel's messages."
exit 125
