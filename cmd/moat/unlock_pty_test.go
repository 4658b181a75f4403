//go:build linux

package main

import (
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestUnlockOnATerminal is the headless user's first contact, typed at a
// real terminal: `moat secret set` asks for the value and a passphrase,
// creates an encrypted store and says what a client-launched moat will
// need; `moat unlock` asks for the passphrase once; afterwards a moat with
// no terminal and no MOAT_PASSPHRASE reads the store.
func TestUnlockOnATerminal(t *testing.T) {
	env := headlessEnv(t)
	moat := testutil.BuildMoat(t)
	t.Cleanup(func() {
		cmd := exec.Command(moat, "lock")
		cmd.Env = env
		_ = cmd.Run()
	})

	// type runs moat ARGS on a terminal and answers each prompt in turn.
	typeAt := func(args []string, answers ...[2]string) (stdout, screen string) {
		t.Helper()
		master, tty := testutil.Pty(t)
		screenBuf := &testutil.SyncBuffer{}
		go io.Copy(screenBuf, master) // ends when the test closes master
		cmd := exec.Command(moat, args...)
		cmd.Env = env
		cmd.Stdin, cmd.Stderr = tty, tty
		out := &testutil.SyncBuffer{}
		cmd.Stdout = out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for _, a := range answers {
			waitFor(t, "the prompt "+a[0], func() bool { return strings.Contains(screenBuf.String(), a[0]) })
			// A person types after the prompt has turned echo off.
			waitFor(t, "echo off at "+a[0], func() bool {
				tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
				return err == nil && tio.Lflag&unix.ECHO == 0
			})
			if _, err := master.WriteString(a[1] + "\n"); err != nil {
				t.Fatal(err)
			}
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("moat %s: %v\nstdout:\n%s\nterminal:\n%s", strings.Join(args, " "), err, out, screenBuf)
		}
		return out.String(), screenBuf.String()
	}

	_, screen := typeAt([]string{"secret", "set", "tok"},
		[2]string{"Value for tok", "typed-secret-value"},
		[2]string{"Passphrase for", "typed-passphrase"})
	if !strings.Contains(screen, "moat unlock") {
		t.Errorf("secret set, creating an encrypted store from the prompt, did not say what a client-launched moat needs:\n%s", screen)
	}
	if strings.Contains(screen, "typed-secret-value") || strings.Contains(screen, "typed-passphrase") {
		t.Errorf("the terminal echoed a hidden input:\n%s", screen)
	}

	// No terminal, no passphrase: locked.
	list := exec.Command(moat, "secret", "list")
	list.Env = env
	if out, err := list.CombinedOutput(); err == nil || !strings.Contains(string(out), "moat unlock") {
		t.Fatalf("secret list before moat unlock: %v\n%s\nwant a failure that names moat unlock", err, out)
	}

	out, _ := typeAt([]string{"unlock"}, [2]string{"Passphrase for", "typed-passphrase"})
	if !strings.Contains(out, "unlocked") {
		t.Fatalf("moat unlock printed:\n%s", out)
	}
	list = exec.Command(moat, "secret", "list")
	list.Env = slices.Clone(env)
	got, err := list.CombinedOutput()
	if err != nil || !strings.Contains(string(got), "tok") || !strings.Contains(string(got), "key from the kernel keyring") {
		t.Fatalf("secret list after moat unlock, with no terminal and no passphrase: %v\n%s", err, got)
	}
}
