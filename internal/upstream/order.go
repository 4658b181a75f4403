package upstream

import (
	"bytes"
	"sync"
	"time"

	"github.com/moatmcp/moat/internal/frame"
)

// progressOrder keeps a server's progress notifications ahead of the
// response that follows them. go-sdk hands an upstream's notifications to a
// queue but its responses straight to the waiting caller, so a call's result
// could overtake the progress the server reported before it, and the client
// drops progress that comes after the result. The stdio reader counts the
// progress notifications it hands to go-sdk (seen), the progress handler
// counts those it has passed on (done), and CallTool, once go-sdk has
// decoded its response (so every notification before it is queued), waits
// until the two meet (settle), or orderWait at most, after which one
// go-sdk never handled (a malformed notification) is written off.
type progressOrder struct {
	mu      sync.Mutex
	read    uint64
	handled uint64
	changed chan struct{} // closed and replaced when handled grows
}

// orderWait bounds how long a result waits for progress before it.
const orderWait = 500 * time.Millisecond

var progressMethod = []byte(`"notifications/progress"`)

// seen is called with each whole message the server sent, in order, before
// go-sdk reads it.
func (o *progressOrder) seen(msg []byte) {
	if !bytes.Contains(msg, progressMethod) {
		return
	}
	var sc frame.Scanner
	sc.Feed(msg)
	if sc.Method() == "notifications/progress" {
		o.mu.Lock()
		o.read++
		o.mu.Unlock()
	}
}

// settle returns once every progress notification read so far was passed
// on, or after orderWait.
func (o *progressOrder) settle() {
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

// done is called when a progress notification was handled. One that was
// written off is not counted twice.
func (o *progressOrder) done() {
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
