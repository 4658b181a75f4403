package validate

import "fmt"

// propTree holds the property names a schema declares directly (through
// "properties", not through $ref or combinators), to catch keys that differ
// from a declared name only in case. Such a key is not checked by the
// property's schema, yet a case-insensitive upstream decoder (Go's
// encoding/json, for one) reads it as that property.
type propTree struct {
	names map[string]string // fold(name) -> name
	sub   map[string]*propTree
}

func buildProps(schema any) *propTree {
	obj, ok := schema.(map[string]any)
	if !ok {
		return nil
	}
	props, ok := obj["properties"].(map[string]any)
	if !ok || len(props) == 0 {
		return nil
	}
	t := &propTree{names: make(map[string]string, len(props))}
	for name, ps := range props {
		t.names[fold(name)] = name
		if sub := buildProps(ps); sub != nil {
			if t.sub == nil {
				t.sub = map[string]*propTree{}
			}
			t.sub[name] = sub
		}
	}
	return t
}

// check reports the first key of inst that matches a declared property name
// only when case is ignored.
func (t *propTree) check(inst any, path string) error {
	obj, ok := inst.(map[string]any)
	if t == nil || !ok {
		return nil
	}
	for k, val := range obj {
		name, known := t.names[fold(k)]
		if !known {
			continue
		}
		if name != k {
			return fmt.Errorf("at %s: key %s differs only in case from the declared property %s; use the exact name",
				quoteShort(path), quoteShort(k), quoteShort(name))
		}
		if err := t.sub[name].check(val, path+"/"+k); err != nil {
			return err
		}
	}
	return nil
}
