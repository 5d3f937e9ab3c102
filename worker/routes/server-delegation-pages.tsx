import { Hono, type Context } from "hono";
import { z } from "zod";
import { handleForm, submitForm } from "../http/forms";
import { requireLogin, type SessionAppEnv } from "../http/session";
import type { AppEnv } from "../http/context";
import { parseWith } from "../http/validation";
import { noSuchServerPage } from "../pages/auth";
import { DelegationPage } from "../pages/delegation";
import { noticeFor } from "../pages/layout";
import { checkDelegationNow, delegationStatus, publishDelegationLater } from "../servers/delegation";
import { ownedServer } from "../servers/servers";

type DelegationPageContext = Context<SessionAppEnv>;

async function renderDelegation(c: DelegationPageContext, error?: string) {
  const { ctx, user } = c.var;
  const server = await ownedServer(ctx.db, user.id, c.req.param("id")!);
  const view = { serverId: server.id, ...(await delegationStatus(ctx, server)), serverName: server.serverName ?? "" };
  return <DelegationPage user={user} view={view} error={error} notice={noticeFor(c.req.query("notice"))} />;
}

const confirmFields = z.object({ confirm: z.literal("yes", { error: "tick the box to confirm that federation and apps fail until you publish" }) });

// A homeserver's delegation page (mounted under /servers), for its logged-in owner: it works without JavaScript.
export const serverDelegationPageRoutes = new Hono<AppEnv>()
  .get("/:id/delegation", requireLogin, (c) => handleForm(c, async () => c.html(await renderDelegation(c)), noSuchServerPage(c.var.user)))
  .post("/:id/delegation/check", requireLogin, (c) =>
    handleForm(
      c,
      async () => {
        await checkDelegationNow(c.var.ctx, c.var.user, c.req.param("id"));
        return c.redirect(`/servers/${c.req.param("id")}/delegation?notice=delegation_check_started`, 303);
      },
      // Another customer's server: renderDelegation refuses it as it does the page (404).
      (error) => renderDelegation(c, error),
    ),
  )
  .post("/:id/delegation/publish-later", requireLogin, (c) =>
    submitForm(
      c,
      async (fields) => {
        parseWith(confirmFields, fields);
        await publishDelegationLater(c.var.ctx, c.var.user, c.req.param("id"));
        return c.redirect(`/servers/${c.req.param("id")}?notice=server_provisioning`, 303);
      },
      (error) => renderDelegation(c, error),
    ),
  );
