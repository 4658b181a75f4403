package main

import (
	"log/slog"
	"os"
	"runtime/pprof"
)

// startProfile writes a CPU profile of this serving moat to the file
// $MOAT_CPUPROFILE names, if set (`make profile` sets it while the echo
// benchmark drives moat); the returned stop ends and writes it. A profile
// of the benchmark's own process would show the client, not Moat.
func startProfile(log *slog.Logger) (stop func()) {
	path := os.Getenv("MOAT_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		log.Warn("MOAT_CPUPROFILE: cannot create the profile", "err", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Warn("MOAT_CPUPROFILE: cannot start profiling", "err", err)
		f.Close()
		return func() {}
	}
	log.Info("writing a CPU profile", "path", path)
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			log.Warn("MOAT_CPUPROFILE: writing the profile failed", "err", err)
		}
	}
}
