package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/moatmcp/moat/internal/safepath"
	"github.com/moatmcp/moat/policy"
)

// LoadManaged reads the administrator's managed policy file at path. It
// fails closed: a file that cannot be read, that someone other than root or
// the user could change (the file or any directory on its path, see package
// safepath), or that does not parse, is an *Error with each problem's line,
// column and fix, never an empty policy. A missing file is an error
// wrapping fs.ErrNotExist: the caller decides whether that is fine (the
// default path on a host without managed policy) or not (a path named by
// MOAT_MANAGED_POLICY).
//
// The result is one reading: the policy, the file's absolute path and the
// SHA-256 of the very bytes the policy was parsed from, so that what a load
// applies and what its policy_load record names cannot differ when the file
// changes in between.
func LoadManaged(path string) (*Managed, error) {
	if !safepath.Supported {
		return nil, fmt.Errorf("config: managed policy %s: cannot check who may write it on this system; managed policy files are supported on Unix only", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: managed policy %s: %w", path, err)
	}
	data, err := readSafely(abs)
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			for i := range ce.Problems {
				ce.Problems[i].Msg = "managed policy: " + ce.Problems[i].Msg
			}
		}
		return nil, err
	}
	ps := &problems{data: data}
	root, dups, serr := parseTree(data)
	if serr != nil {
		ps.add("", serr.off, serr.msg, serr.hint)
		return nil, &Error{File: abs, Problems: ps.sorted()}
	}
	for _, d := range dups {
		ps.add(d.path, d.off, fmt.Sprintf("duplicate key %q", d.key), "remove one of them: JSON readers disagree on which one wins")
	}
	if len(ps.list) > 0 {
		return nil, &Error{File: abs, Problems: ps.sorted()}
	}
	m, err := policy.ParseManaged(data)
	var pe *policy.Error
	if errors.As(err, &pe) {
		for _, p := range pe.Problems {
			at, keyOff := locate(root, splitPointer(p.Path))
			off := at.off
			if p.Key && keyOff >= 0 {
				off = keyOff
			}
			hint := p.Hint
			if hint == "" {
				hint = "Moat refuses to run with part of a managed policy; ask the administrator to fix it"
			}
			ps.add(p.Path, off, "managed policy: "+p.Msg, hint)
		}
		return nil, &Error{File: abs, Problems: ps.sorted()}
	}
	if err != nil {
		return nil, fmt.Errorf("config: managed policy %s: %w", abs, err)
	}
	sum := sha256.Sum256(data)
	return &Managed{Policy: m, Path: abs, Hash: hex.EncodeToString(sum[:])}, nil
}

// Managed is one reading of the administrator's policy file (LoadManaged).
type Managed struct {
	Policy *policy.ManagedPolicy
	Path   string // absolute
	Hash   string // hex SHA-256 of the bytes Policy was parsed from
}
