package upstream

import (
	"bytes"
	"io"

	"github.com/moatmcp/moat/internal/frame"
)

// readChunk is how much a limitReader reads at a time; a pipe gives at
// most 64 KiB per read anyway.
const readChunk = 64 << 10

// A framing splits a stream into messages for a limitReader and, for a
// message over the limit, reads what its replacement needs as it streams
// past.
type framing interface {
	// next returns the length of the first complete message at the start
	// of b and its size as the limit counts it, or n < 0 when b holds no
	// complete message yet. Between resets b only grows at its end, so next
	// may remember how far it has looked.
	next(b []byte) (n, size int)
	// skip reads the bytes of an over-long message, from its first byte
	// on; it returns how many bytes of p belong to the message and whether
	// the message ends within p.
	skip(p []byte) (n int, end bool)
	// replace returns what stands in for the message skip has read (nil
	// for nothing), which was over limit, and resets. whole is false when
	// the stream ended inside the message, whose size is then unknown.
	replace(limit int, whole bool) []byte
	// reset forgets the current message.
	reset()
	// task returns what stands in for msg, one whole message within the
	// limit, when it answers a call with a task (taskResponse), framed;
	// nil passes msg as it is.
	task(msg []byte) []byte
}

// limitReader passes complete messages of rc through unchanged as long as
// each is within limit bytes, and puts its framing's replacement in place
// of a longer one. It buffers at most one message of up to limit bytes
// (plus one read): a message is only known to fit once its end arrives,
// and nothing of it may reach the decoder before that. The rest of an
// over-long message is read in readChunk pieces and dropped, so memory is
// bounded by limit whatever the peer sends.
//
// The decoder above then never meets a message over limit: go-sdk ends a
// whole session at the first message its own cap refuses, where this
// fails the one call the message answered.
type limitReader struct {
	rc    io.ReadCloser
	limit int
	f     framing
	// capped, when set, recognises a read error that ended the stream
	// because a message broke a bound below this one (netguard's), and
	// returns that bound: the message is then dropped as an over-long one
	// rather than handed on cut short.
	capped func(error) (int, bool)
	// seen, when set, is given each whole message within the limit, in
	// order, before any of it is handed out (notificationOrder.seen).
	seen func(msg []byte)

	buf   []byte // bytes read and not yet handed out
	start int    // buf[start:ready] is complete messages being handed out
	ready int    // buf[ready:] is the start of the next message
	out   []byte // a replacement being handed out
	err   error  // rc's error, returned once buf is drained
}

func newLimitReader(rc io.ReadCloser, limit int, f framing) *limitReader {
	return &limitReader{rc: rc, limit: limit, f: f}
}

// Close closes the underlying reader.
func (l *limitReader) Close() error { return l.rc.Close() }

// Read implements io.Reader.
func (l *limitReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if len(l.out) > 0 {
			n := copy(p, l.out)
			l.out = l.out[n:]
			return n, nil
		}
		if l.start < l.ready {
			n := copy(p, l.buf[l.start:l.ready])
			l.start += n
			return n, nil
		}
		if n, size := l.f.next(l.buf[l.ready:]); n >= 0 {
			if size > l.limit {
				// Whole, but over the limit: it arrived with its end in
				// the same read that took it over.
				l.f.skip(l.buf[l.ready : l.ready+n])
				l.out = l.f.replace(l.limit, true)
				l.ready += n
				l.start = l.ready
				continue
			}
			if l.seen != nil {
				l.seen(l.buf[l.ready : l.ready+n])
			}
			if out := l.f.task(l.buf[l.ready : l.ready+n]); out != nil {
				l.out = out
				l.ready += n
				l.start = l.ready
				l.f.reset()
				continue
			}
			l.ready += n
			l.f.reset()
			continue
		}
		if len(l.buf)-l.ready > l.limit {
			l.discard()
			continue
		}
		if l.err != nil {
			if lim, ok := l.cappedAt(); ok && l.ready < len(l.buf) {
				l.f.skip(l.buf[l.ready:])
				l.out = l.f.replace(lim, false)
				l.ready = len(l.buf)
				l.start = l.ready
				continue
			}
			if l.ready < len(l.buf) {
				// A last message without its terminator: the decoder
				// decides what it is.
				l.ready = len(l.buf)
				l.f.reset()
				continue
			}
			return 0, l.err
		}
		l.fill()
	}
}

// fill reads once from rc, after moving what is left to the front.
func (l *limitReader) fill() {
	if l.start > 0 {
		n := copy(l.buf, l.buf[l.start:])
		l.buf = l.buf[:n]
		l.start, l.ready = 0, 0
		if cap(l.buf) > 4*readChunk && n < readChunk {
			// Let go of the memory of a large message.
			l.buf = append(make([]byte, 0, 2*readChunk), l.buf...)
		}
	}
	if cap(l.buf)-len(l.buf) < readChunk {
		// The buffer never holds more than limit+readChunk bytes: more
		// than limit of one message starts discard.
		c := min(max(2*cap(l.buf), len(l.buf)+readChunk), l.limit+2*readChunk)
		l.buf = append(make([]byte, 0, c), l.buf...)
	}
	n, err := l.rc.Read(l.buf[len(l.buf):min(cap(l.buf), len(l.buf)+readChunk)])
	l.buf = l.buf[:len(l.buf)+n]
	if err != nil {
		l.err = err
	}
}

// discard drops the over-long message at buf[ready:] (everything before
// it has been handed out), reading and dropping the rest of it in
// readChunk pieces, and queues its replacement.
func (l *limitReader) discard() {
	n, end := l.f.skip(l.buf[l.ready:])
	rest := l.buf[l.ready+n:]
	if cap(l.buf) < readChunk || cap(l.buf) > 2*readChunk {
		l.buf = make([]byte, 0, 2*readChunk) // the message's memory goes now
	}
	l.buf = append(l.buf[:0], rest...) // empty unless the message ended
	l.start, l.ready = 0, 0
	for !end && l.err == nil {
		m, err := l.rc.Read(l.buf[:readChunk])
		if err != nil {
			l.err = err
		}
		var k int
		k, end = l.f.skip(l.buf[:m])
		l.buf = l.buf[:copy(l.buf[:m], l.buf[k:m])] // what follows the message
	}
	lim := l.limit
	if c, ok := l.cappedAt(); ok {
		lim = c
	}
	l.out = l.f.replace(lim, end)
}

// cappedAt reports whether the stream ended at a bound below limit (see
// capped), and that bound.
func (l *limitReader) cappedAt() (int, bool) {
	if l.err == nil || l.capped == nil {
		return 0, false
	}
	c, ok := l.capped(l.err)
	return min(c, l.limit), ok
}

// lineFraming is stdio's: one message per line.
type lineFraming struct {
	what    string
	drop    func(oversize) []byte
	scanned int // bytes of the current line known to hold no newline
	sc      frame.Scanner
	size    int64
}

func (f *lineFraming) next(b []byte) (int, int) {
	i := bytes.IndexByte(b[f.scanned:], '\n')
	if i < 0 {
		f.scanned = len(b)
		return -1, 0
	}
	end := f.scanned + i
	return end + 1, end
}

func (f *lineFraming) skip(p []byte) (int, bool) {
	if i := bytes.IndexByte(p, '\n'); i >= 0 {
		f.sc.Feed(p[:i])
		f.size += int64(i)
		return i + 1, true
	}
	f.sc.Feed(p)
	f.size += int64(len(p))
	return len(p), false
}

func (f *lineFraming) replace(limit int, whole bool) []byte {
	o := oversize{what: f.what, size: f.size, limit: limit, id: f.sc.ID(), request: f.sc.HasMethod()}
	if !whole {
		o.size = -1
	}
	out := f.drop(o)
	f.reset()
	if out != nil {
		out = append(out, '\n')
	}
	return out
}

func (f *lineFraming) task(msg []byte) []byte {
	out := taskResponse(bytes.TrimRight(msg, "\r\n"))
	if out == nil {
		return nil
	}
	return append(out, '\n')
}

func (f *lineFraming) reset() {
	f.scanned, f.size = 0, 0
	f.sc = frame.Scanner{}
}

// sseField is the field of the line an eventFraming is reading.
type sseField uint8

const (
	sseOther sseField = iota
	sseData
	sseID
	sseEvent
	sseRetry
)

// maxSSEValue bounds the id, event and retry values an eventFraming keeps
// of an over-long event; longer ones are dropped with it.
const maxSSEValue = 1024

// eventFraming is a server-sent event stream's: one message per event,
// which ends at a blank line. Lines end at '\n' and lose trailing '\r's,
// as go-sdk reads them. An over-long event is replaced by one with its
// id and retry fields (so the stream's Last-Event-ID still advances) and,
// for a "message" event answering a call, the error response as its data.
type eventFraming struct {
	drop func(oversize) []byte

	// next's progress through the current event.
	scanned, lineStart int

	// skip's progress through an over-long event.
	size      int64
	sc        frame.Scanner
	inValue   bool // past the current line's ':'
	nameLen   int  // bytes of the current line before ':', '\r' not counted
	crs       int  // '\r's in the current line before ':'
	name      [8]byte
	field     sseField
	dataLines int
	val       []byte // the current id, event or retry value
	valLong   bool
	id        []byte // the event's last id field, nil when none
	hasID     bool
	event     []byte
	retry     []byte
}

func (f *eventFraming) next(b []byte) (int, int) {
	for {
		i := bytes.IndexByte(b[f.scanned:], '\n')
		if i < 0 {
			f.scanned = len(b)
			return -1, 0
		}
		nl := f.scanned + i
		f.scanned = nl + 1
		if len(bytes.TrimRight(b[f.lineStart:nl], "\r")) == 0 {
			return nl + 1, f.lineStart // a blank line ends the event
		}
		f.lineStart = nl + 1
	}
}

func (f *eventFraming) skip(p []byte) (int, bool) {
	i := 0
	for i < len(p) {
		if f.inValue {
			j := bytes.IndexByte(p[i:], '\n')
			if j < 0 {
				f.value(p[i:])
				f.size += int64(len(p) - i)
				return len(p), false
			}
			f.value(p[i : i+j])
			f.endLine()
			f.size += int64(j + 1)
			i += j + 1
			continue
		}
		c := p[i]
		i++
		switch c {
		case '\n':
			if f.nameLen == 0 {
				f.size -= int64(f.crs) // the blank line is not the event's
				return i, true
			}
			f.endLine() // a line without ':' (go-sdk refuses it; here it goes with the event)
			f.size++
		case ':':
			f.inValue = true
			f.field = f.classify()
			f.size++
			if f.field == sseData {
				if f.dataLines > 0 {
					f.sc.Feed([]byte{'\n'}) // data lines join with a newline
				}
				f.dataLines++
			}
		case '\r':
			f.crs++
			f.size++
		default:
			if f.nameLen < len(f.name) {
				f.name[f.nameLen] = c
			}
			f.nameLen++
			f.size++
		}
	}
	return len(p), false
}

// value reads part of the current line's value (v holds no newline).
func (f *eventFraming) value(v []byte) {
	switch f.field {
	case sseData:
		f.sc.Feed(v)
	case sseID, sseEvent, sseRetry:
		if len(f.val)+len(v) <= maxSSEValue {
			f.val = append(f.val, v...)
		} else {
			f.valLong = true
		}
	}
}

// classify names the field of the line whose name was just read.
func (f *eventFraming) classify() sseField {
	if f.nameLen > len(f.name) {
		return sseOther
	}
	switch string(f.name[:f.nameLen]) {
	case "data":
		return sseData
	case "id":
		return sseID
	case "event":
		return sseEvent
	case "retry":
		return sseRetry
	}
	return sseOther
}

// endLine keeps the value of an id, event or retry line, trimmed as go-sdk
// trims it, and starts the next line.
func (f *eventFraming) endLine() {
	if f.inValue && !f.valLong {
		v := bytes.Clone(bytes.TrimSpace(f.val))
		switch f.field {
		case sseID:
			f.id, f.hasID = v, true
		case sseEvent:
			f.event = v
		case sseRetry:
			f.retry = v
		}
	}
	f.inValue, f.nameLen, f.crs, f.field = false, 0, 0, sseOther
	f.val, f.valLong = f.val[:0], false
}

func (f *eventFraming) replace(limit int, whole bool) []byte {
	o := oversize{what: "SSE event", size: f.size, limit: limit, id: f.sc.ID(), request: f.sc.HasMethod()}
	if !whole {
		o.size = -1
	}
	if len(f.event) > 0 && string(f.event) != "message" {
		o.id = nil // go-sdk reads only message events: nothing waits for this one
	}
	data := f.drop(o)
	var b []byte
	if f.hasID {
		b = append(append(append(b, "id: "...), f.id...), '\n')
	}
	if len(f.retry) > 0 {
		b = append(append(append(b, "retry: "...), f.retry...), '\n')
	}
	if data != nil {
		b = append(append(append(b, "data: "...), data...), '\n')
	}
	if b != nil {
		b = append(b, '\n')
	}
	f.reset()
	return b
}

// task keeps the event's id and retry in the replacement so the stream's
// Last-Event-ID still advances.
func (f *eventFraming) task(event []byte) []byte {
	if len(event) > maxTaskReply || !bytes.Contains(event, []byte(`"task`)) {
		return nil
	}
	ev, ok := parseEvent(event)
	if !ok {
		return nil
	}
	out := taskResponse(ev.data)
	if out == nil {
		return nil
	}
	var b []byte
	if ev.hasID {
		b = append(append(append(b, "id: "...), ev.id...), '\n')
	}
	if len(ev.retry) > 0 {
		b = append(append(append(b, "retry: "...), ev.retry...), '\n')
	}
	return append(append(append(b, "data: "...), out...), "\n\n"...)
}

// eventFields is one whole server-sent event's fields.
type eventFields struct {
	data, id, retry []byte
	hasID           bool
}

// parseEvent reads a whole event's fields as go-sdk does (lines end at '\n'
// and lose trailing '\r's; data lines join with '\n'). ok is false for an
// event go-sdk does not read as a message (a named event other than
// "message").
func parseEvent(event []byte) (ev eventFields, ok bool) {
	var data [][]byte
	for _, line := range bytes.Split(event, []byte("\n")) {
		line = bytes.TrimRight(line, "\r")
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "event":
			if len(value) > 0 && string(value) != "message" {
				return eventFields{}, false
			}
		case "data":
			data = append(data, value)
		case "id":
			ev.id, ev.hasID = value, true
		case "retry":
			ev.retry = value
		}
	}
	ev.data = bytes.Join(data, []byte("\n"))
	return ev, true
}

func (f *eventFraming) reset() {
	*f = eventFraming{drop: f.drop, val: f.val[:0]}
}
