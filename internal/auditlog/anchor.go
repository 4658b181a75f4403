package auditlog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moatmcp/moat/internal/secrets"
)

// The anchor is the log's last durable checkpoint, kept outside the log in
// the secret store (audit.Options.Anchor): a log replaced by an older copy,
// or cut back to an earlier checkpoint, verifies on its own, but ends before
// its anchor. One item per log path.

func anchorItem(path string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(path)))
	return "moat-audit-anchor-" + hex.EncodeToString(sum[:8])
}

// SaveAnchor returns the audit.Options.Anchor of the log at path: it
// stores each checkpoint's seq and hash in the secret store that store
// returns. A failure is logged: the log itself is unaffected, and verify
// then compares with an older anchor.
func SaveAnchor(store func(context.Context) (*secrets.Store, error), path string, log *slog.Logger) func(uint64, string) {
	return func(seq uint64, hash string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := store(ctx)
		if err == nil {
			err = s.Set(ctx, anchorItem(path), secrets.NewSecret(strconv.FormatUint(seq, 10)+" "+hash))
		}
		if err != nil && log != nil {
			log.Warn("could not keep the audit log's last checkpoint in the secret store; `moat audit verify` cannot detect a rollback past it", "seq", seq, "err", err)
		}
	}
}

// ReadAnchor returns the anchor of the log at path: the seq and hash of its
// last checkpoint known to have been on disk. ok is false when there is
// none (a log written before anchors existed, or never sealed).
func ReadAnchor(ctx context.Context, store *secrets.Store, path string) (seq uint64, hash string, ok bool, err error) {
	v, err := store.Get(ctx, anchorItem(path))
	if errors.Is(err, secrets.ErrNotFound) {
		return 0, "", false, nil
	}
	if err != nil {
		return 0, "", false, err
	}
	s, h, found := strings.Cut(v.Reveal(), " ")
	seq, perr := strconv.ParseUint(s, 10, 64)
	if !found || perr != nil || h == "" {
		return 0, "", false, fmt.Errorf("the audit log's anchor in the %s is damaged", store.Backend())
	}
	return seq, h, true, nil
}
