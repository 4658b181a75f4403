package sandbox

import "syscall"

// launchConfig is what the parent sends the launcher on fd 3, as one JSON
// value. The write end stays open for the child's whole life: EOF on it tells
// the launcher that Moat is gone (or is stopping it) and the tree must die.
type launchConfig struct {
	Name string   `json:"name"`
	Path string   `json:"path"`
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Dir  string   `json:"dir"`
	Mode Mode     `json:"mode"`
	// Memory is the memory limit; MemorySet says the config set it. The
	// launcher sets RLIMIT_AS from both (see MinAddressSpace).
	Memory     uint64 `json:"memory"`
	MemorySet  bool   `json:"memory_set"`
	CPUSeconds uint64 `json:"cpu_seconds"`
	MaxFiles   uint64 `json:"max_files"`
	MaxProcs   uint64 `json:"max_procs"` // 0 = default, not explicitly asked
	MaxFSize   uint64 `json:"max_file_size"`
	// Landlock: nil ReadPaths and WritePaths = no filesystem restriction.
	Landlock   bool     `json:"landlock"`
	ReadPaths  []string `json:"read_paths"`
	WritePaths []string `json:"write_paths"`
	NetConnect []uint16 `json:"net_connect"` // nil = unrestricted
	NewNetNS   bool     `json:"new_netns"`
	// Isolated: the launcher runs in its own user, PID, mount and IPC
	// namespaces (it is their PID 1) and sets up the target's view before
	// starting it: a /proc of its own, Hide covered, and, when the target's
	// working directory is a private one under PrivateRoot, PrivateRoot
	// covered with only that directory put back.
	Isolated    bool     `json:"isolated"`
	Hide        []string `json:"hide"`
	PrivateRoot string   `json:"private_root"`
	// RunAs, when set, is the uid and gid the target runs as.
	RunAs *runAs `json:"run_as,omitempty"`
	// Probe: set up the namespaces as for a target, report, and exit
	// without starting anything (Namespaces).
	Probe bool `json:"probe"`
	// CgroupProcs are the cgroup.procs files of the child's cgroup (one
	// for v2, one per hierarchy for v1), which the launcher puts the target
	// into before it runs; nil = no per-server cgroup (CgroupDetail says why).
	CgroupProcs []string `json:"cgroup_procs"`
	// CgroupClone (v2 only) is the cgroup directory the target is cloned
	// straight into (clone3 CLONE_INTO_CGROUP, Linux >= 5.7): no migration,
	// which in the kernel waits for an RCU grace period (about 10 ms).
	// CgroupProcs is the fallback on older kernels.
	CgroupClone  string `json:"cgroup_clone"`
	CgroupDetail string `json:"cgroup_detail"`
	// CgroupDirs are removed by the launcher once it has reaped the tree,
	// so they go away even when Moat was killed.
	CgroupDirs []string `json:"cgroup_dirs"`
}

// runAs is a uid and gid to run the target as (Spec.RunAs).
type runAs struct {
	Uid, Gid uint32
}

// launchStatus is what the launcher writes on fd 4: Ready as soon as it runs
// (before it reads its configuration), then one message with Pid and Report
// (or Error), then, when the target has exited, one with Exit.
type launchStatus struct {
	Ready  bool    `json:"ready,omitempty"`
	Pid    int     `json:"pid,omitempty"`
	Report *Report `json:"report,omitempty"`
	Error  string  `json:"error,omitempty"`
	Exit   string  `json:"exit,omitempty"`
	// Namespaces is set with Error when the failure was setting up the
	// namespaces: in best-effort mode the parent starts the child again
	// without them.
	Namespaces bool            `json:"namespaces,omitempty"`
	Rusage     *syscall.Rusage `json:"rusage,omitempty"`
}
