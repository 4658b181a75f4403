package socket

// SetUserRuntimeDirs makes dir hold the users' runtime directories until
// the returned func is called.
func SetUserRuntimeDirs(dir string) (restore func()) {
	old := userRuntimeDirs
	userRuntimeDirs = dir
	return func() { userRuntimeDirs = old }
}
