import { Hono } from "hono";
import { z } from "zod";
import { listBackups, requestBackup } from "../backups/backups";
import { newestSucceededBackupId } from "../backups/maintenance";
import { requestRestore } from "../backups/restore";
import { billingSummary } from "../billing/billing";
import { planById } from "../billing/plans";
import type { User } from "../db/schema";
import { badRequest } from "../errors";
import { REGIONS } from "../fleet/enrollment";
import { USAGE_RANGES, workloadUsageSeries } from "../fleet/usage";
import type { AppEnv } from "../http/context";
import { linkBuilder } from "../http/domain-context";
import { handleForm, submitForm, type FormFields, type PageContext } from "../http/forms";
import { presentBackup, presentServer } from "../http/present";
import { parseWith } from "../http/validation";
import { passwordSchema } from "../auth/credentials";
import { MessagePage } from "../pages/auth";
import { DASHBOARD_SCRIPT } from "../pages/dashboard-script";
import { noticeFor, type NoticeKey } from "../pages/layout";
import { AdminPasswordPage, ServerPage, ServersPage } from "../pages/servers";
import { createAdminPasswordLink, setAdminPassword } from "../servers/admin-password";
import { deleteOwnedServer } from "../servers/deletion";
import { serverNameSchema } from "../servers/names";
import { placementCandidates, roomInRegion } from "../servers/placement";
import { changeServerState, createServer, latestLifecycleJob, listServers, ownedServer, serverNameOf, type ServerContext } from "../servers/servers";

// The customer's homeservers as pages. Every form runs the same service as the JSON API and
// then redirects, or re-renders its page with the reason; the script only adds to that.

/** The periods the charts offer (the API also has a year, too coarse for these). */
const CHART_RANGES = ["24h", "7d", "30d"] as const;

const serverContext = (c: PageContext): ServerContext => ({ db: c.var.db, env: c.env, now: c.var.now });
const userOf = (c: PageContext) => c.var.auth!.user;
const toServer = (c: PageContext, notice: NoticeKey) => c.redirect(`/servers/${c.req.param("id")}?notice=${notice}`, 303);

async function renderServers(c: PageContext, user: User, form: { error?: string; name?: string | undefined; region?: string | undefined } = {}) {
  const { plan } = await billingSummary(c.var.db, user.id);
  const mine = await listServers(c.var.db, user.id);
  // With a plan, "room" means room for that plan, exactly as creating would decide.
  const regions = await Promise.all(
    REGIONS.map(async (region) => ({
      region,
      hasRoom: (plan ? await placementCandidates(c.var.db, c.env, region, plan) : await roomInRegion(c.var.db, c.env, region)).length > 0,
    })),
  );
  return (
    <ServersPage
      user={user}
      plan={plan}
      regions={regions}
      exampleServerName={serverNameOf(c.env, "our-team")}
      servers={await Promise.all(mine.map(async (server) => presentServer(c.env, server, await latestLifecycleJob(c.var.db, server))))}
      {...form}
    />
  );
}

async function renderServer(c: PageContext, extra: { error?: string; adminLink?: { url: string; expiresAt: string } } = {}) {
  const user = userOf(c);
  const server = await ownedServer(c.var.db, user.id, c.req.param("id")!);
  const range = CHART_RANGES.find((r) => r === c.req.query("range")) ?? "24h";
  const newest = await newestSucceededBackupId(c.var.db, server.id);
  const series = await workloadUsageSeries(c.var.db, [server.id], range, c.var.now);
  return (
    <ServerPage
      user={user}
      server={presentServer(c.env, server, await latestLifecycleJob(c.var.db, server))}
      plan={planById(server.planId)}
      backups={(await listBackups(c.var.db, server.id)).map((backup) => presentBackup(backup, newest, c.var.now))}
      usage={{
        range,
        ranges: [...CHART_RANGES],
        from: new Date(c.var.now.getTime() - USAGE_RANGES[range]),
        to: c.var.now,
        points: series.rows,
      }}
      notice={noticeFor(c.req.query("notice"))}
      {...extra}
    />
  );
}

/** A form on a server's page that sends no fields (its body is not read): run it, or show the page again with the reason. */
function serverForm(c: PageContext, action: () => Promise<Response>) {
  return handleForm(c, action, (error) => renderServer(c, { error }));
}

/** A server page's form that sends fields. */
function serverFormWithFields(c: PageContext, action: (fields: FormFields) => Promise<Response>) {
  return submitForm(c, action, (error) => renderServer(c, { error }));
}

const createFields = z.object({ name: serverNameSchema, region: z.enum(REGIONS, { error: "choose one of the regions" }) });

export const dashboardPageRoutes = new Hono<AppEnv>()
  .get("/assets/dashboard.js", (c) => {
    c.header("Cache-Control", "public, max-age=3600");
    return c.body(DASHBOARD_SCRIPT, 200, { "Content-Type": "text/javascript; charset=utf-8" });
  })
  // "/servers/*" covers "/servers" itself too.
  .use("/servers/*", async (c, next) => {
    if (!c.var.auth) return c.redirect("/login", 303);
    await next();
  })
  .get("/servers", async (c) => c.html(await renderServers(c, userOf(c))))
  .post("/servers", async (c) => {
    const user = userOf(c);
    return submitForm(
      c,
      async (fields) => {
        const { name, region } = parseWith(createFields, fields);
        const server = await createServer(serverContext(c), user, name, region);
        return c.redirect(`/servers/${server.id}`, 303);
      },
      (error, fields) => renderServers(c, user, { error, name: fields.name, region: fields.region }),
    );
  })
  .get("/servers/:id", (c) =>
    handleForm(
      c,
      async () => c.html(await renderServer(c)),
      (error) => <MessagePage title="No such server" message={error} viewer={userOf(c)} status="error" next={{ href: "/servers", label: "Your homeservers" }} />,
    ),
  )
  .post("/servers/:id/stop", (c) =>
    serverForm(c, async () => {
      await changeServerState(serverContext(c), userOf(c), c.req.param("id"), "stop");
      return toServer(c, "server_stopping");
    }),
  )
  .post("/servers/:id/start", (c) =>
    serverForm(c, async () => {
      await changeServerState(serverContext(c), userOf(c), c.req.param("id"), "start");
      return toServer(c, "server_starting");
    }),
  )
  .post("/servers/:id/delete", (c) =>
    serverFormWithFields(c, async (fields) => {
      const server = await ownedServer(c.var.db, userOf(c).id, c.req.param("id"));
      if (fields.confirmName !== server.name) throw badRequest("validation_failed", `Type the server's name, ${server.name}, to delete it.`);
      await deleteOwnedServer(serverContext(c), userOf(c), server.id);
      return toServer(c, "server_deleting");
    }),
  )
  .post("/servers/:id/backups", (c) =>
    serverForm(c, async () => {
      await requestBackup(serverContext(c), userOf(c), c.req.param("id"));
      return toServer(c, "backup_started");
    }),
  )
  .post("/servers/:id/restore", (c) =>
    serverFormWithFields(c, async (fields) => {
      const { backupId } = parseWith(
        z.object({ backupId: z.string().min(1).max(128), confirm: z.literal("yes", { error: "tick the box to confirm the data will be replaced" }) }),
        fields,
      );
      await requestRestore(serverContext(c), userOf(c), c.req.param("id"), backupId);
      return toServer(c, "restore_started");
    }),
  )
  // The link is shown once, in this response only: never in a URL we redirect to, nor in history.
  .post("/servers/:id/admin-password-link", (c) =>
    serverForm(c, async () => {
      const link = await createAdminPasswordLink(serverContext(c), userOf(c), c.req.param("id"), linkBuilder(c));
      return c.html(await renderServer(c, { adminLink: { url: link.url, expiresAt: link.expiresAt.toISOString() } }));
    }),
  )
  .get("/servers/:id/admin-password", async (c) => {
    const server = await ownedServer(c.var.db, userOf(c).id, c.req.param("id"));
    return c.html(<AdminPasswordPage user={userOf(c)} server={presentServer(c.env, server, undefined)} token={c.req.query("token") ?? ""} />);
  })
  .post("/servers/:id/admin-password", async (c) => {
    const user = userOf(c);
    const server = await ownedServer(c.var.db, user.id, c.req.param("id"));
    return submitForm(
      c,
      async (fields) => {
        const { token, password } = parseWith(z.object({ token: z.string().min(1).max(256), password: passwordSchema }), fields);
        await setAdminPassword(serverContext(c), user, server.id, token, password);
        return toServer(c, "admin_password_set");
      },
      (error, fields) => <AdminPasswordPage user={user} server={presentServer(c.env, server, undefined)} token={fields.token ?? ""} error={error} />,
    );
  });
