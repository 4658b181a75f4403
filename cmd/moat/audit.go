package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/moatmcp/moat/audit"
)

const auditUsage = `usage:
  moat audit verify [--pubkey FILE | --key-from-store] [--allow-unsealed] [FILE...]
        check the hash chain and signed checkpoints (default: the configured log and its rotated files)
        --pubkey FILE       verify with only the public key in FILE (what an auditor has; see pubkey)
        --key-from-store    verify with the keys in the secret store (the default): also locates every change
        --allow-unsealed    exit 0 when records after the last checkpoint are unsealed (a running or killed moat)
  moat audit export --format ocsf|cef [--pubkey FILE] [FILE...]
        verify the log (unsealed records allowed), then write each record to stdout as one line:
        ocsf: an OCSF 1.5.0 event (calls as API Activity, class_uid 6003; the rest as Base Event)
        cef:  an ArcSight Common Event Format line
  moat audit tail [-f] [FILE]   pretty-print the log; -f keeps following it
  moat audit pubkey             print the checkpoint public key for auditors
exit status: 0 ok, 1 verification failed or runtime failure, 2 usage`

// auditLogPath returns the audit log's path when no FILE is given (see
// configuredAuditPath). A test may replace it.
var auditLogPath = configuredAuditPath

// auditSecrets is what `moat audit` needs from the secret store: the log's
// keys, and the anchor of its last durable checkpoint.
type auditSecrets interface {
	Keys(ctx context.Context) (audit.Keys, error)
	Anchor(ctx context.Context, path string) (seq uint64, hash string, ok bool, err error)
}

// auditCommand runs `moat audit ARGS...` (args excludes "audit"). keys reads
// the log's keys from the secret store; it is called only when needed.
func auditCommand(ctx context.Context, args []string, store auditSecrets, stdout, stderr io.Writer) int {
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "moat: error: "+format+"\n", a...)
		fmt.Fprintln(stderr, auditUsage)
		return exitUsage
	}
	fail := func(err error, hints ...string) int {
		fmt.Fprintf(stderr, "moat: error: %v\n", err)
		for _, h := range hints {
			fmt.Fprintf(stderr, "moat: hint: %s\n", h)
		}
		return exitFailure
	}
	if len(args) == 0 {
		return usageErr("moat audit needs a subcommand: verify, export, tail or pubkey")
	}
	sub := args[0]
	fs := flag.NewFlagSet("moat audit "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var pubFile, format string
	var fromStore, allowUnsealed, follow bool
	switch sub {
	case "verify":
		fs.StringVar(&pubFile, "pubkey", "", "")
		fs.BoolVar(&fromStore, "key-from-store", false, "")
		fs.BoolVar(&allowUnsealed, "allow-unsealed", false, "")
	case "export":
		fs.StringVar(&pubFile, "pubkey", "", "")
		fs.StringVar(&format, "format", "", "")
		allowUnsealed = true // a live log is unsealed; tampering still fails
	case "tail":
		fs.BoolVar(&follow, "f", false, "")
	case "pubkey":
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, auditUsage)
		return exitOK
	default:
		return usageErr("unknown audit subcommand %q (want verify, export, tail or pubkey)", sub)
	}
	// Flags may come before or after the FILEs.
	pos, err := parseInterspersed(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, auditUsage)
		return exitOK
	}
	if err != nil {
		return usageErr("%v", err)
	}

	switch sub {
	case "pubkey":
		if len(pos) != 0 {
			return usageErr("moat audit pubkey takes no arguments")
		}
		k, err := store.Keys(ctx)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, audit.FormatPublicKey(k.Signer.Public().(ed25519.PublicKey)))
		return exitOK

	case "tail":
		if len(pos) > 1 {
			return usageErr("moat audit tail takes at most one FILE")
		}
		var path string
		if len(pos) == 1 {
			path = pos[0]
		} else {
			p, err := auditLogPath()
			if err != nil {
				return fail(err)
			}
			path = p
		}
		f, err := os.Open(path)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		if err := audit.Tail(ctx, stdout, f, follow); err != nil {
			return fail(err)
		}
		return exitOK
	}

	// verify, and export after verifying
	if sub == "export" && format != audit.FormatOCSF && format != audit.FormatCEF {
		return usageErr("moat audit export needs --format ocsf or --format cef")
	}
	if pubFile != "" && fromStore {
		return usageErr("--pubkey and --key-from-store exclude each other")
	}
	files := pos
	anchored := "" // the configured log, whose anchor is in the secret store
	if len(files) == 0 {
		p, err := auditLogPath()
		if err != nil {
			return fail(err)
		}
		anchored = p
		if files, err = audit.LogFiles(p); err != nil {
			return fail(err)
		}
		if len(files) == 0 {
			return fail(fmt.Errorf("no audit log at %s", p), "pass the log FILE(s) to verify, oldest first")
		}
	}
	var mac []byte
	var pub ed25519.PublicKey
	if pubFile != "" {
		b, err := os.ReadFile(pubFile)
		if err != nil {
			return fail(err)
		}
		if pub, err = audit.ParsePublicKey(string(b)); err != nil {
			return fail(err, "the file must hold the line printed by `moat audit pubkey`")
		}
	} else {
		k, err := store.Keys(ctx)
		if err != nil {
			return fail(err, "an auditor without the keychain can use --pubkey FILE with the output of `moat audit pubkey`")
		}
		mac, pub = k.MAC, k.Signer.Public().(ed25519.PublicKey)
	}
	rep, err := audit.VerifyFiles(files, mac, pub)
	var prob *audit.Problem
	switch {
	case err == nil:
	case errors.As(err, &prob) && errors.Is(err, audit.ErrUnsealed) && allowUnsealed:
		if sub == "verify" {
			fmt.Fprintf(stderr, "moat: warning: %v\n", err)
		}
	case errors.As(err, &prob) && errors.Is(err, audit.ErrUnsealed):
		return fail(err, "if moat is still running or was killed, this is expected: use --allow-unsealed, or verify again after moat exits")
	case errors.Is(err, audit.ErrWrongKey) && pubFile != "":
		return fail(err, "either "+pubFile+" is not the key the log was signed with, or every checkpoint in it was forged: get the line `moat audit pubkey` prints on the machine (and as the user) that wrote the log, and verify again; if this is that key, the log was replaced")
	case errors.Is(err, audit.ErrWrongKey):
		return fail(err, "most likely the keys in this shell's secret store are not the ones that wrote the log: verify where the writing moat runs (same user, HOME, XDG_DATA_HOME and MOAT_PASSPHRASE), or here with --pubkey FILE holding the line `moat audit pubkey` prints there; if the keys are the same, the log was replaced")
	case errors.As(err, &prob):
		return fail(err, "the log was changed after it was written; keep these files as evidence")
	default:
		return fail(err)
	}
	// A log replaced by an older copy, or cut back to a checkpoint, verifies
	// on its own; its anchor, kept in the secret store, says where it ended.
	if anchored != "" && mac != nil {
		seq, hash, ok, err := store.Anchor(ctx, anchored)
		if err != nil {
			return fail(fmt.Errorf("reading the audit log's anchor: %w", err))
		}
		if ok {
			got, found := rep.CheckpointHash(seq)
			switch {
			case rep.SealedSeq < seq:
				return fail(fmt.Errorf("audit log rolled back: it ends at checkpoint seq %d, but checkpoint seq %d was written to it (the secret store keeps the last one): records were removed from its end, or it was replaced by an older copy", rep.SealedSeq, seq),
					"keep these files as evidence; the missing records may be in a backup or in a rotated file moved away")
			case found && got != hash:
				return fail(fmt.Errorf("audit log replaced: its checkpoint seq %d is not the one written to it (the secret store keeps its hash)", seq),
					"keep these files as evidence")
			}
		}
	}
	if sub == "export" {
		if err := exportLog(stdout, files, format); err != nil {
			return fail(err)
		}
		if len(rep.Incomplete) > 0 {
			fmt.Fprintf(stderr, "moat: %d call(s) in the export have an intent and no outcome (see moat audit verify)\n", len(rep.Incomplete))
		}
		return exitOK
	}
	how := "the MAC key and the public key: every record is authenticated"
	if mac == nil {
		how = "the public key only: records after the last checkpoint are not protected"
	}
	fmt.Fprintf(stdout, "audit log OK: %d records (seq %d..%d) in %d file(s), %d signed checkpoints, sealed through seq %d; verified with %s\n",
		rep.Records, rep.FirstSeq, rep.LastSeq, len(files), rep.Checkpoints, rep.SealedSeq, how)
	printIncomplete(stdout, rep.Incomplete)
	return exitOK
}

// exportLog writes every record of files (verified, oldest first) to w in
// format, one per line.
func exportLog(w io.Writer, files []string, format string) error {
	bw := bufio.NewWriter(w)
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			var r audit.Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				f.Close()
				return fmt.Errorf("%s: %w", path, err)
			}
			var line []byte
			if format == audit.FormatOCSF {
				line, err = audit.OCSF(&r, version)
			} else {
				var s string
				s, err = audit.CEF(&r, version)
				line = []byte(s)
			}
			if err != nil {
				f.Close()
				return err
			}
			bw.Write(line)
			bw.WriteByte('\n')
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return bw.Flush()
}

// printIncomplete lists the calls that left for their upstream with no
// outcome recorded: not tampering, but what an auditor must follow up.
func printIncomplete(w io.Writer, calls []audit.Incomplete) {
	if len(calls) == 0 {
		return
	}
	fmt.Fprintf(w, "%d call(s) were sent to their upstream with no outcome recorded: the moat that sent them stopped (crash, kill -9, power cut) before their result came back; what they did upstream is unknown:\n", len(calls))
	const shown = 20
	for i, c := range calls {
		if i == shown {
			fmt.Fprintf(w, "  ... and %d more\n", len(calls)-shown)
			break
		}
		fmt.Fprintf(w, "  seq %d  %s  %s/%s  pid %d", c.Seq, c.Time, c.Group, c.Tool, c.PID)
		if c.Session != "" {
			fmt.Fprintf(w, "  session %s", c.Session)
		}
		fmt.Fprintln(w)
	}
}
