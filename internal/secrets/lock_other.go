//go:build !unix

package secrets

// Without flock, only the Store's own mutex serializes writes: two moat
// processes writing the keychain index at once can drop a name from it.
func lockStore(string) (func(), error) { return func() {}, nil }

func tryLockStore(string) (func(), bool, error) { return func() {}, true, nil }
