package proxy

import (
	"bytes"
	"context"
	"encoding/json"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// groupParamTransport keeps dynamic-mcp's extension: clients may name the
// group as params.group on resource and prompt methods. go-sdk decodes
// params into fixed structs that would drop it, so the connection moves it
// into params._meta.group before go-sdk sees the request.
type groupParamTransport struct{ mcp.Transport }

func (t groupParamTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	c, err := t.Transport.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return groupParamConn{c}, nil
}

type groupParamConn struct{ mcp.Connection }

var groupMethods = map[string]bool{
	"resources/list": true, "resources/templates/list": true, "resources/read": true,
	"resources/subscribe": true, "resources/unsubscribe": true,
	"prompts/list": true, "prompts/get": true,
}

func (c groupParamConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	msg, err := c.Connection.Read(ctx)
	if req, ok := msg.(*jsonrpc.Request); ok && err == nil && groupMethods[req.Method] {
		req.Params = moveGroupToMeta(req.Params)
	}
	return msg, err
}

// moveGroupToMeta rewrites {"group":"g",...} as {"_meta":{"group":"g"},...}.
// Anything it does not understand is returned unchanged, for go-sdk to
// accept or reject as usual.
func moveGroupToMeta(params json.RawMessage) json.RawMessage {
	if !bytes.Contains(params, []byte(`"group"`)) {
		return params
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(params, &m); err != nil {
		return params
	}
	g, ok := m[metaGroupKey]
	if !ok {
		return params
	}
	var name string
	if err := json.Unmarshal(g, &name); err != nil {
		return params
	}
	meta := map[string]json.RawMessage{}
	if raw, ok := m["_meta"]; ok {
		if err := json.Unmarshal(raw, &meta); err != nil {
			return params
		}
	}
	if _, ok := meta[metaGroupKey]; !ok {
		meta[metaGroupKey] = g
	}
	delete(m, metaGroupKey)
	mb, err := json.Marshal(meta)
	if err != nil {
		return params
	}
	m["_meta"] = mb
	out, err := json.Marshal(m)
	if err != nil {
		return params
	}
	return out
}
