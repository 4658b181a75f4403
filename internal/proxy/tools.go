package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/hygiene"
	"github.com/moatmcp/moat/internal/upstream"
)

// The two tool names are dynamic-mcp's, so its users can switch binaries.
const (
	toolGet  = "get_dynamic_tools"
	toolCall = "call_dynamic_tool"
)

const getPreamble = "Get the tools of one group of MCP servers, with their descriptions and input schemas. " +
	"Call this first for a group, then run one of its tools with call_dynamic_tool."

const callDescription = "Run a tool of a group. Call get_dynamic_tools first to learn the group's tools and their input schemas. " +
	`Example: call_dynamic_tool(group="playwright", name="browser_navigate", args={"url": "https://example.com"})`

// toolDefs builds the two tools from the groups' current states. The group
// enum lists every enabled group, sorted, whatever its state, so the schema
// is valid from the first tools/list on.
func (p *Server) toolDefs() (get, call *mcp.Tool) {
	groups := p.groups()
	names := make([]string, 0, len(groups))
	var b strings.Builder
	b.WriteString(getPreamble)
	if len(groups) == 0 {
		b.WriteString("\n\nNo groups are configured: add servers to the config's mcpServers.")
	} else {
		b.WriteString("\n\nGroups:")
	}
	for _, g := range groups {
		names = append(names, g.Name())
		fmt.Fprintf(&b, "\n- %s: %s (%s)", g.Name(), oneLine(g.Description()), p.describeStatus(g))
	}
	groupProp := func(desc string) map[string]any {
		prop := map[string]any{"type": "string", "description": desc}
		if len(names) > 0 {
			prop["enum"] = names
		}
		return prop
	}
	get = &mcp.Tool{
		Name:        toolGet,
		Description: b.String(),
		InputSchema: map[string]any{
			"type":                 "object",
			"properties":           map[string]any{"group": groupProp("The name of the MCP group to get tools from")},
			"required":             []string{"group"},
			"additionalProperties": false,
		},
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(false)},
	}
	call = &mcp.Tool{
		Name:        toolCall,
		Description: callDescription,
		InputSchema: map[string]any{
			"type": "object",
			"properties": map[string]any{
				"group": groupProp("The name of the MCP group containing the tool"),
				"name":  map[string]any{"type": "string", "description": "The name of the tool to execute"},
				"args":  map[string]any{"type": "object", "description": "Arguments to pass to the tool", "additionalProperties": true},
			},
			"required":             []string{"group", "name"},
			"additionalProperties": false,
		},
	}
	return get, call
}

func (p *Server) describeStatus(g *upstream.Group) string {
	st := g.Status()
	switch st.State {
	case upstream.Ready:
		if !g.Config().Features.Tools {
			return "ready, tools disabled"
		}
		n, held := 0, 0
		for _, e := range p.catalog(g) {
			if e.Held != "" {
				held++
			} else {
				n++
			}
		}
		s := fmt.Sprintf("ready, %d tools", n)
		if n == 1 {
			s = "ready, 1 tool"
		}
		if held > 0 {
			s += fmt.Sprintf(", %d awaiting approval", held)
		}
		return s
	}
	return st.Summary(time.Now())
}

// oneLine keeps config text from breaking the group list's layout.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func invalidParams(format string, args ...any) error {
	return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf(format, args...)}
}

// toolError is a result the model sees as a failed tool call.
func toolError(format string, args ...any) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf(format, args...)}}}
}

// decodeArgs reads a tool's arguments strictly: only the named keys, each
// once and spelled exactly (encoding/json would match "Group" to "group",
// letting a check and a use read different values).
func decodeArgs(raw json.RawMessage, allowed ...string) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(raw)) == 0 {
		return out, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, errors.New("arguments must be a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("arguments: %v", err)
		}
		key := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("arguments: %q: %v", key, err)
		}
		if !contains(allowed, key) {
			return nil, fmt.Errorf("unknown argument %q (allowed: %s)", key, strings.Join(allowed, ", "))
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("argument %q given twice", key)
		}
		out[key] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("arguments: %v", err)
	}
	if dec.More() {
		return nil, errors.New("arguments: trailing data after the object")
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func stringArg(args map[string]json.RawMessage, key string) (string, error) {
	v, ok := args[key]
	if !ok {
		return "", fmt.Errorf("missing required argument %q", key)
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil || s == "" {
		return "", fmt.Errorf("argument %q must be a non-empty string", key)
	}
	return s, nil
}

// lookupGroup returns the named group or a -32602 error listing the groups.
func (p *Server) lookupGroup(name string) (*upstream.Group, error) {
	if g, ok := p.group(name); ok {
		return g, nil
	}
	if err := p.perUserError(name); err != nil {
		return nil, err
	}
	var names []string
	for _, g := range p.groups() {
		names = append(names, g.Name())
	}
	if len(names) == 0 {
		return nil, invalidParams("unknown group %q: no groups are configured", name)
	}
	return nil, invalidParams("unknown group %q; groups: %s", name, strings.Join(names, ", "))
}

func (p *Server) getDynamicTools(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	args, err := decodeArgs(req.Params.Arguments, "group")
	if err != nil {
		return nil, invalidParams("%s: %v", toolGet, err)
	}
	name, err := stringArg(args, "group")
	if err != nil {
		return nil, invalidParams("%s: %v", toolGet, err)
	}
	g, err := p.lookupGroup(name)
	if err != nil {
		return nil, err
	}
	if !g.Config().Features.Tools {
		return textResult("[]"), nil
	}
	if _, err := g.Session(ctx); err != nil {
		if why, offered := p.askLogin(ctx, req.Session, g); offered != nil {
			return nil, offered
		} else if why != "" {
			return toolError("%s; a login link cannot be offered: %s", unavailableText(err), why), nil
		}
		return toolError("%s", unavailableText(err)), nil
	}
	if err := g.ToolsSettled(ctx); err != nil {
		return toolError("%s", unavailableText(err)), nil
	}
	out := make([]toolView, 0)
	for _, e := range p.catalog(g) {
		if e.Held != "" {
			out = append(out, toolView{Name: e.Tool.Name, Status: e.Held})
			continue
		}
		out = append(out, viewOf(e.Tool))
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encoding the tools of group %q: %w", name, err)
	}
	return textResult(string(b)), nil
}

// toolView is how get_dynamic_tools shows one upstream tool.
type toolView struct {
	Name         string               `json:"name"`
	Title        string               `json:"title,omitempty"`
	Description  string               `json:"description,omitempty"`
	InputSchema  any                  `json:"inputSchema,omitempty"`
	Status       string               `json:"status,omitempty"` // why a listed tool cannot be called now
	OutputSchema any                  `json:"outputSchema,omitempty"`
	Annotations  *mcp.ToolAnnotations `json:"annotations,omitempty"`
}

func viewOf(t *mcp.Tool) toolView {
	return toolView{
		Name:         t.Name,
		Title:        t.Title,
		Description:  t.Description,
		InputSchema:  withoutSchemaKey(t.InputSchema),
		OutputSchema: t.OutputSchema,
		Annotations:  t.Annotations,
	}
}

// withoutSchemaKey drops the top-level "$schema" of a schema, as
// dynamic-mcp does: it costs context and tells the model nothing.
func withoutSchemaKey(schema any) any {
	m, ok := schema.(map[string]any)
	if !ok {
		return schema
	}
	if _, ok := m["$schema"]; !ok {
		return m
	}
	c := make(map[string]any, len(m))
	for k, v := range m {
		if k != "$schema" {
			c[k] = v
		}
	}
	return c
}

func textResult(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

func unavailableText(err error) string {
	if errors.Is(err, upstream.ErrUnavailable) {
		msg := err.Error()
		return strings.TrimSuffix(msg, ": "+upstream.ErrUnavailable.Error())
	}
	return err.Error()
}

func (p *Server) callDynamicTool(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	res, err := p.callDynamicToolChecked(ctx, req)
	if err != nil && p.refused != nil {
		// What could be read of the request, best effort: the strict
		// decoding refused it, so these values are only for the record.
		var loose struct{ Group, Name string }
		json.Unmarshal(req.Params.Arguments, &loose)
		p.refused(ctx, &guard.Call{Kind: guard.KindTool, Group: loose.Group, Name: loose.Name, Args: req.Params.Arguments, Session: p.sessionID(req.Session), Identity: p.identity}, err)
	}
	return res, err
}

func (p *Server) callDynamicToolChecked(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	args, err := decodeArgs(req.Params.Arguments, "group", "name", "args")
	if err != nil {
		return nil, invalidParams("%s: %v", toolCall, err)
	}
	group, err := stringArg(args, "group")
	if err != nil {
		return nil, invalidParams("%s: %v", toolCall, err)
	}
	name, err := stringArg(args, "name")
	if err != nil {
		return nil, invalidParams("%s: %v", toolCall, err)
	}
	toolArgs := args["args"]
	if len(toolArgs) == 0 || string(toolArgs) == "null" {
		toolArgs = json.RawMessage("{}")
	} else if bytes.TrimSpace(toolArgs)[0] != '{' {
		return nil, invalidParams("%s: argument \"args\" must be a JSON object", toolCall)
	}
	g, err := p.lookupGroup(group)
	if err != nil {
		return nil, err
	}
	// Refusals past the decoding are tool errors for the model, and are
	// audited like the chain's own (Options.Refused).
	refuse := func(err error, res *mcp.CallToolResult) (*mcp.CallToolResult, error) {
		if p.refused != nil {
			p.refused(ctx, &guard.Call{Kind: guard.KindTool, Group: group, Name: name, Args: toolArgs, Session: p.sessionID(req.Session), Identity: p.identity}, err)
		}
		return res, nil
	}
	if !g.Config().Features.Tools {
		d := &guard.Denial{Layer: guard.LayerProxy, Rule: "tools-off",
			Reason: fmt.Sprintf("group %q has tools turned off in the config (features.tools: false)", group)}
		return refuse(d, toolError("%s", d.Reason))
	}
	if _, err := g.Session(ctx); err != nil {
		if why, offered := p.askLogin(ctx, req.Session, g); offered != nil {
			refuse(err, nil)
			return nil, offered
		} else if why != "" {
			return refuse(err, toolError("%s; a login link cannot be offered: %s", unavailableText(err), why))
		}
		return refuse(err, toolError("%s", unavailableText(err)))
	}
	// A server that announced a new tool list is judged by that list:
	// a call in the window would run on the replaced tool's approval.
	if err := g.ToolsSettled(ctx); err != nil {
		return refuse(err, toolError("%s", unavailableText(err)))
	}
	tool := findTool(g.Lists().Tools, name)
	if tool == nil || hygiene.Name(name) != name {
		// A name that hides characters or runs long is never listed; it
		// is not callable either, approved or not.
		return nil, invalidParams("unknown tool %q in group %q; call get_dynamic_tools(group=%q) to see its tools", hygiene.Name(name), group, group)
	}
	// The catalog runs first so that the layers (pins above all) judge
	// this call against the same decisions the listing showed.
	p.catalog(g)
	c := &guard.Call{
		Kind:     guard.KindTool,
		Group:    group,
		Name:     name,
		Args:     toolArgs,
		Session:  p.sessionID(req.Session),
		Identity: p.identity,
		Tool:     tool,
		Progress: req.Params.GetProgressToken(),
	}
	res, err := p.handler(ctx, c)
	var d *guard.Denial
	switch {
	case errors.As(err, &d):
		return toolError("%s", d.Error()), nil
	case err != nil:
		return toolError("calling %q in group %q failed: %s", name, group, failureText(err)), nil
	}
	return res.Tool, nil
}

func findTool(tools []*mcp.Tool, name string) *mcp.Tool {
	for _, t := range tools {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// failureText describes a failed upstream call for the model. The upstream
// controls part of it, so it is cleaned and cut like any upstream text.
func failureText(err error) string {
	msg := unavailableText(err)
	if errors.Is(err, guard.ErrTimeout) {
		return msg
	}
	var we *jsonrpc.Error
	if errors.As(err, &we) {
		return fmt.Sprintf("the server answered with error %d: %s", we.Code, hygiene.Line(we.Message, 1000))
	}
	return hygiene.Line(msg, 1000)
}
