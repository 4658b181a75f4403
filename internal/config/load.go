package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/moatmcp/moat/internal/safepath"
)

// maxFileSize bounds what Load reads; a real config is a few KiB.
const maxFileSize = 4 << 20

// ErrNoConfig means no config path was given by any of the accepted means.
var ErrNoConfig = errors.New("config: no config file given: pass its path as an argument, or set MOAT_CONFIG (or DYNAMIC_MCP_CONFIG)")

// LoadOptions supply what a config may refer to. A nil *LoadOptions, or a
// nil field, takes the default.
type LoadOptions struct {
	// Getenv looks up ${VAR} references; nil means os.LookupEnv.
	Getenv func(string) (string, bool)
	// Secret resolves ${secret:NAME} references; nil makes every such
	// reference a problem ("secret references need the secret store").
	Secret func(name string) (string, error)
	// UserSecret, when set, resolves the ${secret:NAME} references of
	// per-user servers ("per_user": true) instead of Secret: a gateway
	// loads each identity's copy of them with that identity's secrets
	// (and the shared config with none, since it never starts them).
	// server is the per-user server whose value of name is wanted.
	UserSecret func(server, name string) (string, error)
}

// ResolvePath picks the config file: arg if non-empty, else MOAT_CONFIG,
// else DYNAMIC_MCP_CONFIG (an empty variable counts as unset). It returns the
// absolute path and a label saying where it came from, or ErrNoConfig.
// getenv nil means os.LookupEnv.
func ResolvePath(arg string, getenv func(string) (string, bool)) (path, source string, err error) {
	if getenv == nil {
		getenv = os.LookupEnv
	}
	path, source = arg, "command line argument"
	for _, name := range []string{"MOAT_CONFIG", "DYNAMIC_MCP_CONFIG"} {
		if path != "" {
			break
		}
		v, _ := getenv(name)
		path, source = v, name+" environment variable"
	}
	if path == "" {
		return "", "", ErrNoConfig
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", "", fmt.Errorf("config: %s (from the %s): %w", path, source, err)
	}
	return abs, source, nil
}

// Load reads, checks and expands the config file at path. A file that other
// users can change, or that is malformed in any way, gives an *Error listing
// every problem; an unreadable file gives an error wrapping the os error.
func Load(path string, opts *LoadOptions) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	data, err := readSafely(abs)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(abs, data, opts)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// readSafely reads a regular file that only its owner (the current user or
// root) can write, in directories only they can write (see package
// safepath). The path is checked first, so no other user can swap the file
// between the check and the open; the open file is checked again, so the
// file read is the file checked.
func readSafely(path string) ([]byte, error) {
	if err := safepath.Check(path, safepath.Trusted); err != nil {
		if p := unsafeProblem(err); p != nil {
			return nil, &Error{File: path, Problems: []Problem{*p}}
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	// Stat first so a FIFO is refused before open blocks on it.
	if fi, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	} else if !fi.Mode().IsRegular() {
		return nil, &Error{File: path, Problems: []Problem{{Msg: "not a regular file", Hint: "give the path of a JSON file"}}}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if p := unsafeProblem(safepath.CheckInfo(path, fi, safepath.Trusted)); p != nil {
		return nil, &Error{File: path, Problems: []Problem{*p}}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, &Error{File: path, Problems: []Problem{{Msg: fmt.Sprintf("larger than %d MiB", maxFileSize>>20), Hint: "is this the right file?"}}}
	}
	return data, nil
}

// Parse checks and expands a config held in memory; file names it in
// problems and becomes Config.Path. It never touches the file system.
func Parse(file string, data []byte, opts *LoadOptions) (*Config, error) {
	cfg, ps, root := check(file, data, opts)
	if len(ps.list) == 0 && root != nil {
		schemaProblems(root, ps)
	}
	if len(ps.list) > 0 {
		return nil, &Error{File: file, Problems: ps.sorted()}
	}
	return cfg, nil
}

// check runs the parser and the Go checks, without the schema. It returns
// the tree (nil on a syntax error) so the schema can be checked separately.
func check(file string, data []byte, opts *LoadOptions) (*Config, *problems, *node) {
	ps := &problems{data: data}
	root, dups, serr := parseTree(data)
	if serr != nil {
		ps.add("", serr.off, serr.msg, serr.hint)
		return nil, ps, nil
	}
	for _, d := range dups {
		line, col := position(data, d.firstOff)
		ps.add(d.path, d.off, fmt.Sprintf("duplicate key %q (first at line %d, col %d)", d.key, line, col),
			"remove one of them: JSON readers disagree on which one wins")
	}
	c := &checker{ps: ps}
	if opts != nil {
		c.opts = *opts
	}
	c.getenv = c.opts.Getenv
	if c.getenv == nil {
		c.getenv = os.LookupEnv
	}
	sum := sha256.Sum256(data)
	cfg := &Config{Path: file, Hash: hex.EncodeToString(sum[:])}
	c.root(root, cfg)
	return cfg, ps, root
}
