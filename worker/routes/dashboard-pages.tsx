import { Hono, type Context } from "hono";
import { z } from "zod";
import { listBackups, requestBackup } from "../backups/backups";
import { newestSucceededBackupId } from "../backups/maintenance";
import { requestRestore } from "../backups/restore";
import { billingSummary } from "../billing/billing";
import type { WorkerConfig } from "../config";
import { planById } from "../billing/plans";
import { badRequest } from "../errors";
import { REGIONS } from "../fleet/enrollment";
import { USAGE_RANGES, workloadUsageSeries } from "../fleet/usage";
import type { AppEnv } from "../http/context";
import { handleForm, submitForm, type FormFields } from "../http/forms";
import { requireLogin, type SessionAppEnv } from "../http/session";
import { presentBackup, presentServer, presentUpkeep } from "../http/present";
import { parseWith } from "../http/validation";
import { passwordSchema } from "../auth/credentials";
import { MessagePage, noSuchServerPage } from "../pages/auth";
import { DASHBOARD_SCRIPT } from "../pages/dashboard-script";
import { noticeFor, type NoticeKey } from "../pages/layout";
import { AdminPasswordPage, elementLink, ServerPage, ServersPage, UserPasswordPage } from "../pages/servers";
import { createAdminPasswordLink, setAdminPassword } from "../servers/admin-password";
import { deleteOwnedServer } from "../servers/deletion";
import { customServerNameSchema, serverNameSchema } from "../servers/names";
import { placementCandidates, roomInRegion } from "../servers/placement";
import { changeServerState, createServer, latestLifecycleJob, listServers, ownedServer, servedHostOf } from "../servers/servers";
import { lastUpkeep, remoteMediaRetentionDays } from "../servers/upkeep";
import { movesForCustomer } from "../servers/migration";
import { serverDnsStatus } from "../dns/records";
import { latestQuota } from "../servers/storage-alerts";
import { describePasswordLink, setPasswordWithLink } from "../servers/users";

// The customer's homeservers as pages. Every form runs the same service as the JSON API and
// then redirects, or re-renders its page with the reason; the script only adds to that.

/** The periods the charts offer (the API also has a year, too coarse for these). */
const CHART_RANGES = ["24h", "7d", "30d"] as const;

/** A page behind requireLogin: its handlers know whose it is. */
type ServerPageContext = Context<SessionAppEnv>;

const toServer = (c: ServerPageContext, notice: NoticeKey) => c.redirect(`/servers/${c.req.param("id")}?notice=${notice}`, 303);

async function renderServers(
  c: ServerPageContext,
  form: { error?: string; name?: string | undefined; region?: string | undefined; serverName?: string | undefined; publishDelegationLater?: boolean } = {},
) {
  const { ctx, user } = c.var;
  // Independent reads, sent together: the page waits on one round trip of D1, not one after another.
  const [{ plan }, mine] = await Promise.all([billingSummary(ctx.db, user.id), listServers(ctx.db, user.id)]);
  // With a plan, "room" means room for that plan, exactly as creating would decide.
  const regions = await Promise.all(
    REGIONS.map(async (region) => ({
      region,
      hasRoom: (plan ? await placementCandidates(ctx, region, plan) : await roomInRegion(ctx, region)).length > 0,
    })),
  );
  return (
    <ServersPage
      user={user}
      plan={plan}
      regions={regions}
      exampleServerName={servedHostOf(ctx.config, "our-team")}
      servers={await Promise.all(mine.map(async (server) => presentServer(ctx.config, server, await latestLifecycleJob(ctx.db, server))))}
      {...form}
    />
  );
}

async function renderServer(c: ServerPageContext, extra: { error?: string; adminLink?: { url: string; expiresAt: string } } = {}) {
  const { ctx, user } = c.var;
  const server = await ownedServer(ctx.db, user.id, c.req.param("id")!);
  const range = CHART_RANGES.find((r) => r === c.req.query("range")) ?? "24h";
  // Independent reads, sent together: the page waits on one round trip of D1, not eight one after another.
  const [newest, series, upkeep, quota, lifecycleJob, backups, moves, dns] = await Promise.all([
    newestSucceededBackupId(ctx.db, server.id),
    workloadUsageSeries(ctx.db, [server.id], range, ctx.now),
    lastUpkeep(ctx.db, server.id),
    latestQuota(ctx.db, server.id, ctx.now),
    latestLifecycleJob(ctx.db, server),
    listBackups(ctx.db, server.id),
    movesForCustomer(ctx.db, server),
    serverDnsStatus(ctx, server.id),
  ]);
  return (
    <ServerPage
      user={user}
      server={presentServer(ctx.config, server, lifecycleJob)}
      plan={planById(server.planId)}
      backups={backups.map((backup) => presentBackup(backup, newest, ctx.now))}
      upkeep={upkeep ? presentUpkeep(upkeep) : null}
      remoteMediaRetentionDays={remoteMediaRetentionDays(server)}
      moves={moves}
      usage={{
        range,
        ranges: [...CHART_RANGES],
        from: new Date(ctx.now.getTime() - USAGE_RANGES[range]),
        to: ctx.now,
        points: series.rows,
      }}
      quota={quota}
      dns={dns}
      notice={noticeFor(c.req.query("notice"))}
      {...extra}
    />
  );
}

/** A form on a server's page that sends no fields (its body is not read): run it, or show the page again with the reason. */
function serverForm(c: ServerPageContext, action: () => Promise<Response>) {
  return handleForm(c, action, (error) => renderServer(c, { error }));
}

/** A server page's form that sends fields. */
function serverFormWithFields(c: ServerPageContext, action: (fields: FormFields) => Promise<Response>) {
  return submitForm(c, action, (error) => renderServer(c, { error }));
}

const createFields = (config: WorkerConfig) =>
  z.object({
    name: serverNameSchema,
    region: z.enum(REGIONS, { error: "choose one of the regions" }),
    // An empty field: no domain of their own.
    serverName: z.preprocess(
      (value) => (value === "" ? undefined : value),
      customServerNameSchema({ homeserverDomain: config.homeservers.domain, production: config.environment === "production" }).optional(),
    ),
    publishDelegationLater: z.literal("yes").optional(),
  });

// The customer's homeservers (mounted under /servers), for their logged-in owner.
const serverPageRoutes = new Hono<AppEnv>()
  .use(requireLogin)
  .get("/", async (c) => c.html(await renderServers(c)))
  .post("/", async (c) =>
    submitForm(
      c,
      async (fields) => {
        const { name, region, serverName, publishDelegationLater } = parseWith(createFields(c.var.ctx.config), fields);
        const custom = serverName ? { serverName, publishLater: publishDelegationLater === "yes" } : null;
        const server = await createServer(c.var.ctx, c.var.user, name, region, custom);
        // Waiting for its domain: the page that says what to publish there.
        return c.redirect(server.status === "awaiting_delegation" ? `/servers/${server.id}/delegation` : `/servers/${server.id}`, 303);
      },
      (error, fields) =>
        renderServers(c, {
          error,
          name: fields.name,
          region: fields.region,
          serverName: fields.serverName,
          publishDelegationLater: fields.publishDelegationLater === "yes",
        }),
    ),
  )
  .get("/:id", (c) => handleForm(c, async () => c.html(await renderServer(c)), noSuchServerPage(c.var.user)))
  .post("/:id/stop", (c) =>
    serverForm(c, async () => {
      await changeServerState(c.var.ctx, c.var.user, c.req.param("id"), "stop");
      return toServer(c, "server_stopping");
    }),
  )
  .post("/:id/start", (c) =>
    serverForm(c, async () => {
      await changeServerState(c.var.ctx, c.var.user, c.req.param("id"), "start");
      return toServer(c, "server_starting");
    }),
  )
  .post("/:id/delete", (c) =>
    serverFormWithFields(c, async (fields) => {
      const { ctx, user } = c.var;
      const server = await ownedServer(ctx.db, user.id, c.req.param("id"));
      if (fields.confirmName !== server.name) throw badRequest("validation_failed", `Type the server's name, ${server.name}, to delete it.`);
      await deleteOwnedServer(ctx, user, server.id);
      return toServer(c, "server_deleting");
    }),
  )
  .post("/:id/backups", (c) =>
    serverForm(c, async () => {
      await requestBackup(c.var.ctx, c.var.user, c.req.param("id"));
      return toServer(c, "backup_started");
    }),
  )
  .post("/:id/restore", (c) =>
    serverFormWithFields(c, async (fields) => {
      const { backupId } = parseWith(
        z.object({ backupId: z.string().min(1).max(128), confirm: z.literal("yes", { error: "tick the box to confirm the data will be replaced" }) }),
        fields,
      );
      await requestRestore(c.var.ctx, c.var.user, c.req.param("id"), backupId);
      return toServer(c, "restore_started");
    }),
  )
  // The link is shown once, in this response only: never in a URL we redirect to, nor in history.
  .post("/:id/admin-password-link", (c) =>
    serverForm(c, async () => {
      const link = await createAdminPasswordLink(c.var.ctx, c.var.user, c.req.param("id"));
      return c.html(await renderServer(c, { adminLink: { url: link.url, expiresAt: link.expiresAt.toISOString() } }));
    }),
  )
  .get("/:id/admin-password", async (c) => {
    const { ctx, user } = c.var;
    const server = await ownedServer(ctx.db, user.id, c.req.param("id"));
    return c.html(<AdminPasswordPage user={user} server={presentServer(ctx.config, server, undefined)} token={c.req.query("token") ?? ""} />);
  })
  .post("/:id/admin-password", async (c) => {
    const { ctx, user } = c.var;
    const server = await ownedServer(ctx.db, user.id, c.req.param("id"));
    return submitForm(
      c,
      async (fields) => {
        const { token, password } = parseWith(z.object({ token: z.string().min(1).max(256), password: passwordSchema }), fields);
        await setAdminPassword(ctx, user, server.id, token, password);
        return toServer(c, "admin_password_set");
      },
      (error, fields) => <AdminPasswordPage user={user} server={presentServer(ctx.config, server, undefined)} token={fields.token ?? ""} error={error} />,
    );
  });

const linkFields = z.object({ token: z.string().min(1).max(256), password: passwordSchema });

// The page a homeserver user's one-time link opens (mounted under /homeservers): the link is the
// credential, so it needs no session (the person is the homeserver's user, not our customer).
const passwordLinkPageRoutes = new Hono<AppEnv>()
  .get("/:id/set-password", (c) => {
    const viewer = c.var.auth?.user ?? null;
    const token = c.req.query("token") ?? "";
    return handleForm(
      c,
      async () => {
        const link = await describePasswordLink(c.var.ctx, c.req.param("id"), token);
        return c.html(<UserPasswordPage viewer={viewer} serverId={c.req.param("id")} token={token} link={link} />);
      },
      (error) => <MessagePage title="This link does not work" message={error} viewer={viewer} status="error" next={{ href: "/", label: "Berth" }} />,
    );
  })
  .post("/:id/set-password", (c) => {
    const viewer = c.var.auth?.user ?? null;
    const serverId = c.req.param("id");
    const refused = (error: string) => (
      <MessagePage title="This link does not work" message={error} viewer={viewer} status="error" next={{ href: "/", label: "Berth" }} />
    );
    return submitForm(
      c,
      (fields) =>
        handleForm(
          c,
          async () => {
            const link = await describePasswordLink(c.var.ctx, serverId, fields.token ?? "");
            return handleForm(
              c,
              async () => {
                const { token, password } = parseWith(linkFields, fields);
                const result = await setPasswordWithLink(c.var.ctx, serverId, link.userId, token, password);
                const message =
                  "done" in result
                    ? `The password of ${link.userId} is set. Log in with it in Element or any Matrix app, at ${link.homeserverUrl}.`
                    : `The password of ${link.userId} is being set; in a minute, log in with it in Element or any Matrix app, at ${link.homeserverUrl}.`;
                return c.html(
                  <MessagePage
                    title="Password set"
                    message={message}
                    viewer={viewer}
                    next={{ href: elementLink(link.homeserverUrl), label: "Open Element" }}
                  />,
                );
              },
              (error) => <UserPasswordPage viewer={viewer} serverId={serverId} token={fields.token ?? ""} link={link} error={error} />,
            );
          },
          refused,
        ),
      refused,
    );
  });

export const dashboardPageRoutes = new Hono<AppEnv>()
  .get("/assets/dashboard.js", (c) => {
    c.header("Cache-Control", "public, max-age=3600");
    return c.body(DASHBOARD_SCRIPT, 200, { "Content-Type": "text/javascript; charset=utf-8" });
  })
  .route("/servers", serverPageRoutes)
  .route("/homeservers", passwordLinkPageRoutes);
