// Package validate checks tool arguments against the tool's inputSchema
// before a call leaves Moat.
//
// Schemas come from upstream servers and are untrusted: each is compiled
// once per tool list (cached by the SHA-256 of its canonical JSON) with a
// loader that refuses every external $ref, so a schema can make Moat read no
// file and open no connection. Patterns use Go's RE2 engine (linear time, no
// ReDoS); an ECMA-only pattern such as a lookahead does not compile, and what
// happens then is the on_invalid_schema choice: "reject" (default) refuses
// calls to that tool, "passthrough" forwards them unvalidated and
// [Validator.Unvalidated] reports it for the audit log.
//
// Arguments are parsed strictly before validation (a JSON object, valid
// UTF-8, no duplicate keys, bounded depth, size and numbers), because the
// upstream parses the same bytes and must not read a value Moat never saw.
package validate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
	"weak"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/strictjson"
)

// Defaults used when an Options field is left at zero.
const (
	DefaultMaxSchemaBytes = 256 << 10
	DefaultMaxSchemaDepth = 64
	DefaultMaxArgsBytes   = 1 << 20

	// OnInvalidSchema values.
	Reject      = "reject"
	Passthrough = "passthrough"
)

const (
	maxPatternBytes = 4096 // a longer regex in a schema is refused
	maxMessages     = 10   // validator messages quoted in one denial
	maxQuoted       = 64   // longer quoted values in messages are elided
	maxCached       = 4096 // compiled schemas kept before the cache is reset
	layerName       = guard.LayerValidate
	schemaURL       = "moat:///input-schema.json"
)

// Options tune a Validator. The zero value is the safe default.
type Options struct {
	OnInvalidSchema string // Reject (default) or Passthrough
	MaxSchemaBytes  int    // default DefaultMaxSchemaBytes
	MaxSchemaDepth  int    // default DefaultMaxSchemaDepth
	MaxArgsBytes    int    // default DefaultMaxArgsBytes
	// Arguments are nested at most guard.MaxArgsDepth levels: every layer
	// reads them as guard.Call.Value decodes them.
}

// A Validator checks tool arguments against compiled input schemas. It is
// safe for concurrent use.
//
// Tool definitions must not be modified after they are first seen: the
// compiled schema is remembered per *mcp.Tool (weakly, so it is dropped with
// the tool). Prepare re-reads each tool it is given.
type Validator struct {
	o Options

	mu    sync.Mutex
	cache map[[32]byte]*entry // by SHA-256 of the canonical schema

	byTool sync.Map // weak.Pointer[mcp.Tool] -> *entry
}

// entry is one compiled schema, or the reason it could not be compiled.
type entry struct {
	once  sync.Once
	value any // the decoded schema, input to compile
	sch   *jsonschema.Schema
	props *propTree
	err   error
}

// compileHook, when set by a test, is called for every schema compilation.
var compileHook func()

var printer = message.NewPrinter(language.English)

// New returns a Validator with o's limits, zero fields taking the defaults.
func New(o Options) *Validator {
	if o.OnInvalidSchema == "" {
		o.OnInvalidSchema = Reject
	}
	if o.MaxSchemaBytes <= 0 {
		o.MaxSchemaBytes = DefaultMaxSchemaBytes
	}
	if o.MaxSchemaDepth <= 0 {
		o.MaxSchemaDepth = DefaultMaxSchemaDepth
	}
	if o.MaxArgsBytes <= 0 {
		o.MaxArgsBytes = DefaultMaxArgsBytes
	}
	return &Validator{o: o, cache: map[[32]byte]*entry{}}
}

// Layer returns the guard layer that validates the arguments of tool calls;
// resource reads and prompt gets pass through.
func (v *Validator) Layer() guard.Layer {
	return func(next guard.Handler) guard.Handler {
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			if c.Kind == guard.KindTool {
				if err := v.check(c); err != nil {
					return nil, err
				}
			}
			return next(ctx, c)
		}
	}
}

// Prepare compiles the input schemas of a freshly listed set of tools, so no
// call pays for compilation. Call it on every tools/list refresh. It returns
// the compile error of each tool whose schema cannot be used (keyed by tool
// name); under Reject those tools cannot be called, under Passthrough they
// are called unvalidated.
func (v *Validator) Prepare(tools []*mcp.Tool) map[string]error {
	errs := map[string]error{}
	for _, t := range tools {
		if t == nil {
			continue
		}
		e := v.lookup(t.InputSchema)
		v.remember(t, e)
		if e.err != nil {
			errs[t.Name] = e.err
		}
	}
	return errs
}

// Unvalidated reports whether calls to tool are forwarded without schema
// validation (its schema cannot compile and the policy is Passthrough), so
// that the audit log can record it.
func (v *Validator) Unvalidated(tool *mcp.Tool) bool {
	return tool != nil && v.o.OnInvalidSchema == Passthrough && v.entryFor(tool).err != nil
}

// Check validates args (the raw arguments of a call) against tool's input
// schema. A refusal is a *guard.Denial whose text tells the model what to fix.
func (v *Validator) Check(tool *mcp.Tool, args json.RawMessage) error {
	return v.check(&guard.Call{Kind: guard.KindTool, Tool: tool, Args: args})
}

// check validates the arguments of c as decoded once for every layer
// (guard.Call.Value).
func (v *Validator) check(c *guard.Call) error {
	tool, args := c.Tool, c.Args
	if tool == nil {
		return &guard.Denial{Layer: layerName, Rule: "unknown-tool",
			Reason: "the tool's definition is unknown, so its arguments cannot be checked; call get_dynamic_tools to see the available tools"}
	}
	if len(args) > v.o.MaxArgsBytes {
		return &guard.Denial{Layer: layerName, Rule: "arguments",
			Reason: fmt.Sprintf("the arguments of %s are %d bytes, over the limit of %d; send less data per call", tool.Name, len(args), v.o.MaxArgsBytes)}
	}
	inst, err := c.Value()
	if err != nil {
		return &guard.Denial{Layer: layerName, Rule: "arguments",
			Reason: fmt.Sprintf("the arguments of %s are not acceptable: %v; send a JSON object and call again", tool.Name, err)}
	}
	e := v.entryFor(tool)
	if e.err != nil {
		if v.o.OnInvalidSchema == Passthrough {
			return nil
		}
		return &guard.Denial{Layer: layerName, Rule: "invalid-schema", Cause: e.err,
			Reason: fmt.Sprintf("the input schema of %s cannot be used (%v), so Moat cannot check calls to it; the server must fix the schema, or the config can set on_invalid_schema: passthrough for this server", tool.Name, e.err)}
	}
	if err := e.props.check(inst, ""); err != nil {
		return &guard.Denial{Layer: layerName, Rule: "input-schema",
			Reason: fmt.Sprintf("arguments do not match the input schema of %s: %v; fix the arguments and call again", tool.Name, err)}
	}
	if err := e.sch.Validate(inst); err != nil {
		return &guard.Denial{Layer: layerName, Rule: "input-schema", Cause: err,
			Reason: fmt.Sprintf("arguments do not match the input schema of %s: %s; fix the arguments and call again", tool.Name, messages(err))}
	}
	return nil
}

// entryFor returns the compiled schema of tool, compiling at most once per
// distinct schema.
func (v *Validator) entryFor(tool *mcp.Tool) *entry {
	if e, ok := v.byTool.Load(weak.Make(tool)); ok {
		return e.(*entry)
	}
	e := v.lookup(tool.InputSchema)
	v.remember(tool, e)
	return e
}

func (v *Validator) remember(tool *mcp.Tool, e *entry) {
	wp := weak.Make(tool)
	if _, loaded := v.byTool.Swap(wp, e); !loaded {
		runtime.AddCleanup(tool, func(wp weak.Pointer[mcp.Tool]) { v.byTool.Delete(wp) }, wp)
	}
}

// lookup finds or compiles the entry for a schema.
func (v *Validator) lookup(schema any) *entry {
	key, value, err := v.canonical(schema)
	if err != nil {
		return &entry{err: err}
	}
	v.mu.Lock()
	e, ok := v.cache[key]
	if !ok {
		if len(v.cache) >= maxCached {
			clear(v.cache) // tools already seen keep their entries via byTool
		}
		e = &entry{value: value}
		v.cache[key] = e
	}
	v.mu.Unlock()
	e.once.Do(e.compile)
	return e
}

// canonical decodes a schema under the size and depth limits and returns the
// hash of its canonical form (sorted keys, numbers as written) with the
// decoded value.
func (v *Validator) canonical(schema any) ([32]byte, any, error) {
	var raw []byte
	switch s := schema.(type) {
	case nil:
		return [32]byte{}, nil, errors.New("the tool has no inputSchema")
	case json.RawMessage:
		raw = s
	case []byte:
		raw = s
	default:
		b, err := json.Marshal(s)
		if err != nil {
			return [32]byte{}, nil, fmt.Errorf("inputSchema is not JSON: %v", err)
		}
		raw = b
	}
	if len(raw) > v.o.MaxSchemaBytes {
		return [32]byte{}, nil, fmt.Errorf("inputSchema is %d bytes, over the limit of %d", len(raw), v.o.MaxSchemaBytes)
	}
	value, err := strictjson.Decode(bytes.TrimSpace(raw), v.o.MaxSchemaDepth)
	if err != nil {
		return [32]byte{}, nil, fmt.Errorf("inputSchema: %v", err)
	}
	canon, err := json.Marshal(value)
	if err != nil {
		return [32]byte{}, nil, fmt.Errorf("inputSchema: %v", err)
	}
	return sha256.Sum256(canon), value, nil
}

func (e *entry) compile() {
	if compileHook != nil {
		compileHook()
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(refuseLoader{})
	c.UseRegexpEngine(boundedRegexp)
	if err := c.AddResource(schemaURL, e.value); err != nil {
		e.err = schemaErr(err)
		return
	}
	sch, err := c.Compile(schemaURL)
	if err != nil {
		e.err = schemaErr(err)
		return
	}
	e.sch = sch
	e.props = buildProps(e.value)
	e.value = nil
}

// refuseLoader is the only loader a compiler gets: a schema must be
// self-contained. (The JSON Schema meta-schemas are built into the library
// and load without it.)
type refuseLoader struct{}

func (refuseLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("external $ref %s refused: Moat never loads schemas from files or the network", strictjson.QuoteKey(url))
}

func boundedRegexp(s string) (jsonschema.Regexp, error) {
	if len(s) > maxPatternBytes {
		return nil, fmt.Errorf("a pattern is longer than %d bytes", maxPatternBytes)
	}
	return regexp.Compile(s)
}

// schemaErr shortens a compile error to its useful part, without the
// library's internal URLs.
func schemaErr(err error) error {
	var le *jsonschema.LoadURLError
	if errors.As(err, &le) {
		return le.Err
	}
	var se *jsonschema.SchemaValidationError
	if errors.As(err, &se) {
		return errors.New("it is not a valid JSON Schema: " + messages(se.Err))
	}
	msg := strings.ReplaceAll(err.Error(), schemaURL, "inputSchema")
	msg = strings.Join(strings.Fields(msg), " ")
	return errors.New(cut(elide(msg), 300))
}

// messages lists the leaf errors of a validation failure as
// "at '/path': what", sorted, at most maxMessages of them.
func messages(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return cut(elide(err.Error()), 300)
	}
	var out []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		loc := ""
		if len(e.InstanceLocation) > 0 {
			loc = "/" + strings.Join(e.InstanceLocation, "/")
		}
		msg := "at " + elide(quoteLoc(loc)) + ": " + elide(e.ErrorKind.LocalizedString(printer))
		out = append(out, cut(msg, 300))
	}
	walk(ve)
	slices.Sort(out)
	if len(out) > maxMessages {
		return strings.Join(out[:maxMessages], "; ") + fmt.Sprintf("; and %d more", len(out)-maxMessages)
	}
	return strings.Join(out, "; ")
}

// quoteLoc quotes a JSON pointer the way the validator quotes values.
func quoteLoc(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}

// elide replaces each single-quoted value longer than maxQuoted runes in a
// validator message by its length, so a long argument (or secret) is not
// echoed back to the model. The library quotes with ' and escapes \'.
func elide(msg string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(msg, '\'')
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		j := i + 1
		for j < len(msg) && msg[j] != '\'' {
			if msg[j] == '\\' {
				j++
			}
			j++
		}
		if j >= len(msg) {
			b.WriteString(msg)
			return b.String()
		}
		b.WriteString(msg[:i])
		if n := utf8.RuneCountInString(msg[i+1 : j]); n > maxQuoted {
			fmt.Fprintf(&b, "<a value of %d characters>", n)
		} else {
			b.WriteString(msg[i : j+1])
		}
		msg = msg[j+1:]
	}
}

func cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return s[:max] + "…"
}
