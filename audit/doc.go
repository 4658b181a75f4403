// Package audit writes and verifies Moat's tamper-evident audit log: one JSON
// object per line, each record chained to the one before it, with signed
// checkpoints so that an auditor holding only a public key can check the log
// on another machine.
//
// # Writing
//
// [Open] a [Writer] with the log's [Options] and its [Keys] (kept by the
// caller in the OS keychain, never next to the log), then [Writer.Write] one
// [Record] per event. Write returns only once the record is durable
// ([FsyncBatch] group commit by default: concurrent writers share one write
// and one fdatasync). If the log cannot be written, Write returns an error
// wrapping [ErrUnavailable]; a caller configured to fail closed
// ([FailDeny]) must then refuse the call. The loss is counted and recorded
// as an "audit_failure" record as soon as the log works again.
// [Writer.Close] seals the log with a final checkpoint.
//
// A caller may record calls write-ahead: an [EventIntent] record, durable,
// before the call leaves, then the call's outcome naming it in
// Detail[[DetailIntent]]; [Verify] lists intents that no outcome names in
// [Report.Incomplete] (calls cut off by a crash), which is not a problem.
//
// Several Writers, in one process or several, may append to one log: they
// take turns through an flock on "<path>.lock", and at its turn each takes
// in (and checks with its keys) what the others appended, so the log stays
// one chain.
//
// Every string of a record, and the keys and values of its maps, pass
// through Options.Redact before the record is encoded; argument values are
// dropped unless Options.RecordArgs is set ([ArgsShape] describes them
// without values).
//
// # Format
//
// A line is the canonical bytes of its record with a final "hash" member.
// The canonical bytes of a record are encoding/json's output for [Record]
// (its field order, empty fields omitted, no HTML escaping, no newline) with
// Hash empty. For a checkpoint, "sig" is the standard base64 Ed25519
// signature over "moat-audit-checkpoint-v1\n" followed by the canonical bytes
// with Sig and Hash empty. Then, for every record,
//
//	hash = hex(HMAC-SHA256(MAC key, prev || canonical bytes))
//
// where prev is the raw 32-byte hash of the previous record (32 zero bytes
// for seq 1), also written hex-encoded in the record's "prev" member. seq
// counts from 1 without gaps across rotated files.
//
// A record of a call made for a gateway identity has an "identity" member
// after "session": {"name": ..., "uid": ..., "gid": ..., "pid": ...}, where
// uid, gid and pid (the peer's, from SO_PEERCRED) are written only when
// known, so 0 is a real uid (root), never "unknown". Records without it
// are byte for byte what they were before it existed, so older logs
// verify unchanged; a verifier older than the member cannot read a record
// that has it (its bytes are not the canonical encoding it computes).
//
// A checkpoint ("event":"checkpoint") is itself a record of the chain. Its
// "count" is the number of records since the previous checkpoint (or since
// the start of the file or chain), and its "digest" the hex SHA-256 of those
// records' complete lines, newlines included. The Writer writes one every
// Options.CheckpointEvery records, before rotating, and on Close.
//
// A file made by rotation starts with a "continued" record whose prev is the
// hash of the previous file's final checkpoint. A torn last line left by a
// crash is moved to "<path>.torn-<time>" by the next Open and a "recovered"
// record notes it.
//
// # What verification proves
//
// With the public key only ([Verify] with a nil MAC key): every checkpoint
// was signed by the holder of the signing key, and the lines up to the last
// checkpoint are exactly, byte for byte and in order, the lines that holder
// sealed; seq numbers and prev links are continuous. So nothing sealed was
// edited, removed, inserted or reordered. An edit is located to the
// checkpoint segment (between two checkpoints), not to the line. Records
// after the last checkpoint are not protected at all: they are reported as
// unsealed.
//
// With the MAC key as well: additionally every record, including the
// unsealed ones, is proved to have been written by a holder of the MAC key
// and to link to its predecessor, so problems are located to the exact line
// and classified (edited, deleted, inserted, reordered).
//
// Neither proves anything against a holder of the keys: whoever can read
// them (root, or the user while the keychain is unlocked) can rewrite the
// whole log and re-sign it. Neither can tell a log cut right after a
// checkpoint from one that ended there, nor a cut after the last checkpoint
// from a crash or a writer still running ([ErrUnsealed]): the defence for
// both is shipping checkpoints off the host (syslog) as they are written.
// Retention removes the oldest rotated files; a log may therefore start with
// a "continued" record, whose predecessors cannot be checked.
package audit
