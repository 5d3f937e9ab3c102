import { Hono, type Context } from "hono";
import { cancelServerImport, importProgress, latestServerImport } from "../imports/imports";
import { handleForm, submitForm } from "../http/forms";
import { presentServerImport } from "../http/present";
import { requireLogin, type SessionAppEnv } from "../http/session";
import type { AppEnv } from "../http/context";
import { noSuchServerPage } from "../pages/auth";
import { noticeFor } from "../pages/layout";
import { ServerImportPage } from "../pages/server-import";
import { matrixServerNameOf, ownedServer } from "../servers/servers";

type ImportPageContext = Context<SessionAppEnv>;

async function renderImport(c: ImportPageContext, error?: string) {
  const { ctx, user } = c.var;
  const server = await ownedServer(ctx.db, user.id, c.req.param("id")!);
  const row = await latestServerImport(ctx.db, server.id);
  let latest = null;
  if (row) {
    const { received, job } = await importProgress(ctx.db, row);
    latest = presentServerImport(row, received, job);
  }
  return (
    <ServerImportPage
      user={user}
      serverId={server.id}
      serverName={matrixServerNameOf(ctx.config, server)}
      waiting={server.status === "awaiting_delegation"}
      latest={latest}
      error={error}
      notice={noticeFor(c.req.query("notice"))}
    />
  );
}

// "Import a homeserver" (mounted under /servers), for its logged-in owner: the upload is the
// dashboard script's (through /api/servers/:id/import); its state and "cancel" work without it.
export const serverImportPageRoutes = new Hono<AppEnv>()
  .get("/:id/import", requireLogin, (c) => handleForm(c, async () => c.html(await renderImport(c)), noSuchServerPage(c.var.user)))
  .post("/:id/import/cancel", requireLogin, (c) =>
    submitForm(
      c,
      async () => {
        await cancelServerImport(c.var.ctx, c.var.user, c.req.param("id"));
        return c.redirect(`/servers/${c.req.param("id")}/import?notice=import_cancelled`, 303);
      },
      (error) => renderImport(c, error),
    ),
  );
