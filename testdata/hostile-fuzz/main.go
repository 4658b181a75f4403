// Command hostile-fuzz is the upstream of fuzz.FuzzUpstreamReply: an MCP
// stdio server written by hand, as a test double that may say anything.
//
// It answers initialize, tools/list (one tool, "reply") and ping properly,
// so that Moat connects to it. Every tools/call is answered with the bytes
// of the file named by -reply, read afresh for each call, with every "@ID@"
// replaced by the call's JSON-RPC id, then a newline, then a well-formed
// error response for the same id: a fuzzed reply that answers nothing still
// ends the call at once instead of at Moat's timeout, which keeps each fuzz
// execution cheap (and a second response to one id is itself hostile).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	reply := flag.String("reply", "", "file whose bytes answer every tools/call")
	flag.Parse()
	if *reply == "" {
		fmt.Fprintln(os.Stderr, "hostile-fuzz: -reply FILE is required")
		os.Exit(2)
	}
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	out := bufio.NewWriter(os.Stdout)
	for {
		line, err := in.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			answer(out, line, *reply)
			if out.Flush() != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				fmt.Fprintln(os.Stderr, "hostile-fuzz:", err)
			}
			return
		}
	}
}

// answer writes the response to one request; notifications get none.
func answer(out *bufio.Writer, line []byte, replyFile string) {
	var req struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			ProtocolVersion string `json:"protocolVersion"`
		} `json:"params"`
	}
	if json.Unmarshal(line, &req) != nil || len(req.ID) == 0 || req.Method == "" {
		return // a notification, or a response to nothing we asked
	}
	switch req.Method {
	case "initialize":
		result(out, req.ID, map[string]any{
			"protocolVersion": req.Params.ProtocolVersion,
			"capabilities":    map[string]any{"tools": map[string]any{}},
			"serverInfo":      map[string]any{"name": "hostile-fuzz", "version": "1"},
		})
	case "tools/list":
		result(out, req.ID, map[string]any{"tools": []any{map[string]any{
			"name": "reply", "description": "Answers with the fuzzed bytes.",
			"inputSchema": map[string]any{"type": "object"},
		}}})
	case "ping":
		result(out, req.ID, map[string]any{})
	case "tools/call":
		data, err := os.ReadFile(replyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hostile-fuzz:", err)
		}
		out.Write(bytes.ReplaceAll(data, []byte("@ID@"), req.ID))
		out.WriteByte('\n')
		failure(out, req.ID, -32000, "hostile-fuzz: the fuzzed reply did not answer this call")
	default:
		failure(out, req.ID, -32601, "method not found")
	}
}

func result(out *bufio.Writer, id json.RawMessage, v any) {
	write(out, map[string]any{"jsonrpc": "2.0", "id": id, "result": v})
}

func failure(out *bufio.Writer, id json.RawMessage, code int, msg string) {
	write(out, map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{"code": code, "message": msg}})
}

func write(out *bufio.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only this program's own values reach here
	}
	out.Write(append(b, '\n'))
}
