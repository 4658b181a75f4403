// Package pin defends against "rug pulls": an upstream that changes a tool's
// definition after the user started trusting it. On first sight of a group,
// Moat records a hash of each tool's definition (trust on first use); later,
// a changed, added (unless auto-add) or renamed tool is held back, neither
// listed nor callable, until the user approves it with `moat pins approve`.
//
// Pins live in one file (0600, in a 0700 directory), replaced atomically and
// authenticated with an HMAC whose key the caller keeps in the secret store.
// A store that fails its check is refused as a whole (fail closed).
package pin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// hashedFields are the parts of a tool definition the model reads or that
// shape its calls; _meta, icons and the like are left out.
var hashedFields = []string{"name", "title", "description", "inputSchema", "outputSchema", "annotations"}

// Identity is the server identity to pin tools to: its command and
// arguments for a stdio server, or its URL. A change of command or URL
// changes every hash, so every tool is held again.
func Identity(command string, args []string, url string) string {
	b, _ := json.Marshal(struct {
		Command string   `json:"command,omitempty"`
		Args    []string `json:"args,omitempty"`
		URL     string   `json:"url,omitempty"`
	}{command, args, url})
	return string(b)
}

// Hash is the hex SHA-256 of the RFC 8785 canonical JSON of
// {"identity": serverIdentity, "tool": {name, title, description,
// inputSchema, outputSchema, annotations}}. It returns "" for a tool that
// cannot be encoded; "" never matches a pin.
func Hash(serverIdentity string, t *mcp.Tool) string {
	h, _, err := hashTool(serverIdentity, t)
	if err != nil {
		return ""
	}
	return h
}

// definition is the canonical JSON of the hashed fields of t.
func definition(t *mcp.Tool) ([]byte, error) {
	raw, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("pin: encoding tool %q: %w", t.Name, err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(raw, &all); err != nil {
		return nil, fmt.Errorf("pin: encoding tool %q: %w", t.Name, err)
	}
	kept := map[string]json.RawMessage{}
	for _, k := range hashedFields {
		if v, ok := all[k]; ok {
			kept[k] = v
		}
	}
	b, err := json.Marshal(kept)
	if err != nil {
		return nil, err
	}
	return Canonical(b)
}

func hashTool(identity string, t *mcp.Tool) (hash string, def []byte, err error) {
	if t == nil {
		return "", nil, fmt.Errorf("pin: no tool definition")
	}
	def, err = definition(t)
	if err != nil {
		return "", nil, err
	}
	hash, err = hashDef(identity, def)
	return hash, def, err
}

// hashDef is the hash of a tool's canonical definition def (see
// [definition]) under identity.
func hashDef(identity string, def []byte) (string, error) {
	id, _ := json.Marshal(identity)
	doc, err := Canonical([]byte(`{"identity":` + string(id) + `,"tool":` + string(def) + `}`))
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(doc)
	return hex.EncodeToString(sum[:]), nil
}
