//go:build linux

package main

import (
	"context"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"golang.org/x/sys/unix"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestUnlockOnATerminal is the headless user's first contact, typed at a
// real terminal: `moat secret set` asks for the value and a passphrase,
// creates an encrypted store and says what a client-launched moat will
// need; `moat unlock` asks for the passphrase once; afterwards a moat with
// no terminal and no MOAT_PASSPHRASE reads the store.
func TestUnlockOnATerminal(t *testing.T) {
	needKernelKeyring(t)
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
			testutil.Eventually(t, "the prompt "+a[0], func() bool { return strings.Contains(screenBuf.String(), a[0]) })
			// A person types after the prompt has turned echo off.
			testutil.Eventually(t, "echo off at "+a[0], func() bool {
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

	// A new store's passphrase is typed twice: a typo would lock it for good.
	_, screen := typeAt([]string{"secret", "set", "tok"},
		[2]string{"Value for tok", "typed-secret-value"},
		[2]string{"new encrypted secret store", "typed-passphrase"},
		[2]string{"Again:", "typed-passphrase"})
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

// TestUnlockServesAClientLaunchedMoat: after `moat unlock` in one process
// (a terminal), a moat that a client launches with no passphrase at all
// opens the encrypted store, under require_encryption, and serves; after
// `moat lock` the next one refuses calls and says to run `moat unlock`.
func TestUnlockServesAClientLaunchedMoat(t *testing.T) {
	needKernelKeyring(t)
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test")},
		map[string]any{"secrets": map[string]any{"require_encryption": true}})
	env := headlessEnv(t)
	moat := testutil.BuildMoat(t)
	run := func(env []string, args ...string) string {
		t.Helper()
		cmd := exec.Command(moat, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("moat %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		cmd := exec.Command(moat, "lock")
		cmd.Env = env
		_ = cmd.Run()
	})
	// A terminal with the passphrase: the store is created encrypted and unlocked.
	if out := run(append(slices.Clone(env), "MOAT_PASSPHRASE=unlock-test", "MOAT_CONFIG="+cfg), "unlock"); !strings.Contains(out, "until the next reboot") {
		t.Fatalf("moat unlock printed:\n%s", out)
	}

	call := func() (*mcp.CallToolResult, string) {
		t.Helper()
		cmd := exec.Command(moat, cfg)
		cmd.Env = env
		stderr := &testutil.SyncBuffer{}
		cmd.Stderr = stderr
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(context.Background(), &mcp.CommandTransport{Command: cmd}, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "unlocked-ok"}}})
		if err != nil {
			t.Fatal(err)
		}
		cs.Close()
		testutil.Eventually(t, "moat to exit", func() bool { return cmd.ProcessState != nil || !testutil.ProcessAlive(cmd.Process.Pid) })
		return res, stderr.String()
	}
	res, stderr := call()
	if res.IsError || !strings.Contains(resultText(res), "unlocked-ok") {
		t.Fatalf("call after moat unlock: isError=%v %q\nstderr:\n%s", res.IsError, resultText(res), stderr)
	}
	if !strings.Contains(stderr, `key_from="the kernel keyring (moat unlock)"`) {
		t.Errorf("moat's log does not say the key came from the kernel keyring:\n%s", stderr)
	}

	if out := run(env, "lock"); !strings.Contains(out, "locked") {
		t.Fatalf("moat lock printed:\n%s", out)
	}
	res, _ = call()
	if !res.IsError || !strings.Contains(resultText(res), "moat unlock") {
		t.Errorf("call after moat lock: isError=%v %q; want a refusal that names `moat unlock`", res.IsError, resultText(res))
	}
}

// needKernelKeyring skips where the kernel keyring is blocked (containers
// often block keyctl with seccomp); internal/secrets checks what moat says
// there.
func needKernelKeyring(t *testing.T) {
	t.Helper()
	id, err := unix.AddKey("user", "moat:test-probe", []byte("x"), unix.KEY_SPEC_USER_KEYRING)
	if err == nil {
		_, _ = unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0)
		return
	}
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		t.Skipf("the kernel keyring is not usable here: %v", err)
	}
	t.Fatalf("adding a key to the user keyring: %v", err)
}
