package sandbox

import (
	"os"
	"path/filepath"
	"strings"
)

// cgroupStatus explains why no per-server cgroup is applied. Per-server
// cgroups (memory.max, pids.max) need cgroup v2 with the memory and pids
// controllers delegated to Moat's own cgroup.
func cgroupStatus() string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "cannot read /proc/self/cgroup: " + err.Error()
	}
	var rel string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if r, ok := strings.CutPrefix(line, "0::"); ok {
			rel = r
		}
	}
	mount := ""
	for _, m := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		if _, err := os.Stat(filepath.Join(m, "cgroup.controllers")); err == nil {
			mount = m
			break
		}
	}
	if mount == "" || rel == "" {
		return "no cgroup v2 hierarchy: only rlimits apply (RLIMIT_NPROC is per user, not per server)"
	}
	ctrl, _ := os.ReadFile(filepath.Join(mount, rel, "cgroup.subtree_control"))
	if !strings.Contains(string(ctrl), "memory") || !strings.Contains(string(ctrl), "pids") {
		return "cgroup v2 at " + filepath.Join(mount, rel) + " has no memory+pids controllers delegated: only rlimits apply"
	}
	return "cgroup v2 memory+pids are delegated, but per-server cgroups are not implemented yet: only rlimits apply"
}
