package hygiene

import (
	"encoding/json"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const (
	maxName  = 128 // tool names are short identifiers
	maxTitle = 256
)

// Name returns a tool name as the model may see it: cleaned, and cut at
// 128 characters. A name that Name changes hid characters or ran long: the
// caller should not show it, nor route calls by it.
func Name(s string) string { return Clean(s, maxName) }

// Tool returns a cleaned copy of t for the model: name, title, annotation
// title, description (cut at maxDesc runes; 0 means no cut), and every
// string inside its input and output schemas (see cleanValue).
// t itself is never modified. If the copy's Name differs from t.Name, the
// upstream hid characters in the name: the caller should not route calls by
// the cleaned name without saying so.
func Tool(t *mcp.Tool, maxDesc int) *mcp.Tool {
	if t == nil {
		return nil
	}
	c := *t
	c.Name = Name(t.Name)
	c.Title = Clean(t.Title, maxTitle)
	c.Description = Clean(t.Description, maxDesc)
	if t.Annotations != nil {
		a := *t.Annotations
		a.Title = Clean(a.Title, maxTitle)
		c.Annotations = &a
	}
	c.InputSchema = cleanSchema(t.InputSchema, maxDesc)
	c.OutputSchema = cleanSchema(t.OutputSchema, maxDesc)
	return &c
}

// cleanSchema returns a deep copy of a schema with its annotations cleaned.
// A schema that is not a decoded map (json.RawMessage, a struct) goes
// through JSON first; one that cannot is dropped to nil rather than passed
// on unexamined.
func cleanSchema(s any, maxDesc int) any {
	switch s := s.(type) {
	case nil:
		return nil
	case map[string]any:
		return cleanValue(s, maxDesc)
	case json.RawMessage:
		var v any
		if json.Unmarshal(s, &v) != nil {
			return nil
		}
		return cleanValue(v, maxDesc)
	default:
		b, err := json.Marshal(s)
		if err != nil {
			return nil
		}
		var v any
		if json.Unmarshal(b, &v) != nil {
			return nil
		}
		return cleanValue(v, maxDesc)
	}
}

// cleanValue cleans every string of a schema the model reads: annotations
// ("description", "title") cut at maxDesc, and everything else a model also
// reads (defaults, examples, enum values, property names) uncut. The
// validator checks arguments against the schema as the server sent it, so
// a value that only hid characters cannot be met by the model's input:
// the hidden text never reaches the model either way.
func cleanValue(v any, maxDesc int) any {
	switch v := v.(type) {
	case string:
		return Clean(v, 0)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, val := range v {
			if s, ok := val.(string); ok && (k == "description" || k == "title") {
				out[Clean(k, 0)] = Clean(s, maxDesc)
				continue
			}
			out[Clean(k, 0)] = cleanValue(val, maxDesc)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, val := range v {
			out[i] = cleanValue(val, maxDesc)
		}
		return out
	}
	return v
}
