package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/zalando/go-keyring"
)

// TestWithKeyringScript runs this test binary under scripts/with-keyring.sh
// and checks, from inside, that a real unlocked Secret Service answers; then,
// from outside, that the throwaway keyring daemon did not outlive the script.
func TestWithKeyringScript(t *testing.T) {
	if os.Getenv("MOAT_WITH_KEYRING_HELPER") == "1" {
		keyringHelper()
		return
	}
	for _, bin := range []string{"dbus-run-session", "gnome-keyring-daemon", "dbus-send"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing(t, bin+" is not installed (package gnome-keyring)")
		}
	}
	script := filepath.Join(RepoRoot(t), "scripts", "with-keyring.sh")
	cmd := exec.Command(script, os.Args[0], "-test.run=^TestWithKeyringScript$", "-test.count=1")
	// Without a session bus the script must make its own.
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(e string) bool {
		return strings.HasPrefix(e, "DBUS_SESSION_BUS_ADDRESS=") || strings.HasPrefix(e, "MOAT_TEST_KEYRING=")
	}), "MOAT_WITH_KEYRING_HELPER=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("with-keyring.sh: %v\n%s", err, out)
	}
	var daemons []int
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "HELPER daemon "); ok {
			pid, err := strconv.Atoi(rest)
			if err != nil {
				t.Fatalf("helper said %q", line)
			}
			daemons = append(daemons, pid)
		}
	}
	if !strings.Contains(string(out), "HELPER ok") {
		t.Fatalf("keyring helper did not succeed:\n%s", out)
	}
	if len(daemons) != 1 {
		t.Fatalf("found %d gnome-keyring-daemon processes beside the helper, want 1:\n%s", len(daemons), out)
	}
	NoProcessesLeft(t, daemons)
}

// keyringHelper runs inside with-keyring.sh: it reports the keyring daemon's
// pid and uses the keyring as Moat will.
func keyringHelper() {
	fail := func(format string, a ...any) {
		fmt.Printf("HELPER FAIL "+format+"\n", a...)
		os.Exit(1)
	}
	if os.Getenv("MOAT_TEST_KEYRING") != "1" || os.Getenv("DBUS_SESSION_BUS_ADDRESS") == "" {
		fail("MOAT_TEST_KEYRING=%q DBUS_SESSION_BUS_ADDRESS=%q", os.Getenv("MOAT_TEST_KEYRING"), os.Getenv("DBUS_SESSION_BUS_ADDRESS"))
	}
	for _, pid := range Descendants(os.Getppid()) {
		if st, err := readStat(pid); err == nil && st.comm == "gnome-keyring-d" {
			fmt.Printf("HELPER daemon %d\n", pid)
		}
	}
	if err := keyring.Set("moat-test", "alice", "s3cret"); err != nil {
		fail("set: %v", err)
	}
	if got, err := keyring.Get("moat-test", "alice"); err != nil || got != "s3cret" {
		fail("get = %q, %v", got, err)
	}
	if err := keyring.Delete("moat-test", "alice"); err != nil {
		fail("delete: %v", err)
	}
	fmt.Println("HELPER ok")
}
