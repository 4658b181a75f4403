package upstream

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// TestTaskAnswersBecomeErrors: an answer that is a task (2025-11-25's
// CreateTaskResult, or 2026-07-28's resultType "task") reaches go-sdk as an
// error for its call, whether it came as a stdio line, an SSE event (which
// keeps its id) or a JSON body; go-sdk would have read it as an empty
// result. Everything else passes byte for byte.
func TestTaskAnswersBecomeErrors(t *testing.T) {
	task := `{"jsonrpc":"2.0","id":7,"result":{"task":{"taskId":"t1","status":"working"}}}`
	task2026 := `{"jsonrpc":"2.0","id":"a","result":{"resultType":"task","taskId":"t1","status":"working"}}`
	plain := `{"jsonrpc":"2.0","id":8,"result":{"content":[{"type":"text","text":"a task is a \"task\""}]}}`
	listing := `{"jsonrpc":"2.0","id":9,"result":{"tasks":[]}}`
	read := func(r io.Reader) string {
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	isTaskError := func(what, got, id string) {
		t.Helper()
		if !strings.Contains(got, `"id":`+id) || !strings.Contains(got, `"code":-32091`) || !strings.Contains(got, "answered with a task") || strings.Contains(got, `"result"`) {
			t.Errorf("%s: %q, want the task error for id %s", what, got, id)
		}
	}

	lines := task + "\n" + plain + "\n" + task2026 + "\r\n" + listing + "\n"
	out := read(newLimitReader(io.NopCloser(strings.NewReader(lines)), 1<<20, &lineFraming{what: "stdio line"}))
	got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(got) != 4 || got[1] != plain || got[3] != listing {
		t.Fatalf("stdio: %q", out)
	}
	isTaskError("stdio, 2025-11-25 task", got[0], "7")
	isTaskError("stdio, 2026-07-28 task", got[2], `"a"`)

	events := "id: 41\nevent: message\ndata: " + task + "\n\nid: 42\ndata: " + plain + "\n\n"
	out = read(newLimitReader(io.NopCloser(strings.NewReader(events)), 1<<20, &eventFraming{}))
	first, rest, _ := strings.Cut(out, "\n\n")
	if !strings.HasPrefix(first, "id: 41\ndata: ") || rest != "id: 42\ndata: "+plain+"\n\n" {
		t.Fatalf("SSE: %q", out)
	}
	isTaskError("SSE", first, "7")

	isTaskError("JSON body", read(&taskCheckBody{rc: io.NopCloser(strings.NewReader(task))}), "7")
	if got := read(&taskCheckBody{rc: io.NopCloser(strings.NewReader(plain))}); got != plain {
		t.Errorf("JSON body without a task: %q", got)
	}
	big := `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"` + strings.Repeat("x", maxTaskReply) + `"}]}}`
	if got := read(&taskCheckBody{rc: io.NopCloser(bytes.NewReader([]byte(big)))}); got != big {
		t.Errorf("a large JSON body was changed (%d bytes in, %d out)", len(big), len(got))
	}
}
