// Command hostile is the misbehaving upstream of Moat's attack-regression
// suite (test/attacks). Each -mode is one attack a malicious or broken MCP
// server, or a malicious network peer, would try:
//
//	stdio         an MCP server on stdio whose tools attack Moat: a poisoned
//	              description, a fork bomb, a memory bomb, a grandchild that
//	              leaves the process group and ignores SIGTERM
//	huge-line     a minimal MCP server on stdio whose tool huge answers with
//	              one 100 MiB line
//	init-error    answers initialize with an error whose text is a prompt
//	              injection hidden with bidi, zero-width and tag characters
//	http          a streamable HTTP MCP server on 127.0.0.1 whose tools
//	              "endless" (an endless response body) and "drip" (headers,
//	              then one byte every two seconds) attack the HTTP client
//	redirect      redirects every request (307) to -target, after recording
//	              the Authorization header it received in -record
//	sse-endpoint  a legacy SSE server whose endpoint event names -target
//	sink          accepts TCP connections on -addr and records each one, and
//	              the first bytes it sent, in -record; answers nothing
//
// It only ever listens on loopback and never makes an outgoing connection:
// the HTTP modes use net/http's server side only. HTTP modes print
// "LISTEN <url>" as their first stdout line.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	mode := flag.String("mode", "stdio", "stdio, huge-line, init-error, task, http, redirect, sse-endpoint, sink (and the internal sleep, stubborn-grandchild)")
	addr := flag.String("addr", "127.0.0.1:0", "listen address of the HTTP and sink modes (loopback only)")
	target := flag.String("target", "", "redirect and sse-endpoint: the URL to send the client to")
	record := flag.String("record", "", "redirect and sink: append what was received to this file")
	flag.String("transport", "", "ignored: lets testutil.StartHTTPServer start this program")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("hostile " + *mode + ": ")

	switch *mode {
	case "sleep":
		time.Sleep(5 * time.Minute)
		return
	case "stubborn-grandchild":
		signal.Ignore(syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
		time.Sleep(5 * time.Minute)
		return
	case "stdio":
		runStdio()
		return
	case "init-error":
		initError()
		return
	case "task":
		taskServer()
		return
	case "huge-line":
		hugeLine()
		return
	}

	host, _, err := net.SplitHostPort(*addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		log.Fatalf("-addr %q must be a loopback IP and port", *addr)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	switch *mode {
	case "http":
		fmt.Println("LISTEN " + base + "/mcp")
		log.Fatal(serveMCP(ln))
	case "redirect":
		fmt.Println("LISTEN " + base + "/mcp")
		log.Fatal(serveRedirect(ln, *target, *record))
	case "sse-endpoint":
		fmt.Println("LISTEN " + base + "/sse")
		log.Fatal(serveSSEEndpoint(ln, *target))
	case "sink":
		fmt.Println("LISTEN " + base)
		sink(ln, *record)
	default:
		log.Fatalf("unknown -mode %q", *mode)
	}
}

// appendRecord appends one line to path (no-op without a path).
func appendRecord(path, line string) {
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		log.Printf("record: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintln(f, strings.ReplaceAll(line, "\n", `\n`))
}

// sink records every connection and what it sent in its first 5 seconds.
func sink(ln net.Listener, record string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4096)
			n, _ := c.Read(buf)
			appendRecord(record, fmt.Sprintf("connection from %s sent %q", c.RemoteAddr(), buf[:n]))
		}()
	}
}
