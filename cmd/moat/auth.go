package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/oauth"
	"github.com/moatmcp/moat/internal/secrets"
)

const authUsage = `usage:
  moat auth login [flags] NAME     log in to server NAME in a browser and store its token
  moat auth logout [flags] NAME    remove the stored token of server NAME
  moat auth status [flags]         which servers have tokens, their expiry and where they are kept
flags:
  --config FILE                    the config file (default: $MOAT_CONFIG, else $DYNAMIC_MCP_CONFIG)
  --backend auto|keychain|file     where secrets live (default auto: the keychain if it answers)
  --dir DIR                        the encrypted file store's directory
  --identity ID                    (login, logout) the token of gateway identity ID for a per-user
                                   server ("per_user": true), apart from every other identity's
  --adopt-dynamic-mcp              (login) bind the token that ` + "`moat secret migrate`" + ` moved from
                                   dynamic-mcp to NAME's current url, instead of a browser login
The login URL is printed on stderr; a browser is opened when one is available.`

// authOpenBrowser opens the login URL; nil means the desktop's opener.
// Tests replace it.
var authOpenBrowser func(url string) error

// authCommand runs `moat auth ARGS...` (args excludes "auth") and returns
// the exit code: 0 ok, 1 runtime failure, 2 usage or config error. cfgPath
// finds the config file when --config is not given.
func authCommand(ctx context.Context, args []string, cfgPath func() (string, error), stdout, stderr io.Writer) int {
	usageErr := func(msg string, hints ...string) int { return usageFailure(stderr, authUsage, msg, hints...) }
	if len(args) == 0 {
		return usageErr("moat auth needs a subcommand: login, logout or status")
	}
	sub := args[0]
	if sub == "help" || sub == "-h" || sub == "--help" {
		fmt.Fprintln(stdout, authUsage)
		return exitOK
	}
	fs := flag.NewFlagSet("moat auth "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgFlag := fs.String("config", "", "")
	backend := fs.String("backend", secrets.BackendAuto, "")
	dir := fs.String("dir", "", "")
	adopt := fs.Bool("adopt-dynamic-mcp", false, "")
	identity := fs.String("identity", "", "")
	pos, err := parseInterspersed(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, authUsage)
		return exitOK
	}
	if err != nil {
		return usageErr(err.Error())
	}
	switch sub {
	case "login", "logout":
		if len(pos) != 1 {
			return usageErr("moat auth " + sub + " takes exactly one server NAME")
		}
	case "status":
		if len(pos) != 0 {
			return usageErr("moat auth status takes no arguments")
		}
	default:
		return usageErr(fmt.Sprintf("unknown subcommand %q", sub), "use login, logout or status")
	}
	if *adopt && sub != "login" {
		return usageErr("--adopt-dynamic-mcp goes with `moat auth login NAME`")
	}
	if *identity != "" && (sub == "status" || *adopt) {
		return usageErr("--identity goes with `moat auth login NAME` or `moat auth logout NAME`")
	}

	path := *cfgFlag
	if path == "" {
		p, err := cfgPath()
		if err != nil {
			printError(stderr, err)
			return exitUsage
		}
		path = p
	}
	opts := loadOptions(false)
	if *identity != "" {
		// The identity's server: its url and headers may hold its own
		// secrets.
		opts = identityLoadOptions(*identity)
	}
	cfg, err := config.Load(path, opts)
	if err != nil {
		printError(stderr, err)
		return exitUsage
	}
	_, require := peekSecrets(path)
	store, err := secrets.Open(ctx, &secrets.Options{Backend: *backend, Dir: *dir,
		Passphrase: passphrasePrompt(os.Stdin, stderr), NewPassphrase: newStorePrompt(os.Stdin, stderr), RequireEncryption: require})
	if err != nil {
		printError(stderr, err)
		return exitFailure
	}
	if why := store.Fallback(); why != nil {
		fmt.Fprintf(stderr, "moat: note: the keychain is not usable (%v); using the %s\n", why, store.Backend())
	}

	if sub == "status" {
		return authStatus(ctx, cfg, store, stdout, stderr)
	}
	name := pos[0]
	s, ok := cfg.Servers[name]
	if !ok {
		return usageErr(fmt.Sprintf("no server %q in %s", name, path), "the servers are: "+serverList(cfg))
	}
	if s.URL == "" {
		printError(stderr, fmt.Errorf("auth: server %q runs a command (stdio); only http and sse servers use OAuth", name))
		return exitUsage
	}
	if s.TokenExchange != nil && sub == "login" {
		printError(stderr, fmt.Errorf("auth: server %q gets each person's token by exchanging their OIDC sign-in token (token_exchange): there is nothing to log in to; `moat doctor` checks its authorization server", name))
		return exitUsage
	}
	if *identity != "" {
		if _, ok := cfg.Gateway.Identities[*identity]; !ok {
			return usageErr(fmt.Sprintf("no identity %q under gateway.identities in %s", *identity, path))
		}
		if !s.PerUser {
			return usageErr(fmt.Sprintf("server %q is shared by every identity; only a per-user server (\"per_user\": true) uses an identity's own token", name),
				"log in without --identity for the shared token, or set \"per_user\": true on the server")
		}
	}
	host := urlHost(s.URL)

	switch {
	case sub == "logout":
		err := oauth.Logout(ctx, oauth.Options{Store: store, Server: name, URL: s.URL, ClientID: s.OAuthClientID, Identity: *identity})
		if err != nil {
			printError(stderr, err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "removed the token of %q (%s) from the %s\n", name, host, store.Backend())
		commandEvent(ctx, stderr, "oauth_logout", name, map[string]string{"url": s.URL})
		return exitOK

	case *adopt:
		// dynamic-mcp bound its tokens to nothing: say where this one will go.
		fmt.Fprintf(stderr, "binding dynamic-mcp's token for %q to %s; Moat will send it to %s only\n", name, s.URL, host)
		if err := oauth.AdoptMigrated(ctx, store, name, s.URL, s.OAuthClientID); err != nil {
			printError(stderr, err)
			if errors.Is(err, secrets.ErrNotFound) {
				fmt.Fprintf(stderr, "moat: hint: run `moat secret migrate` first, or `moat auth login %s` without --adopt-dynamic-mcp\n", name)
			}
			return exitFailure
		}
		fmt.Fprintf(stdout, "the token of %q is now bound to %s\n", name, host)
		return exitOK
	}

	oc, err := netguard.NewOAuthClient(nil)
	if err != nil {
		printError(stderr, err)
		return exitFailure
	}
	mc, err := httpClientFor(s)
	if err != nil {
		printError(stderr, err)
		return exitUsage
	}
	logger, err := newLogger()
	if err != nil {
		printError(stderr, err)
		return exitUsage
	}
	err = oauth.Login(ctx, oauth.Options{
		Store: store, Server: name, URL: s.URL, ClientID: s.OAuthClientID, Scopes: s.OAuthScopes, Identity: *identity,
		HTTP: oc, MCPHTTP: mc, OpenBrowser: authOpenBrowser, Prompt: stderr, Logger: logger,
	})
	if err != nil {
		commandEvent(ctx, stderr, "oauth_login", name, map[string]string{"url": s.URL, "outcome": "error"})
		printError(stderr, err)
		return exitFailure
	}
	commandEvent(ctx, stderr, "oauth_login", name, map[string]string{"url": s.URL, "outcome": "ok"})
	return exitOK
}

func authStatus(ctx context.Context, cfg *config.Config, store *secrets.Store, stdout, stderr io.Writer) int {
	var servers []*config.Server
	for _, n := range sortedServerNames(cfg) {
		servers = append(servers, cfg.Servers[n])
	}
	st := oauth.Status(ctx, store, servers)
	if len(st) == 0 {
		fmt.Fprintln(stdout, "no http or sse servers in the config")
		return exitOK
	}
	sort.Slice(st, func(i, j int) bool { return st[i].Server < st[j].Server })
	code := exitOK
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tHOST\tTOKEN\tEXPIRES IN\tBACKEND")
	for _, s := range st {
		token, expires := "no", "-"
		switch {
		case s.Err != nil:
			token = "error"
			fmt.Fprintf(stderr, "moat: error: %v\n", s.Err)
			code = exitFailure
		case s.HasToken:
			token = "yes"
			expires = expiresIn(s.Expiry, s.Refreshable)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Server, urlHost(s.URL), token, expires, s.Backend)
	}
	tw.Flush()
	return code
}

// expiresIn says how long a token lasts, for people.
func expiresIn(exp time.Time, refreshable bool) string {
	suffix := ""
	if refreshable {
		suffix = " (refreshable)"
	}
	if exp.IsZero() {
		return "unknown" + suffix
	}
	d := time.Until(exp).Round(time.Minute)
	if d <= 0 {
		return "expired" + suffix
	}
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d.Hours()/24)) + suffix
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60) + suffix
	}
	return fmt.Sprintf("%dm", int(d.Minutes())) + suffix
}

func urlHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return raw
	}
	return u.Host
}

func serverList(cfg *config.Config) string {
	names := sortedServerNames(cfg)
	if len(names) == 0 {
		return "(none)"
	}
	out := ""
	for i, n := range names {
		if i > 0 {
			out += ", "
		}
		out += n
	}
	return out
}
