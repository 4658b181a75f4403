package validate

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/moatmcp/moat/internal/strictjson"
)

// propTree holds the property names a schema declares for an object, to
// catch keys that differ from a declared name only in case. Such a key is
// not checked by the property's schema (nor by a policy rule on the
// property), yet a case-insensitive upstream decoder (Go's encoding/json,
// for one) reads it as that property.
//
// Names are gathered the way generators declare them, not only from
// "properties": through local $ref ("#/$defs/…", "#/definitions/…", as
// pydantic emits), allOf, anyOf and oneOf (zod's intersections and unions),
// if/then/else and dependentSchemas. A key may match any declared spelling
// exactly; one that matches only when case is ignored is refused.
type propTree struct {
	exact  map[string]*propTree // declared name -> what its value declares (nil: nothing)
	folded map[string]string    // strictjson.Fold(name) -> a declared name
	items  *propTree            // what the elements of an array value declare
}

// Bounds on the walk, so a hostile schema cannot make building the tree
// expensive: nesting depth, and $ref resolutions per tree.
const (
	maxPropDepth = 32
	maxPropRefs  = 256
)

func buildProps(schema any) *propTree {
	b := &propBuilder{root: schema, onPath: map[string]bool{}}
	t := &propTree{}
	b.collect(schema, t, 0)
	return t.pruned()
}

type propBuilder struct {
	root   any
	onPath map[string]bool // $refs being followed: a cycle stops here
	refs   int
}

// collect adds what schema s declares for an object to t.
func (b *propBuilder) collect(s any, t *propTree, depth int) {
	obj, ok := s.(map[string]any)
	if !ok || depth > maxPropDepth {
		return
	}
	if ref, ok := obj["$ref"].(string); ok && strings.HasPrefix(ref, "#") && !b.onPath[ref] && b.refs < maxPropRefs {
		b.refs++
		if target, ok := pointer(b.root, ref[1:]); ok {
			b.onPath[ref] = true
			b.collect(target, t, depth+1)
			delete(b.onPath, ref)
		}
	}
	if props, ok := obj["properties"].(map[string]any); ok {
		for name, ps := range props {
			if t.exact == nil {
				t.exact, t.folded = map[string]*propTree{}, map[string]string{}
			}
			sub := t.exact[name]
			if sub == nil {
				sub = &propTree{}
				t.exact[name] = sub
			}
			t.folded[strictjson.Fold(name)] = name
			b.collect(ps, sub, depth+1)
		}
	}
	for _, k := range []string{"allOf", "anyOf", "oneOf"} {
		if arr, ok := obj[k].([]any); ok {
			for _, sub := range arr {
				b.collect(sub, t, depth+1)
			}
		}
	}
	if items, ok := obj["items"].(map[string]any); ok {
		if t.items == nil {
			t.items = &propTree{}
		}
		b.collect(items, t.items, depth+1)
	}
	for _, k := range []string{"if", "then", "else"} {
		b.collect(obj[k], t, depth+1)
	}
	if deps, ok := obj["dependentSchemas"].(map[string]any); ok {
		for _, sub := range deps {
			b.collect(sub, t, depth+1)
		}
	}
}

// pruned drops subtrees that declare nothing; nil for an empty tree.
func (t *propTree) pruned() *propTree {
	if t == nil {
		return nil
	}
	t.items = t.items.pruned()
	for name, sub := range t.exact {
		t.exact[name] = sub.pruned()
	}
	if len(t.exact) == 0 && t.items == nil {
		return nil
	}
	return t
}

// pointer resolves a JSON pointer (RFC 6901, without the leading "#")
// within root.
func pointer(root any, ptr string) (any, bool) {
	if ptr == "" {
		return root, true
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, false // an anchor ("#name"), not a pointer
	}
	cur := root
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[tok]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// check reports the first key of inst that matches a declared property name
// only when case is ignored.
func (t *propTree) check(inst any, path string) error {
	if t == nil {
		return nil
	}
	if arr, ok := inst.([]any); ok {
		for i, el := range arr {
			if err := t.items.check(el, path+"/"+strconv.Itoa(i)); err != nil {
				return err
			}
		}
		return nil
	}
	obj, ok := inst.(map[string]any)
	if !ok {
		return nil
	}
	for k, val := range obj {
		if sub, declared := t.exact[k]; declared {
			if err := sub.check(val, path+"/"+k); err != nil {
				return err
			}
			continue
		}
		if name, variant := t.folded[strictjson.Fold(k)]; variant {
			return fmt.Errorf("at %s: key %s differs only in case from the declared property %s; use the exact name",
				strictjson.QuoteKey(path), strictjson.QuoteKey(k), strictjson.QuoteKey(name))
		}
	}
	return nil
}
