import { and, eq } from "drizzle-orm";
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { z } from "zod";
import { REGIONS } from "../fleet/enrollment";
import { USAGE_RANGES, workloadUsageSeries, type UsageRange } from "../fleet/usage";
import type { AppEnv } from "../http/context";
import { presentServer, presentUsage } from "../http/present";
import { requireAuth } from "../http/session";
import { parseWith, readJson } from "../http/validation";
import { passwordSchema } from "../auth/credentials";
import { sessionIsLive } from "../auth/sessions";
import { servers } from "../db/schema";
import { linkBuilder } from "../http/domain-context";
import { createAdminPasswordLink, setAdminPassword } from "../servers/admin-password";
import { deleteOwnedServer } from "../servers/deletion";
import { serverNameSchema } from "../servers/names";
import { changeServerState, createServer, latestLifecycleJob, listServers, ownedServer } from "../servers/servers";

// One stream lasts a few minutes; EventSource reconnects by itself.
const SERVER_EVENTS_MAX_MS = 5 * 60_000;
const SERVER_EVENTS_POLL_MS = 1_000;

const rangeQuery = z.object({
  range: z.enum(Object.keys(USAGE_RANGES) as [UsageRange, ...UsageRange[]]).default("24h"),
});

// A customer's homeservers: every route reaches a server only through its owner.
export const serverRoutes = new Hono<AppEnv>()
  .post("/", async (c) => {
    const { user } = requireAuth(c);
    const { name, region } = await readJson(c, z.strictObject({ name: serverNameSchema, region: z.enum(REGIONS) }));
    const server = await createServer({ db: c.var.db, env: c.env, now: c.var.now }, user, name, region);
    return c.json(presentServer(c.env, server, await latestLifecycleJob(c.var.db, server)), 201);
  })
  .get("/", async (c) => {
    const { user } = requireAuth(c);
    const mine = await listServers(c.var.db, user.id);
    return c.json({ servers: await Promise.all(mine.map(async (server) => presentServer(c.env, server, await latestLifecycleJob(c.var.db, server)))) });
  })
  .get("/:id", async (c) => {
    const server = await ownedServer(c.var.db, requireAuth(c).user.id, c.req.param("id"));
    return c.json(presentServer(c.env, server, await latestLifecycleJob(c.var.db, server)));
  })
  .post("/:id/stop", async (c) => {
    const server = await changeServerState({ db: c.var.db, env: c.env, now: c.var.now }, requireAuth(c).user, c.req.param("id"), "stop");
    return c.json(presentServer(c.env, server, await latestLifecycleJob(c.var.db, server)), 202);
  })
  .post("/:id/start", async (c) => {
    const server = await changeServerState({ db: c.var.db, env: c.env, now: c.var.now }, requireAuth(c).user, c.req.param("id"), "start");
    return c.json(presentServer(c.env, server, await latestLifecycleJob(c.var.db, server)), 202);
  })
  // Deleting takes a final backup first; the homeserver is destroyed only once that succeeded.
  .delete("/:id", async (c) => {
    const server = await deleteOwnedServer({ db: c.var.db, env: c.env, now: c.var.now }, requireAuth(c).user, c.req.param("id"));
    return c.json(presentServer(c.env, server, await latestLifecycleJob(c.var.db, server)), 202);
  })
  .post("/:id/admin-password-link", async (c) => {
    const link = await createAdminPasswordLink(
      { db: c.var.db, env: c.env, now: c.var.now },
      requireAuth(c).user,
      c.req.param("id"),
      linkBuilder(c),
    );
    return c.json({ ...link, expiresAt: link.expiresAt.toISOString() }, 201);
  })
  .post("/:id/admin-password", async (c) => {
    const { token, password } = await readJson(c, z.strictObject({ token: z.string().min(1).max(256), password: passwordSchema }));
    const result = await setAdminPassword({ db: c.var.db, env: c.env, now: c.var.now }, requireAuth(c).user, c.req.param("id"), token, password);
    return c.json({ status: "setting", ...result }, 202);
  })
  // Live status for the dashboard: an event whenever the server's status or its job's progress changes.
  // It ends within a poll once the session that opened it is revoked (log-out, password change, deletion).
  .get("/:id/events", async (c) => {
    const { user, session } = requireAuth(c);
    const server = await ownedServer(c.var.db, user.id, c.req.param("id"));
    return streamSSE(c, async (stream) => {
      let last = "";
      const until = Date.now() + SERVER_EVENTS_MAX_MS;
      for (let current = server; !stream.aborted && Date.now() < until; ) {
        const view = JSON.stringify(presentServer(c.env, current, await latestLifecycleJob(c.var.db, current)));
        if (view !== last) await stream.writeSSE({ event: "server", data: view });
        last = view;
        await stream.sleep(SERVER_EVENTS_POLL_MS);
        const [fresh] = await c.var.db
          .select()
          .from(servers)
          .where(and(eq(servers.id, server.id), sessionIsLive(c.var.db, session.id, new Date())));
        if (!fresh) break;
        current = fresh;
      }
    });
  })
  .get("/:id/usage", async (c) => {
    const server = await ownedServer(c.var.db, requireAuth(c).user.id, c.req.param("id"));
    const { range } = parseWith(rangeQuery, c.req.query());
    const series = await workloadUsageSeries(c.var.db, [server.id], range, c.var.now);
    return c.json(presentUsage(series, ["workloadId", "hostId", "resolution"]));
  });
