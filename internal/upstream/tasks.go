package upstream

import (
	"bytes"
	"encoding/json"
	"io"
)

// CodeTaskResult is the JSON-RPC error code of the response Moat puts in
// place of an upstream's answer that is a task, beside CodeMessageTooLarge
// in the range JSON-RPC leaves to implementations.
const CodeTaskResult = -32091

// maxTaskReply bounds the answers checked for a task: a task handle is
// small, and a large result is not decoded twice.
const maxTaskReply = 64 << 10

// taskMessage is the text of the error that stands in for a task.
const taskMessage = "the server answered with a task (the MCP tasks extension), which Moat neither asks for nor relays, instead of the call's result; a server must answer a call made without a task with its result (report it to the server's authors)"

// taskResponse returns the error response that stands in for msg, one
// JSON-RPC message, when msg answers a call with a task: a CreateTaskResult
// ({"task": {...}}, 2025-11-25) or a result of resultType "task" (the tasks
// extension of 2026-07-28). Moat never asks an upstream for a task, and
// go-sdk would read one as an empty result, which the model would take for
// the call's answer. nil means msg passes as it is.
func taskResponse(msg []byte) []byte {
	if len(msg) > maxTaskReply || !bytes.Contains(msg, []byte(`"task`)) {
		return nil
	}
	var r struct {
		ID     json.RawMessage `json:"id"`
		Result *struct {
			Task       json.RawMessage `json:"task"`
			ResultType string          `json:"resultType"`
		} `json:"result"`
	}
	if json.Unmarshal(msg, &r) != nil || r.Result == nil || len(r.ID) == 0 || string(r.ID) == "null" {
		return nil
	}
	if !bytes.HasPrefix(bytes.TrimSpace(r.Result.Task), []byte("{")) && r.Result.ResultType != "task" {
		return nil
	}
	out, _ := json.Marshal(map[string]any{
		"jsonrpc": "2.0", "id": r.ID,
		"error": map[string]any{"code": CodeTaskResult, "message": taskMessage},
	})
	return out
}

// taskCheckBody is a small JSON response body, read whole on the first
// Read so that a task in it is replaced (taskResponse) before go-sdk
// decodes it.
type taskCheckBody struct {
	rc io.ReadCloser
	r  io.Reader
}

func (b *taskCheckBody) Read(p []byte) (int, error) {
	if b.r == nil {
		data, err := io.ReadAll(io.LimitReader(b.rc, maxTaskReply+1))
		switch {
		case err != nil:
			b.r = io.MultiReader(bytes.NewReader(data), errReader{err})
		case len(data) > maxTaskReply: // longer than it said: pass it on
			b.r = io.MultiReader(bytes.NewReader(data), b.rc)
		default:
			if out := taskResponse(data); out != nil {
				data = out
			}
			b.r = bytes.NewReader(data)
		}
	}
	return b.r.Read(p)
}

func (b *taskCheckBody) Close() error { return b.rc.Close() }
