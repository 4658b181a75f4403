package redact

// automaton is an Aho-Corasick matcher compiled to a DFA over byte classes:
// one table lookup per input byte whatever the number of secrets. It is
// immutable once built; Add builds a new one.
type automaton struct {
	class   [256]uint16 // byte -> class; 0 for bytes in no secret
	nclass  int
	delta   []int32 // state*nclass + class -> next state
	longest []int32 // per state: length of the longest form ending here, 0 if none
	label   []int32 // per state: index into names of that form
	names   []string
	maxLen  int // of the longest form
}

type form struct {
	text  string
	label int
}

func build(forms []form, names []string) *automaton {
	a := &automaton{names: names}
	for _, f := range forms {
		for i := 0; i < len(f.text); i++ {
			c := f.text[i]
			if a.class[c] == 0 {
				a.nclass++
				a.class[c] = uint16(a.nclass)
			}
		}
	}
	a.nclass++ // class 0 included
	// Trie with -1 for missing edges.
	newState := func() int32 {
		for range a.nclass {
			a.delta = append(a.delta, -1)
		}
		a.longest = append(a.longest, 0)
		a.label = append(a.label, 0)
		return int32(len(a.longest) - 1)
	}
	newState()
	for _, f := range forms {
		s := int32(0)
		for i := 0; i < len(f.text); i++ {
			idx := int(s)*a.nclass + int(a.class[f.text[i]])
			if a.delta[idx] < 0 {
				n := newState()
				a.delta[idx] = n
			}
			s = a.delta[idx]
		}
		a.maxLen = max(a.maxLen, len(f.text))
		if int32(len(f.text)) > a.longest[s] {
			a.longest[s] = int32(len(f.text))
			a.label[s] = int32(f.label)
		}
	}
	// Breadth-first: fail links, then fill missing edges from the fail state.
	fail := make([]int32, len(a.longest))
	queue := []int32{}
	for c := range a.nclass {
		if n := a.delta[c]; n < 0 {
			a.delta[c] = 0
		} else {
			queue = append(queue, n)
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		if f := fail[s]; a.longest[f] > a.longest[s] {
			a.longest[s], a.label[s] = a.longest[f], a.label[f]
		}
		for c := range a.nclass {
			idx := int(s)*a.nclass + c
			if n := a.delta[idx]; n < 0 {
				a.delta[idx] = a.delta[int(fail[s])*a.nclass+c]
			} else {
				fail[n] = a.delta[int(fail[s])*a.nclass+c]
				queue = append(queue, n)
			}
		}
	}
	return a
}

// span is a region of the input to replace by the marker of names[label].
type span struct{ start, end, label int }

// find returns the regions of s covered by any form, overlapping matches
// merged (the first one's name wins), in order. It reads text and encoded
// messages alike, so the client boundary scans a message without copying it.
func find[T string | []byte](a *automaton, s T) []span {
	if a == nil || len(a.names) == 0 {
		return nil
	}
	var spans []span
	st := int32(0)
	for i := 0; i < len(s); i++ {
		st = a.delta[int(st)*a.nclass+int(a.class[s[i]])]
		n := a.longest[st]
		if n == 0 {
			continue
		}
		sp := span{start: i + 1 - int(n), end: i + 1, label: int(a.label[st])}
		for len(spans) > 0 && sp.start < spans[len(spans)-1].end {
			last := spans[len(spans)-1]
			spans = spans[:len(spans)-1]
			if last.start <= sp.start {
				sp.start, sp.label = last.start, last.label
			}
		}
		spans = append(spans, sp)
	}
	return spans
}
