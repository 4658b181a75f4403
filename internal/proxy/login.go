package proxy

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/upstream"
)

// Login starts, or joins, the OAuth login of id's own copy of a per-user
// group (Options.Login): it returns the URL the person opens in a browser
// and a channel that yields the login's outcome once, or why no login can
// be offered to id.
type Login func(ctx context.Context, id *guard.Identity, group string) (url string, done <-chan error, err error)

// askLogin offers the person of this session a login to g, their own copy
// of a per-user server that is waiting for one, when the gateway can run
// it for them (Options.Login) and their client shows URLs (URL-mode
// elicitation): the call's answer is then a URLElicitationRequired error
// (-32042) with the URL, and once the login has stored its token the copy
// connects at once and the client is told (notifications/elicitation/
// complete), so it can call again. offered is that error; with none, why
// says why no login is offered, or is "" when none applies (the caller
// answers as before).
func (p *Server) askLogin(ctx context.Context, ss *mcp.ServerSession, g *upstream.Group) (why string, offered error) {
	if p.gw == nil || p.gw.login == nil || p.identity == nil || ss == nil {
		return "", nil
	}
	if st := g.Status(); st.State != upstream.Unavailable || !st.LoginRequired || p.ownerOf(g.Name()) == "" {
		return "", nil
	}
	ip := ss.InitializeParams()
	if ip == nil || ip.Capabilities == nil || ip.Capabilities.Elicitation == nil || ip.Capabilities.Elicitation.URL == nil {
		return "your client does not show login links (MCP URL elicitation)", nil
	}
	url, done, err := p.gw.login(ctx, p.identity, g.Name())
	if err != nil {
		return err.Error(), nil
	}
	id := "moat-login-" + rand.Text()[:16]
	stop := p.exch.stop
	go func() {
		select {
		case err := <-done:
			if err != nil {
				p.log.Info("a login through the client did not complete", "group", g.Name(), "err", err)
				return
			}
			g.RetryNow()
			if err := ss.NotifyElicitationComplete(stop, &mcp.ElicitationCompleteParams{ElicitationID: id}); err != nil {
				p.log.Debug("telling the client its login completed", "err", err)
			}
		case <-stop.Done():
		}
	}()
	return "", mcp.URLElicitationRequiredError([]*mcp.ElicitParams{{
		Mode:          "url",
		URL:           url,
		ElicitationID: id,
		Message:       fmt.Sprintf("Group %q needs you to log in to its server (as identity %q). Open the link in a browser on the gateway's machine; then call again.", g.Name(), p.identity.Name),
	}})
}
