import { Hono, type Context } from "hono";
import { listServerExports, requestServerExport } from "../exports/exports";
import { handleForm, submitForm } from "../http/forms";
import { presentServerExport } from "../http/present";
import { requireLogin, type SessionAppEnv } from "../http/session";
import type { AppEnv } from "../http/context";
import { noSuchServerPage } from "../pages/auth";
import { noticeFor } from "../pages/layout";
import { ServerExportPage } from "../pages/server-export";
import { matrixServerNameOf, ownedServer } from "../servers/servers";

type ExportPageContext = Context<SessionAppEnv>;

async function renderExports(c: ExportPageContext, error?: string) {
  const { ctx, user } = c.var;
  const server = await ownedServer(ctx.db, user.id, c.req.param("id")!);
  const rows = await listServerExports(ctx.db, user.id, server.id);
  return (
    <ServerExportPage
      user={user}
      serverId={server.id}
      serverName={matrixServerNameOf(ctx.config, server)}
      exports={rows.map(({ row, job }) => presentServerExport(row, job, ctx.now))}
      error={error}
      notice={noticeFor(c.req.query("notice"))}
    />
  );
}

// "Download your homeserver" (mounted under /servers), for its logged-in owner: it works without JavaScript.
export const serverExportPageRoutes = new Hono<AppEnv>()
  .get("/:id/export", requireLogin, (c) => handleForm(c, async () => c.html(await renderExports(c)), noSuchServerPage(c.var.user)))
  // The passphrase is never put back into the form: a refusal shows the page again with an empty field.
  .post("/:id/export", requireLogin, (c) =>
    submitForm(
      c,
      async (fields) => {
        await requestServerExport(c.var.ctx, c.var.user, c.req.param("id"), fields.passphrase ?? "");
        return c.redirect(`/servers/${c.req.param("id")}/export?notice=export_started`, 303);
      },
      (error) => renderExports(c, error),
    ),
  );
