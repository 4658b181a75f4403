package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// followPoll is how often Tail looks for new lines when following.
const followPoll = 250 * time.Millisecond

// Tail pretty-prints the records read from in, one line each. With follow it
// keeps reading as the log grows until ctx ends (and then returns nil).
// Tail does not verify anything: use [Verify] for that.
func Tail(ctx context.Context, out io.Writer, in io.Reader, follow bool) error {
	br := bufio.NewReader(in)
	var partial []byte
	for {
		chunk, err := br.ReadBytes('\n')
		partial = append(partial, chunk...)
		if err == nil {
			if _, werr := io.WriteString(out, FormatLine(partial)+"\n"); werr != nil {
				return werr
			}
			partial = partial[:0]
			continue
		}
		if !errors.Is(err, io.EOF) {
			return fmt.Errorf("audit: reading log: %w", err)
		}
		if !follow {
			if len(partial) > 0 {
				_, err := io.WriteString(out, FormatLine(partial)+" (incomplete line)\n")
				return err
			}
			return nil
		}
		t := time.NewTimer(followPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// FormatLine renders one log line for people, e.g.
//
//	2026-11-23 10:15:00.123Z  #12  tool_call  files/read_file  allow  ok  12ms  in=120B out=3KiB
func FormatLine(line []byte) string {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		s := strings.TrimSpace(string(line))
		if len(s) > 80 {
			s = s[:80] + "…"
		}
		return "?  not a record: " + s
	}
	f := []string{shortTime(r.Time), fmt.Sprintf("#%d", r.Seq), r.Event}
	add := func(s string) {
		if s != "" {
			f = append(f, s)
		}
	}
	switch {
	case r.Group != "" && r.Tool != "":
		add(r.Group + "/" + r.Tool)
	default:
		add(r.Group + r.Tool)
	}
	if r.Decision != "" && r.Rule != "" {
		add(r.Decision + "(" + r.Rule + ")")
	} else {
		add(r.Decision)
	}
	add(string(r.Outcome))
	if r.DurationMS > 0 {
		add(fmt.Sprintf("%dms", r.DurationMS))
	}
	if r.BytesIn > 0 || r.BytesOut > 0 {
		add("in=" + size(r.BytesIn) + " out=" + size(r.BytesOut))
	}
	if r.Event == EventCheckpoint {
		add(fmt.Sprintf("sealed %d records", r.Count))
	}
	add(r.Reason)
	keys := make([]string, 0, len(r.Detail))
	for k := range r.Detail {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		add(k + "=" + r.Detail[k])
	}
	return strings.Join(f, "  ")
}

func shortTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}

func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
