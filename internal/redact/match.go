package redact

import (
	"cmp"
	"slices"
)

// automaton is an Aho-Corasick matcher over byte classes. The start state
// has a dense row (most bytes of ordinary text leave it at once, or never
// leave it); every other state keeps only its own edges, which past the
// first bytes of random secrets is one, and falls back along its failure
// link. A dense table for every state would cost states × classes entries:
// about 280 MB for 1,600 token values, where this keeps a few words per
// state (BenchmarkCompile). It is immutable once built; Add builds a new
// one.
type automaton struct {
	class  [256]uint16 // byte -> class; 0 for bytes in no secret
	nclass int
	root   []int32 // class -> the start state's next state (0: itself)
	// The edges of state s are edgeClass and edgeNext over
	// [first[s], first[s+1]).
	first     []int32
	edgeClass []uint16
	edgeNext  []int32
	fail      []int32 // per state: the longest proper suffix that is a state
	longest   []int32 // per state: length of the longest form ending here, 0 if none
	label     []int32 // per state: index into names of that form
	names     []string
	maxLen    int // of the longest form
}

type form struct {
	text  string
	label int
}

// edge is a trie edge while the automaton is built.
type edge struct {
	from int32
	c    uint16
	to   int32
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

	// The trie, from the forms in sorted order: each shares with the one
	// before exactly the path of their common prefix, so no edge is ever
	// looked up. The sort is stable: of equal forms the first given keeps
	// the state's label, as it would inserted in order.
	sorted := slices.Clone(forms)
	slices.SortStableFunc(sorted, func(x, y form) int { return cmp.Compare(x.text, y.text) })
	a.longest, a.label = []int32{0}, []int32{0}
	var edges []edge
	path := []int32{0} // path[i]: the state of the previous form's first i bytes
	prev := ""
	for _, f := range sorted {
		n := 0
		for n < len(f.text) && n < len(prev) && f.text[n] == prev[n] {
			n++
		}
		path = path[:n+1]
		for i := n; i < len(f.text); i++ {
			s := int32(len(a.longest))
			a.longest, a.label = append(a.longest, 0), append(a.label, 0)
			edges = append(edges, edge{path[i], a.class[f.text[i]], s})
			path = append(path, s)
		}
		prev = f.text
		s := path[len(f.text)]
		a.maxLen = max(a.maxLen, len(f.text))
		if int32(len(f.text)) > a.longest[s] {
			a.longest[s] = int32(len(f.text))
			a.label[s] = int32(f.label)
		}
	}

	// Edges grouped by state (a counting sort), the start state's as its
	// dense row.
	states := len(a.longest)
	a.first = make([]int32, states+1)
	a.root = make([]int32, a.nclass)
	for _, e := range edges {
		if e.from == 0 {
			a.root[e.c] = e.to
		} else {
			a.first[e.from+1]++
		}
	}
	for s := range states {
		a.first[s+1] += a.first[s]
	}
	a.edgeClass = make([]uint16, a.first[states])
	a.edgeNext = make([]int32, a.first[states])
	fill := slices.Clone(a.first[:states])
	for _, e := range edges {
		if e.from != 0 {
			a.edgeClass[fill[e.from]], a.edgeNext[fill[e.from]] = e.c, e.to
			fill[e.from]++
		}
	}

	// Failure links, breadth first (a state's link is shallower, so it is
	// done first), and each state's longest form taken from its link.
	a.fail = make([]int32, states)
	queue := make([]int32, 0, states)
	for _, s := range a.root {
		if s != 0 {
			queue = append(queue, s)
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		if f := a.fail[s]; a.longest[f] > a.longest[s] {
			a.longest[s], a.label[s] = a.longest[f], a.label[f]
		}
		for e := a.first[s]; e < a.first[s+1]; e++ {
			n := a.edgeNext[e]
			a.fail[n] = a.next(a.fail[s], a.edgeClass[e])
			queue = append(queue, n)
		}
	}
	return a
}

// next is the state after reading a byte of class c in state s.
func (a *automaton) next(s int32, c uint16) int32 {
	for s != 0 {
		for e := a.first[s]; e < a.first[s+1]; e++ {
			if a.edgeClass[e] == c {
				return a.edgeNext[e]
			}
		}
		s = a.fail[s]
	}
	return a.root[c]
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
		st = a.next(st, a.class[s[i]])
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
