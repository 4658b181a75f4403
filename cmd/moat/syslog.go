package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/config"
)

// syslogQueue bounds the audit lines waiting for the syslog collector.
const syslogQueue = 4096

// syslogCopy ships audit lines to syslog as RFC 5424 messages from a
// bounded queue, so a slow or absent collector never slows a call. What it
// cannot send is counted and logged; the audit file stays the source of
// truth.
type syslogCopy struct {
	target string
	format string // config.SyslogJSON, SyslogOCSF or SyslogCEF
	log    *slog.Logger
	host   string
	queue  chan []byte
	done   chan struct{}

	dropped atomic.Int64
	warned  sync.Once

	conn   net.Conn
	stream bool // TCP or unix stream: RFC 6587 octet counting
}

func newSyslogCopy(target, format string, log *slog.Logger) *syslogCopy {
	host, _ := os.Hostname()
	if host == "" {
		host = "-"
	}
	s := &syslogCopy{target: target, format: format, log: log, host: host, queue: make(chan []byte, syslogQueue), done: make(chan struct{})}
	go s.run()
	return s
}

// copy is audit.Options.Copy: it queues each line, never blocking.
func (s *syslogCopy) copy(lines []byte) {
	for len(lines) > 0 {
		i := bytes.IndexByte(lines, '\n')
		if i < 0 {
			i = len(lines)
		}
		line := bytes.Clone(lines[:i])
		select {
		case s.queue <- line:
		default:
			s.drop(fmt.Errorf("the queue of %d lines is full", syslogQueue))
		}
		lines = lines[min(i+1, len(lines)):]
	}
}

func (s *syslogCopy) drop(err error) {
	s.dropped.Add(1)
	s.warned.Do(func() {
		s.log.Warn("audit records are not reaching syslog; the audit file still has them", "syslog", s.target, "err", err)
	})
}

// close sends what is queued (for up to two seconds) and stops.
func (s *syslogCopy) close() {
	close(s.queue)
	select {
	case <-s.done:
	case <-time.After(2 * time.Second):
	}
	if n := s.dropped.Load(); n > 0 {
		s.log.Warn("audit records not sent to syslog", "syslog", s.target, "count", n)
	}
}

func (s *syslogCopy) run() {
	defer close(s.done)
	defer func() {
		if s.conn != nil {
			s.conn.Close()
		}
	}()
	for line := range s.queue {
		msg, err := s.encode(line)
		if err == nil {
			err = s.send(msg)
		}
		if err != nil {
			s.drop(err)
		}
	}
}

// encode turns one audit line into the message of the configured format:
// the line itself, or its OCSF or CEF export. It runs on the shipper's
// goroutine, never on a call's path.
func (s *syslogCopy) encode(line []byte) ([]byte, error) {
	if s.format == "" || s.format == config.SyslogJSON {
		return line, nil
	}
	var r audit.Record
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, fmt.Errorf("reading an audit line for %s: %w", s.format, err)
	}
	if s.format == config.SyslogOCSF {
		return audit.OCSF(&r, version)
	}
	c, err := audit.CEF(&r, version)
	return []byte(c), err
}

// send writes one RFC 5424 message: facility "log audit" (13), severity
// informational, app "moat", msgid "audit", no structured data, the record
// as the message. It reconnects once when the connection broke.
func (s *syslogCopy) send(line []byte) error {
	msg := fmt.Appendf(nil, "<%d>1 %s %s moat %d audit - ", 13*8+6, time.Now().UTC().Format("2006-01-02T15:04:05.000000Z07:00"), s.host, os.Getpid())
	msg = append(msg, line...)
	for attempt := 0; ; attempt++ {
		if s.conn == nil {
			if err := s.dial(); err != nil {
				return err
			}
		}
		out := msg
		if s.stream {
			out = append([]byte(strconv.Itoa(len(msg))+" "), msg...)
		}
		s.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, err := s.conn.Write(out)
		if err == nil {
			return nil
		}
		s.conn.Close()
		s.conn = nil
		if attempt == 1 {
			return err
		}
	}
}

func (s *syslogCopy) dial() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var d net.Dialer
	try := func(network, addr string) error {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			s.conn, s.stream = c, network == "tcp" || network == "unix"
		}
		return err
	}
	if s.target == "local" {
		var err error
		for _, path := range []string{"/dev/log", "/var/run/syslog", "/var/run/log"} {
			if err = try("unixgram", path); err == nil {
				return nil
			}
		}
		return err
	}
	u, err := url.Parse(s.target)
	if err != nil {
		return err
	}
	switch u.Scheme {
	case "unix", "unixgram":
		if err := try("unixgram", u.Path); err == nil {
			return nil
		}
		return try("unix", u.Path)
	default:
		return try(u.Scheme, u.Host)
	}
}
