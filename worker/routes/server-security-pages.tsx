import { Hono, type Context } from "hono";
import { serverChecks } from "../checks/results";
import { checksUnderWay, runChecksNow } from "../checks/runs";
import { handleForm } from "../http/forms";
import { requireLogin, type SessionAppEnv } from "../http/session";
import type { AppEnv } from "../http/context";
import { noSuchServerPage } from "../pages/auth";
import { noticeFor } from "../pages/layout";
import { ServerSecurityPage } from "../pages/server-security";
import { matrixServerNameOf, ownedServer } from "../servers/servers";

type SecurityPageContext = Context<SessionAppEnv>;

async function renderSecurity(c: SecurityPageContext, error?: string) {
  const { ctx, user } = c.var;
  const server = await ownedServer(ctx.db, user.id, c.req.param("id")!);
  return (
    <ServerSecurityPage
      user={user}
      serverId={server.id}
      serverName={matrixServerNameOf(ctx.config, server)}
      running={server.status === "running"}
      checking={(await checksUnderWay(ctx, server.id)) !== undefined}
      checks={await serverChecks(ctx.db, server, ctx.now)}
      error={error}
      notice={noticeFor(c.req.query("notice"))}
    />
  );
}

// A homeserver's Security tab (mounted under /servers), for its logged-in owner: it works without JavaScript.
export const serverSecurityPageRoutes = new Hono<AppEnv>()
  .get("/:id/security", requireLogin, (c) => handleForm(c, async () => c.html(await renderSecurity(c)), noSuchServerPage(c.var.user)))
  // "Check now": back to the tab with a notice, or the tab again with why not (running already, too often, not running).
  .post("/:id/security/check", requireLogin, (c) =>
    handleForm(
      c,
      async () => {
        await runChecksNow(c.var.ctx, c.var.user, c.req.param("id"));
        return c.redirect(`/servers/${c.req.param("id")}/security?notice=checks_started`, 303);
      },
      // Another customer's server: renderSecurity refuses it as it does the page (404).
      (error) => renderSecurity(c, error),
    ),
  );
