//go:build !unix

package config

import "os"

// unsafeFile has no portable ownership check off Unix; Windows ACLs are
// not inspected yet.
func unsafeFile(string, os.FileInfo) *Problem { return nil }
