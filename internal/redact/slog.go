package redact

import (
	"context"
	"fmt"
	"log/slog"
)

// SlogHandler wraps h so that the message and every attribute of a record
// (in groups too, and including values that only become strings when
// formatted, such as errors) are redacted before h sees them. Credential
// patterns are always redacted in logs.
func (r *Redactor) SlogHandler(h slog.Handler) slog.Handler {
	if rh, ok := h.(*slogHandler); ok && rh.r == r {
		return rh
	}
	return &slogHandler{r: r, h: h}
}

type slogHandler struct {
	r *Redactor
	h slog.Handler
}

func (s *slogHandler) Enabled(ctx context.Context, l slog.Level) bool { return s.h.Enabled(ctx, l) }

func (s *slogHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, s.r.String(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(s.attr(a))
		return true
	})
	return s.h.Handle(ctx, out)
}

func (s *slogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = s.attr(a)
	}
	return &slogHandler{r: s.r, h: s.h.WithAttrs(red)}
}

func (s *slogHandler) WithGroup(name string) slog.Handler {
	return &slogHandler{r: s.r, h: s.h.WithGroup(name)}
}

func (s *slogHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, s.r.String(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, ga := range g {
			red[i] = s.attr(ga)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		// Errors, byte slices, structs: whatever a handler would print.
		var text string
		switch x := v.Any().(type) {
		case error:
			text = x.Error()
		case []byte:
			text = string(x)
		default:
			text = fmt.Sprintf("%+v", x)
		}
		if red := s.r.String(text); red != text {
			return slog.String(a.Key, red)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
