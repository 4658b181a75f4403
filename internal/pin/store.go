package pin

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Modes, as in the policy's "pin" key.
const (
	ModeStrict  = "strict"
	ModeAutoAdd = "auto-add"
	ModeOff     = "off"
)

// Reasons a tool is held.
const (
	ReasonChanged   = "changed"              // its definition differs from the approved one
	ReasonAdded     = "added"                // new since the group was first seen (strict mode)
	ReasonReadded   = "removed-then-readded" // it disappeared and came back different
	ReasonDuplicate = "duplicate"            // the upstream lists two tools with this name
	ReasonBroken    = "unreadable"           // its definition cannot be encoded
)

// Held is a tool kept from the model until the user approves it.
type Held struct {
	Tool, Reason, OldHash, NewHash string
}

// Change is one held tool with its approved and pending definitions
// (indented JSON; Old is "" for an added tool), for `moat pins diff`.
// OldIdentity is the server identity (see [Identity]) the approved pin was
// bound to, when known, and NewIdentity the server's identity now: they
// differ when the server's command, arguments or URL changed.
type Change struct {
	Tool, Reason, Old, New   string
	OldIdentity, NewIdentity string
}

type pinEntry struct {
	Hash    string          `json:"hash"`
	Def     json.RawMessage `json:"def"`
	Removed bool            `json:"removed,omitempty"`
}

type pendingEntry struct {
	Hash   string          `json:"hash"`
	Def    json.RawMessage `json:"def"`
	Reason string          `json:"reason"`
}

type groupState struct {
	Identity string `json:"identity"`
	// PinnedIdentity is, while tools are held after the server's identity
	// changed, the identity their pins were approved under (for Diff).
	PinnedIdentity string                   `json:"pinned_identity,omitempty"`
	Pins           map[string]*pinEntry     `json:"pins"`
	Pending        map[string]*pendingEntry `json:"pending,omitempty"`
}

type state struct {
	Groups map[string]*groupState `json:"groups"`
}

type fileFormat struct {
	Version int             `json:"version"`
	Data    json.RawMessage `json:"data"`
	MAC     string          `json:"mac"`
}

const (
	fileVersion = 1
	macContext  = "moat-pins-v1\x00"
	// MinKeyLen is the shortest HMAC key Open accepts.
	MinKeyLen = 32
)

// ErrTampered is wrapped by Open's error when the store fails its
// integrity check.
var ErrTampered = errors.New("pin store failed its integrity check")

// ErrMissing is wrapped by the error of a store whose file is gone although
// its Anchor says it was created: removing the file must not turn every
// tool, a changed one included, into a first sight.
var ErrMissing = errors.New("pin store is missing")

// An Anchor remembers, outside the pin store's directory (Moat keeps it in
// the secret store), that the store was created, so that a deleted store is
// told from a first start.
type Anchor interface {
	Created() (bool, error)
	SetCreated() error
	Clear() error
}

// A Store holds the pins of every group. It is safe for concurrent use, and
// for use by several processes (the proxy and `moat pins approve`): every
// change re-reads the file under an exclusive lock before writing it.
type Store struct {
	path   string
	key    []byte
	anchor Anchor // nil: a missing file is a first start
	// anchored is true once the anchor is known to be set.
	anchored bool
	// broken is why the file last failed to read (tampered, missing,
	// unreadable): until it reads again, no tool is callable.
	broken error

	mu     sync.Mutex
	st     *state
	seen   fs.FileInfo                     // the file as last read or written
	modes  map[string]string               // group -> mode of its last Check
	hashes map[string]map[*mcp.Tool]string // group -> hashes of its last Check's tools
}

// Open opens (or, if absent, starts) the pin store at path, creating its
// directory 0700. key authenticates the file and must come from the secret
// store. A store that another user can read or write, that fails its
// integrity check, or whose file is gone although anchor says it was
// created (ErrMissing), is refused with an error that says how to recover;
// the same holds when the file changes or disappears while the store is in
// use. anchor may be nil: then a missing file is a first start.
func Open(path string, key []byte, anchor Anchor) (*Store, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("pin: the store key must be at least %d bytes", MinKeyLen)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pin: creating the pin store directory: %w", err)
	}
	if err := checkPrivate(dir); err != nil {
		return nil, err
	}
	s := &Store{path: path, key: slices.Clone(key), anchor: anchor, modes: map[string]string{}, hashes: map[string]map[*mcp.Tool]string{}}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reset deletes the pin store at path and clears its anchor (which may be
// nil): every group is pinned afresh (trust on first use) the next time
// Moat sees it. It is the way out of a store that failed its integrity
// check or went missing (`moat pins reset`).
func Reset(path string, anchor Anchor) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pin: removing the pin store: %w", err)
	}
	if anchor != nil {
		if err := anchor.Clear(); err != nil {
			return fmt.Errorf("pin: clearing the pin store's anchor: %w", err)
		}
	}
	return nil
}

// Reload re-reads the file if another process changed it (for example
// `moat pins approve`). Call it when the file changes; Check does it itself.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refresh()
}

func (s *Store) refresh() error {
	fi, err := os.Stat(s.path)
	if errors.Is(err, fs.ErrNotExist) && s.seen == nil && !s.anchored {
		return nil
	}
	if err == nil && s.broken == nil && s.seen != nil && os.SameFile(fi, s.seen) && fi.ModTime().Equal(s.seen.ModTime()) && fi.Size() == s.seen.Size() {
		return nil
	}
	s.broken = s.load()
	return s.broken
}

func (s *Store) load() error {
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		created := s.anchored
		if s.anchor != nil && !created {
			c, aerr := s.anchor.Created()
			if aerr != nil {
				return fmt.Errorf("pin: reading the pin store's anchor in the secret store: %w", aerr)
			}
			created = c
		}
		if created {
			return fmt.Errorf("pin: %s: %w although Moat created it: with it gone, a changed tool would pass as first seen, so Moat trusts no tool. "+
				"Restore the file from a backup, or, if you removed it on purpose, run `moat pins reset --yes` to pin every tool afresh", s.path, ErrMissing)
		}
		s.st, s.seen = &state{Groups: map[string]*groupState{}}, nil
		return nil
	}
	if err != nil {
		return fmt.Errorf("pin: opening the pin store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("pin: opening the pin store: %w", err)
	}
	if err := checkPrivateInfo(s.path, fi); err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return fmt.Errorf("pin: reading the pin store: %w", err)
	}
	st, err := s.verify(buf.Bytes())
	if err != nil {
		return fmt.Errorf("pin: %s: %w (the file was edited or corrupted, or its key in the secret store changed); Moat trusts none of its pins. Look at it, then run `moat pins reset` to delete it: every tool is pinned afresh on next sight", s.path, err)
	}
	s.st, s.seen = st, fi
	return s.anchorCreated()
}

// anchorCreated sets the anchor once the store's file exists (also for a
// store written before anchors existed).
func (s *Store) anchorCreated() error {
	if s.anchored || s.anchor == nil {
		return nil
	}
	if err := s.anchor.SetCreated(); err != nil {
		return fmt.Errorf("pin: recording in the secret store that the pin store exists: %w", err)
	}
	s.anchored = true
	return nil
}

func (s *Store) mac(data []byte) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(macContext))
	m.Write(data)
	return hex.EncodeToString(m.Sum(nil))
}

func (s *Store) verify(raw []byte) (*state, error) {
	var ff fileFormat
	if err := json.Unmarshal(raw, &ff); err != nil || ff.Version != fileVersion {
		return nil, ErrTampered
	}
	if !hmac.Equal([]byte(ff.MAC), []byte(s.mac(ff.Data))) {
		return nil, ErrTampered
	}
	dec := json.NewDecoder(bytes.NewReader(ff.Data))
	dec.DisallowUnknownFields()
	var st state
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTampered, err)
	}
	if st.Groups == nil {
		st.Groups = map[string]*groupState{}
	}
	for _, g := range st.Groups {
		if g == nil || g.Pins == nil {
			return nil, ErrTampered
		}
		if g.Pending == nil {
			g.Pending = map[string]*pendingEntry{}
		}
	}
	return &st, nil
}

// save writes the state atomically: a private temporary file, synced, then
// renamed over the old one, and the directory synced.
func (s *Store) save() error {
	data, err := json.Marshal(s.st)
	if err != nil {
		return err
	}
	out, err := json.Marshal(fileFormat{Version: fileVersion, Data: data, MAC: s.mac(data)})
	if err != nil {
		return err
	}
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, ".pins-*")
	if err != nil {
		return fmt.Errorf("pin: writing the pin store: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(out)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path)
	}
	if err != nil {
		return fmt.Errorf("pin: writing the pin store: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	if s.seen, err = os.Stat(s.path); err != nil {
		return err
	}
	return s.anchorCreated()
}

// mutate applies fn to the freshest state under the cross-process lock and
// saves it when fn reports a change. On any error the in-memory state is
// re-read, so a failed write never leaves unsaved approvals in effect.
func (s *Store) mutate(fn func(st *state) (bool, error)) error {
	unlock, err := lockFile(s.path + ".lock")
	if err != nil {
		return fmt.Errorf("pin: locking the pin store: %w", err)
	}
	defer unlock()
	if err := s.refresh(); err != nil {
		return err
	}
	changed, err := fn(s.st)
	if err == nil && changed {
		err = s.save()
	}
	if err != nil {
		if lerr := s.load(); lerr != nil {
			return errors.Join(err, lerr)
		}
	}
	return err
}

func newGroup(identity string) *groupState {
	return &groupState{Identity: identity, Pins: map[string]*pinEntry{}, Pending: map[string]*pendingEntry{}}
}
