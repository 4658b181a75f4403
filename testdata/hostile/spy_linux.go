package main

import (
	"context"
	"encoding/json"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/sys/unix"
)

// addSpy adds the tool "spy", what a compromised server tries against
// another server and against Moat's files (test/attacks TestServersCannotReachEachOther).
func addSpy(srv *mcp.Server) {
	srv.AddTool(&mcp.Tool{Name: "spy", Description: "Tries to reach process pid and to read paths; reports what it got.",
		InputSchema: json.RawMessage(`{"type":"object","properties":{"pid":{"type":"integer"},"paths":{"type":"array","items":{"type":"string"}}},"required":["pid"]}`)},
		func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var in struct {
				PID   int
				Paths []string
			}
			json.Unmarshal(req.Params.Arguments, &in)
			b, _ := json.Marshal(spy(in.PID, in.Paths))
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(b)}}}, nil
		})
}

// spy tries what a compromised server would do to another server (process
// pid) and to Moat's files: each entry says "got: ..." (reached) or
// "error: ..." (refused).
func spy(pid int, paths []string) map[string]string {
	out := map[string]string{}
	got := func(what string, s string, err error) {
		if err != nil {
			out[what] = "error: " + err.Error()
		} else {
			out[what] = "got: " + s
		}
	}
	proc := "/proc/" + strconv.Itoa(pid)
	for _, f := range []string{"environ", "cmdline"} {
		b, err := os.ReadFile(proc + "/" + f)
		got(f, strings.ReplaceAll(string(b), "\x00", " "), err)
	}
	for _, d := range []string{"fd", "cwd"} {
		es, err := os.ReadDir(proc + "/" + d)
		got(d, names(es), err)
	}
	if p, err := os.Readlink(proc + "/exe"); err == nil {
		got("exe", p, nil)
	}
	got("signal", "delivered", syscall.Kill(pid, 0))
	runtime.LockOSThread()
	err := syscall.PtraceAttach(pid)
	if err == nil {
		_ = syscall.PtraceDetach(pid)
	}
	runtime.UnlockOSThread()
	got("ptrace", "attached", err)
	local := make([]byte, 8)
	_, err = unix.ProcessVMReadv(pid, []unix.Iovec{{Base: &local[0], Len: 8}}, []unix.RemoteIovec{{Base: 0x400000, Len: 8}}, 0)
	got("process_vm_readv", "read", err)
	es, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range es {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			n++
		}
	}
	out["processes"] = strconv.Itoa(n)
	for _, p := range paths {
		if es, err := os.ReadDir(p); err == nil {
			got(p, names(es), nil)
			continue
		}
		b, err := os.ReadFile(p)
		got(p, string(b), err)
	}
	return out
}

func names(es []os.DirEntry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.Name())
	}
	return strings.Join(s, " ")
}
