//go:build !linux

package main

import (
	"errors"
	"runtime"
)

// nonDumpable is Linux only (PR_SET_DUMPABLE).
func nonDumpable() error {
	return errors.New("not available on " + runtime.GOOS)
}
