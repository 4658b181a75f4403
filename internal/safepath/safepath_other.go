//go:build !unix

package safepath

import "io/fs"

// Supported is false here: file ownership is not checked off Unix
// (Windows ACLs are not inspected yet).
const Supported = false

// Check checks nothing off Unix.
func Check(string, Kind) error { return nil }

// CheckInfo checks nothing off Unix.
func CheckInfo(string, fs.FileInfo, Kind) error { return nil }
