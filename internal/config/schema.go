package config

import (
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed config-schema.json
var schemaJSON []byte

// schemaURL is the schema's $id; the compiler never fetches it.
const schemaURL = "https://raw.githubusercontent.com/moatmcp/moat/main/config-schema.json"

// Schema returns the config's JSON Schema (2020-12), the same bytes the
// loader validates against. Callers must not modify the slice.
func Schema() []byte { return schemaJSON }

// refuseLoader refuses every external $ref: the schema is self-contained,
// and a loader that can read files or URLs is an oracle nobody needs.
type refuseLoader struct{}

func (refuseLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("external schema reference %q refused", url)
}

var compiledSchema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(string(schemaJSON)))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(refuseLoader{})
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, err
	}
	return c.Compile(schemaURL)
})

// schemaProblems validates the parsed file against the embedded schema.
// The Go checks already report everything the schema can say, with better
// messages; this is the guarantee that the loader never accepts a file the
// published schema rejects.
func schemaProblems(root *node, ps *problems) {
	sch, err := compiledSchema()
	if err != nil {
		// Unreachable while the tests pass; refuse rather than skip the check.
		ps.add("", 0, "internal error: the embedded config-schema.json does not compile: "+err.Error(),
			"please report this bug")
		return
	}
	err = sch.Validate(root.toAny())
	var ve *jsonschema.ValidationError
	if err == nil || !errors.As(err, &ve) {
		return
	}
	seen := map[string]bool{}
	for _, leaf := range leaves(ve) {
		path := pointer(leaf.InstanceLocation...)
		msg := leaf.Error()
		// The leaf's own text starts with a header line; keep its detail.
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		if seen[path+msg] {
			continue
		}
		seen[path+msg] = true
		ps.add(path, root.lookup(leaf.InstanceLocation), "does not match config-schema.json: "+msg,
			"see `moat config schema` for the allowed form")
	}
}

// leaves returns the innermost validation errors, which say what is wrong
// rather than which keyword failed.
func leaves(ve *jsonschema.ValidationError) []*jsonschema.ValidationError {
	if len(ve.Causes) == 0 {
		return []*jsonschema.ValidationError{ve}
	}
	var out []*jsonschema.ValidationError
	for _, c := range ve.Causes {
		out = append(out, leaves(c)...)
	}
	return out
}
