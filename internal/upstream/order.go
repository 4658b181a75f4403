package upstream

import (
	"bytes"
	"slices"
	"sync"
	"time"

	"github.com/moatmcp/moat/internal/frame"
)

// notificationOrder keeps a server's progress notifications and log
// messages ahead of the response that follows them. go-sdk hands an
// upstream's notifications to a queue but its responses straight to the
// waiting caller, so a call's result could overtake what the server sent
// before it: the client drops progress that comes after the result, and a
// gateway can tell which session a shared server's log message belongs to
// only while that session's call is in progress. The stdio reader and the
// event-stream reader count the notifications they hand to go-sdk (seen),
// the handlers count those they have passed on (done), and CallTool, once
// go-sdk has decoded its response (so every notification before it is
// queued), waits until the two meet (settle), or orderWait at most, after
// which one go-sdk never handled (a malformed notification) is written off.
type notificationOrder struct {
	mu      sync.Mutex
	read    uint64
	handled uint64
	changed chan struct{} // closed and replaced when handled grows
}

// orderWait bounds how long a result waits for the notifications before it.
const orderWait = 500 * time.Millisecond

// ordered are the notifications a result waits for, quoted as they appear
// in a message, for a cheap first look.
var ordered = [][]byte{[]byte(`"notifications/progress"`), []byte(`"notifications/message"`)}

// mayHoldOrdered reports whether b may hold a notification a result waits
// for: a cheap look before a message is parsed.
func mayHoldOrdered(b []byte) bool {
	return slices.ContainsFunc(ordered, func(q []byte) bool { return bytes.Contains(b, q) })
}

// seen is called with each whole message the server sent, in order, before
// go-sdk reads it.
func (o *notificationOrder) seen(msg []byte) {
	if !mayHoldOrdered(msg) {
		return
	}
	var sc frame.Scanner
	sc.Feed(msg)
	if m := sc.Method(); m == "notifications/progress" || m == "notifications/message" {
		o.mu.Lock()
		o.read++
		o.mu.Unlock()
	}
}

// settle returns once every progress notification read so far was passed
// on, or after orderWait.
func (o *notificationOrder) settle() {
	if o == nil {
		return
	}
	timer := time.NewTimer(orderWait)
	defer timer.Stop()
	o.mu.Lock()
	want := o.read
	for o.handled < want {
		if o.changed == nil {
			o.changed = make(chan struct{})
		}
		ch := o.changed
		o.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			o.mu.Lock()
			o.handled = max(o.handled, want) // never handled: written off
			o.mu.Unlock()
			return
		}
		o.mu.Lock()
	}
	o.mu.Unlock()
}

// done is called when a notification counted by seen was handled. One that was
// written off is not counted twice.
func (o *notificationOrder) done() {
	o.mu.Lock()
	if o.handled < o.read {
		o.handled++
	}
	if o.changed != nil {
		close(o.changed)
		o.changed = nil
	}
	o.mu.Unlock()
}
