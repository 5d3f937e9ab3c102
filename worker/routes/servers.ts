import { serverDnsStatus } from "../dns/records";
import { and, eq } from "drizzle-orm";
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { z } from "zod";
import { REGIONS } from "../fleet/enrollment";
import { USAGE_RANGES, workloadUsageSeries, type UsageRange } from "../fleet/usage";
import type { AppEnv } from "../http/context";
import { presentServer, presentUpkeep, presentUsage } from "../http/present";
import { requireSession } from "../http/session";
import { parseWith, readJson } from "../http/validation";
import { passwordSchema } from "../auth/credentials";
import { sessionIsLive } from "../auth/sessions";
import { servers } from "../db/schema";
import { createAdminPasswordLink, setAdminPassword } from "../servers/admin-password";
import { deleteOwnedServer } from "../servers/deletion";
import { checkDelegationNow, delegationStatus, publishDelegationLater } from "../servers/delegation";
import { customServerNameSchema, serverNameSchema } from "../servers/names";
import { changeServerState, createServer, latestLifecycleJob, listServers, ownedServer } from "../servers/servers";
import { lastUpkeep } from "../servers/upkeep";
import { movesForCustomer } from "../servers/migration";

// One stream lasts a few minutes; EventSource reconnects by itself.
const SERVER_EVENTS_MAX_MS = 5 * 60_000;
const SERVER_EVENTS_POLL_MS = 1_000;

const rangeQuery = z.object({
  range: z.enum(Object.keys(USAGE_RANGES) as [UsageRange, ...UsageRange[]]).default("24h"),
});

// A customer's homeservers: every route reaches a server only through its owner.
export const serverRoutes = new Hono<AppEnv>()
  .post("/", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const customServerName = customServerNameSchema({ homeserverDomain: ctx.config.homeservers.domain, production: ctx.config.environment === "production" });
    const { name, region, serverName, publishDelegationLater } = await readJson(
      c,
      z
        .strictObject({
          name: serverNameSchema,
          region: z.enum(REGIONS),
          serverName: customServerName.optional(),
          // Provision before the domain delegates: only as said, and only with a domain (PUBLISH_LATER_WARNING).
          publishDelegationLater: z.literal(true).optional(),
        })
        .refine((body) => body.serverName !== undefined || body.publishDelegationLater === undefined, {
          path: ["publishDelegationLater"],
          message: "only with a serverName",
        }),
    );
    const custom = serverName ? { serverName, publishLater: publishDelegationLater === true } : null;
    const server = await createServer(ctx, user, name, region, custom);
    return c.json(presentServer(ctx.config, server, await latestLifecycleJob(ctx.db, server)), 201);
  })
  .get("/", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const mine = await listServers(ctx.db, user.id);
    return c.json({ servers: await Promise.all(mine.map(async (server) => presentServer(ctx.config, server, await latestLifecycleJob(ctx.db, server)))) });
  })
  .get("/:id", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const server = await ownedServer(ctx.db, user.id, c.req.param("id"));
    const upkeep = await lastUpkeep(ctx.db, server.id);
    return c.json({
      ...presentServer(ctx.config, server, await latestLifecycleJob(ctx.db, server)),
      lastUpkeep: upkeep ? presentUpkeep(upkeep) : null,
      ...(await movesForCustomer(ctx.db, server)),
      dns: await serverDnsStatus(ctx, server.id),
    });
  })
  .post("/:id/stop", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const server = await changeServerState(ctx, user, c.req.param("id"), "stop");
    return c.json(presentServer(ctx.config, server, await latestLifecycleJob(ctx.db, server)), 202);
  })
  .post("/:id/start", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const server = await changeServerState(ctx, user, c.req.param("id"), "start");
    return c.json(presentServer(ctx.config, server, await latestLifecycleJob(ctx.db, server)), 202);
  })
  // Deleting takes a final backup first; the homeserver is destroyed only once that succeeded.
  .delete("/:id", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const server = await deleteOwnedServer(ctx, user, c.req.param("id"));
    return c.json(presentServer(ctx.config, server, await latestLifecycleJob(ctx.db, server)), 202);
  })
  .post("/:id/admin-password-link", requireSession, async (c) => {
    const link = await createAdminPasswordLink(c.var.ctx, c.var.user, c.req.param("id"));
    return c.json({ ...link, expiresAt: link.expiresAt.toISOString() }, 201);
  })
  .post("/:id/admin-password", requireSession, async (c) => {
    const { token, password } = await readJson(c, z.strictObject({ token: z.string().min(1).max(256), password: passwordSchema }));
    const result = await setAdminPassword(c.var.ctx, c.var.user, c.req.param("id"), token, password);
    return c.json({ status: "setting", ...result }, 202);
  })
  // Live status for the dashboard: an event whenever the server's status or its job's progress changes.
  // It ends within a poll once the session that opened it is revoked (log-out, password change, deletion).
  .get("/:id/events", requireSession, async (c) => {
    const { ctx, user, session } = c.var;
    const server = await ownedServer(ctx.db, user.id, c.req.param("id"));
    return streamSSE(c, async (stream) => {
      let last = "";
      const until = Date.now() + SERVER_EVENTS_MAX_MS;
      for (let current = server; !stream.aborted && Date.now() < until; ) {
        const view = JSON.stringify(presentServer(ctx.config, current, await latestLifecycleJob(ctx.db, current)));
        if (view !== last) await stream.writeSSE({ event: "server", data: view });
        last = view;
        await stream.sleep(SERVER_EVENTS_POLL_MS);
        const [fresh] = await ctx.db
          .select()
          .from(servers)
          .where(and(eq(servers.id, server.id), sessionIsLive(ctx.db, session.id, new Date())));
        if (!fresh) break;
        current = fresh;
      }
    });
  })
  // What the owner publishes on their own domain so that clients and federation find the homeserver, and whether it does.
  .get("/:id/delegation", requireSession, async (c) => {
    const { ctx, user } = c.var;
    return c.json(await delegationStatus(ctx, await ownedServer(ctx.db, user.id, c.req.param("id"))));
  })
  // The host fetches the well-knowns: the answer is the job; GET shows the verdict once it finished.
  .post("/:id/delegation/check", requireSession, async (c) => {
    const job = await checkDelegationNow(c.var.ctx, c.var.user, c.req.param("id"));
    return c.json({ jobId: job.id }, 202);
  })
  .post("/:id/delegation/publish-later", requireSession, async (c) => {
    const { ctx, user } = c.var;
    await readJson(c, z.strictObject({ confirm: z.literal(true) }));
    const server = await publishDelegationLater(ctx, user, c.req.param("id"));
    return c.json(presentServer(ctx.config, server, await latestLifecycleJob(ctx.db, server)), 202);
  })
  .get("/:id/usage", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const server = await ownedServer(ctx.db, user.id, c.req.param("id"));
    const { range } = parseWith(rangeQuery, c.req.query());
    const series = await workloadUsageSeries(ctx.db, [server.id], range, ctx.now);
    return c.json(presentUsage(series, ["workloadId", "hostId", "resolution"]));
  });
