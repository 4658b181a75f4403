package upstream

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"

	"github.com/moatmcp/moat/internal/hygiene"
)

// maxStderrLine bounds one logged line of a child's stderr; the rest of a
// longer line is dropped, so a child cannot make Moat buffer without end.
const maxStderrLine = 4096

// tailWriter receives a child's stderr: it logs each line at debug level
// and keeps the last few lines for the warning logged when the child fails.
// Memory is bounded whatever the child writes.
type tailWriter struct {
	log *slog.Logger
	max int

	mu      sync.Mutex
	partial []byte
	cut     bool // the current line overflowed maxStderrLine
	lines   []string
	count   uint64 // lines emitted so far
}

func newTailWriter(log *slog.Logger, keep int) *tailWriter {
	return &tailWriter{log: log, max: keep}
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := maxStderrLine - len(w.partial); len(chunk) > room {
			w.cut = true
			chunk = chunk[:max(room, 0)]
		}
		w.partial = append(w.partial, chunk...)
		if i < 0 {
			break
		}
		w.emit()
		p = p[i+1:]
	}
	return n, nil
}

func (w *tailWriter) emit() {
	line := hygiene.Line(string(w.partial), 0)
	if w.cut {
		line += " [line truncated]"
	}
	w.partial, w.cut = w.partial[:0], false
	w.log.Debug("server stderr", "line", line)
	if len(w.lines) == w.max {
		w.lines = append(w.lines[:0], w.lines[1:]...)
	}
	w.lines = append(w.lines, line)
	w.count++
}

// last returns the last complete line and how many lines were emitted so
// far, so a caller can tell whether a line is new since it last looked.
func (w *tailWriter) last() (string, uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.lines) == 0 {
		return "", w.count
	}
	return w.lines[len(w.lines)-1], w.count
}

// tail returns the last lines seen, joined, for a log record.
func (w *tailWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}

// maxReason bounds the upstream-controlled text shown to the model.
const maxReason = 200
