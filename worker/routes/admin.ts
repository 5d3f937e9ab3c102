import { and, desc, eq } from "drizzle-orm";
import { Hono, type Context } from "hono";
import { z } from "zod";
import { imageReference, JOBS, TEST_JOB_KINDS } from "../../protocol/jobs";
import { audit, readAudit } from "../audit/audit";
import { refusalsSince } from "../audit/refusals";
import { HOST_STATES, jobs, workloads } from "../db/schema";
import { expiringSoon, listCertificates } from "../fleet/certificates";
import { createJoinToken, REGIONS } from "../fleet/enrollment";
import { getJob } from "../fleet/jobs";
import { dispatchJob, hostStub, listHosts, requireHost, revokeHost, setHostState, setUnencryptedPlacementOverride } from "../fleet/hosts";
import { JOIN_TOKEN_DEFAULT_MINUTES, JOIN_TOKEN_MAX_MINUTES } from "../fleet/policy";
import { hostUsageSeries, USAGE_RANGES, type UsageRange } from "../fleet/usage";
import { notFound } from "../errors";
import type { AppEnv } from "../http/context";
import { requireOperator } from "../http/operator";
import { presentHost, presentJob, presentPlacement, presentServer, presentUsage } from "../http/present";
import { roomOn } from "../servers/placement";
import { latestLifecycleJob, upgradeServer } from "../servers/servers";
import { listMigrations, presentMigration, startMigration } from "../servers/migration";
import { cancelDrain, drainProgress, latestDrain, startDrain } from "../fleet/drains";
import { legalExportRequest, presentLegalExport, requestLegalExport } from "../legal/exports";
import { currentStorageAlerts } from "../servers/storage-alerts";
import { requireSession, type SessionAppEnv } from "../http/session";
import { parseWith, readJson } from "../http/validation";

const rangeQuery = z.object({
  range: z.enum(Object.keys(USAGE_RANGES) as [UsageRange, ...UsageRange[]]).default("24h"),
});

const joinTokenBody = z.strictObject({
  region: z.enum(REGIONS),
  expiresInMinutes: z.number().int().min(1).max(JOIN_TOKEN_MAX_MINUTES).default(JOIN_TOKEN_DEFAULT_MINUTES),
});

async function createJoinTokenHandler(c: Context<SessionAppEnv>) {
  const body = await readJson(c, joinTokenBody);
  const token = await createJoinToken(c.var.ctx.db, c.var.user.id, body.region, body.expiresInMinutes, c.var.ctx.now);
  return c.json({ ...token, expiresAt: token.expiresAt.toISOString() }, 201);
}

// Operators only: hosts and their join tokens, jobs, test workloads, usage and the audit log.
export const adminRoutes = new Hono<AppEnv>()
  .use(requireSession)
  .use(requireOperator)
  // Join tokens make hosts: offered under /hosts too, where an operator looks for them.
  .post("/join-tokens", createJoinTokenHandler)
  .post("/hosts/join-tokens", createJoinTokenHandler)
  .get("/hosts", async (c) => {
    const { db, now } = c.var.ctx;
    const all = await listHosts(db);
    return c.json({ hosts: await Promise.all(all.map(async (host) => ({ ...presentHost(host), placement: presentPlacement(await roomOn(db, host, now)) }))) });
  })
  .get("/hosts/:id", async (c) => {
    const { ctx } = c.var;
    const host = await requireHost(ctx.db, c.req.param("id"));
    return c.json({
      ...presentHost(host),
      placement: presentPlacement(await roomOn(ctx.db, host, ctx.now)),
      connection: await hostStub(ctx.env, host.id).status(),
    });
  })
  .post("/hosts/:id/revoke", async (c) => {
    const { ctx } = c.var;
    const host = await revokeHost(ctx.db, ctx.env, c.var.user.id, c.req.param("id"), ctx.now);
    return c.json(presentHost(host));
  })
  // Active hosts take new homeservers; draining and out-of-service hosts take none.
  .post("/hosts/:id/state", async (c) => {
    const { state, reason } = await readJson(c, z.strictObject({ state: z.enum(HOST_STATES), reason: z.string().trim().min(3).max(500).optional() }));
    const host = await setHostState(c.var.ctx.db, c.var.user.id, c.req.param("id"), state, reason, c.var.ctx.now);
    return c.json(presentHost(host));
  })
  // Drain: the host takes no new homeservers, and each running one is moved off, a few at a time.
  .post("/hosts/:id/drain", async (c) => {
    const { ctx } = c.var;
    const drain = await startDrain(ctx, c.var.user.id, c.req.param("id"));
    return c.json((await drainProgress(ctx, drain)).view, 202);
  })
  // Cancel: no more moves start; those under way finish or roll back; the host stays draining.
  .post("/hosts/:id/drain/cancel", async (c) => {
    const { ctx } = c.var;
    const drain = await cancelDrain(ctx, c.var.user.id, c.req.param("id"));
    return c.json((await drainProgress(ctx, drain)).view);
  })
  .get("/hosts/:id/drain", async (c) => {
    const { ctx } = c.var;
    const host = await requireHost(ctx.db, c.req.param("id"));
    const drain = await latestDrain(ctx, host.id);
    if (!drain) throw notFound("This host was never drained.");
    return c.json((await drainProgress(ctx, drain)).view);
  })
  // Production places customer data only on encrypted data roots, unless an operator says otherwise here.
  .post("/hosts/:id/unencrypted-placement", async (c) => {
    const { allow, reason } = await readJson(c, z.strictObject({ allow: z.boolean(), reason: z.string().trim().min(3).max(500) }));
    const host = await setUnencryptedPlacementOverride(c.var.ctx.db, c.var.user.id, c.req.param("id"), allow, reason, c.var.ctx.now);
    return c.json(presentHost(host));
  })
  .get("/hosts/:id/usage", async (c) => {
    const { ctx } = c.var;
    const host = await requireHost(ctx.db, c.req.param("id"));
    const { range } = parseWith(rangeQuery, c.req.query());
    return c.json(presentUsage(await hostUsageSeries(ctx.db, host.id, range, ctx.now), ["hostId", "resolution"]));
  })
  .get("/hosts/:id/jobs", async (c) => {
    const { ctx } = c.var;
    const host = await requireHost(ctx.db, c.req.param("id"));
    const rows = await ctx.db.select().from(jobs).where(eq(jobs.hostId, host.id)).orderBy(desc(jobs.createdAt)).limit(200);
    return c.json({ jobs: rows.map(presentJob) });
  })
  .post("/hosts/:id/jobs", async (c) => {
    const { ctx } = c.var;
    const hostId = c.req.param("id");
    // The host is not read on the way to its agent (the job's foreign key finds an unknown one), only
    // when the request is refused: an unknown host is still a 404 before the body is judged.
    const job = await (async () => {
      const body = await readJson(
        c,
        z.strictObject({
          kind: z.enum(TEST_JOB_KINDS),
          payload: z.json().optional(),
          timeoutSeconds: z
            .number()
            .int()
            .min(1)
            .max(24 * 3600)
            .optional(),
        }),
      );
      const payload = parseWith(JOBS[body.kind].payload, body.payload ?? {});
      const id = crypto.randomUUID();
      const enqueued = audit(ctx.db, ctx.now, `user:${c.var.user.id}`, "job.enqueued", id, { hostId, kind: body.kind });
      return dispatchJob(ctx.db, ctx.env, { id, hostId, kind: body.kind, payload, timeoutMs: body.timeoutSeconds && body.timeoutSeconds * 1000 }, ctx.now, [
        enqueued,
      ]);
    })().catch(async (error: unknown) => {
      await requireHost(ctx.db, hostId);
      throw error;
    });
    return c.json(presentJob(job), 202);
  })
  .get("/jobs/:id", async (c) => {
    const job = await getJob(c.var.ctx.db, c.req.param("id"));
    if (!job) throw notFound("No such job.");
    return c.json(presentJob(job));
  })
  .post("/hosts/:id/workloads", async (c) => {
    const { ctx } = c.var;
    const host = await requireHost(ctx.db, c.req.param("id"));
    const { spec = {} } = await readJson(c, z.strictObject({ kind: z.literal("test"), spec: z.json().optional() }));
    const [workload] = await ctx.db
      .insert(workloads)
      .values({ id: crypto.randomUUID(), hostId: host.id, kind: "test", spec, desired: "present", createdAt: ctx.now, updatedAt: ctx.now })
      .returning();
    const job = await dispatchJob(ctx.db, ctx.env, { hostId: host.id, kind: "workload.ensure", payload: { id: workload!.id, kind: "test", spec } }, ctx.now);
    return c.json({ workload: { id: workload!.id, hostId: host.id, kind: workload!.kind, desired: workload!.desired }, job: presentJob(job) }, 201);
  })
  .delete("/workloads/:id", async (c) => {
    const { ctx } = c.var;
    const [workload] = await ctx.db
      .update(workloads)
      .set({ desired: "absent", updatedAt: ctx.now })
      .where(and(eq(workloads.id, c.req.param("id")), eq(workloads.desired, "present")))
      .returning();
    if (!workload) throw notFound("No such workload.");
    const job = await dispatchJob(
      ctx.db,
      ctx.env,
      { hostId: workload.hostId, kind: "workload.remove", payload: { id: workload.id, kind: workload.kind } },
      ctx.now,
    );
    return c.json({ job: presentJob(job) }, 202);
  })
  .post("/servers/:id/upgrade", async (c) => {
    const { image } = await readJson(c, z.strictObject({ image: imageReference }));
    const { ctx } = c.var;
    const server = await upgradeServer(ctx, c.var.user.id, c.req.param("id"), image);
    return c.json(presentServer(ctx.config, server, await latestLifecycleJob(ctx.db, server)), 202);
  })
  // Moves one running homeserver to another host of its region (any customer's: operators run the fleet).
  .post("/servers/:id/migrate", async (c) => {
    const { targetHostId } = await readJson(c, z.strictObject({ targetHostId: z.string().min(1).max(64) }));
    const { ctx } = c.var;
    const migration = await startMigration(ctx, { serverId: c.req.param("id"), targetHostId, actor: `user:${c.var.user.id}` });
    return c.json(presentMigration(migration), 202);
  })
  .get("/migrations", async (c) => {
    const query = parseWith(
      z.object({
        drainId: z.string().min(1).max(64).optional(),
        serverId: z.string().min(1).max(64).optional(),
        limit: z.coerce.number().int().min(1).max(500).default(100),
      }),
      c.req.query(),
    );
    const rows = await listMigrations(c.var.ctx.db, query, query.limit);
    return c.json({ migrations: rows.map(presentMigration) });
  })
  // A legal request's export of one homeserver (any customer's: operators act on legal requests).
  .post("/servers/:id/legal-exports", async (c) => {
    const { ctx } = c.var;
    const row = await requestLegalExport(ctx, c.var.user.id, c.req.param("id"), await readJson(c, legalExportRequest));
    return c.json(presentLegalExport(row), 202);
  })
  .get("/certificates", async (c) => {
    const rows = await listCertificates(c.var.ctx.db);
    return c.json({
      certificates: rows.map((row) => ({
        hostId: row.hostId,
        serverName: row.serverName,
        notAfter: row.notAfter.toISOString(),
        issuer: row.issuer,
        expiringSoon: expiringSoon(row, c.var.ctx.now),
        reportedAt: row.updatedAt.toISOString(),
      })),
    });
  })
  // Homeservers whose storage is past 80 % or 95 % of its quota now (what was mailed, and when).
  .get("/storage-alerts", async (c) => {
    const alerts = await currentStorageAlerts(c.var.ctx.db, c.var.ctx.now);
    return c.json({
      alerts: alerts.map((alert) => ({
        serverId: alert.serverId,
        name: alert.name,
        hostId: alert.hostId,
        threshold: alert.threshold,
        crossedAt: alert.crossedAt.toISOString(),
        notifiedAt: alert.notifiedAt?.toISOString() ?? null,
        crossedWith: { usedBytes: alert.usedBytes, quotaBytes: alert.quotaBytes },
        current: alert.current && { usedBytes: alert.current.usedBytes, quotaBytes: alert.current.quotaBytes, at: alert.current.at.toISOString() },
      })),
    });
  })
  // Callers refused before they proved anything, counted per hour and reason (never in the audit log).
  .get("/refusals", async (c) => {
    const { hours } = parseWith(
      z.object({
        hours: z.coerce
          .number()
          .int()
          .min(1)
          .max(90 * 24)
          .default(24),
      }),
      c.req.query(),
    );
    const rows = await refusalsSince(c.var.ctx.db, new Date(c.var.ctx.now.getTime() - hours * 3_600_000));
    return c.json({ refusals: rows.map((row) => ({ kind: row.kind, reason: row.reason, hourStart: row.hourStart.toISOString(), count: row.count })) });
  })
  .get("/audit", async (c) => {
    const { limit } = parseWith(z.object({ limit: z.coerce.number().int().min(1).max(1000).default(100) }), c.req.query());
    const rows = await readAudit(c.var.ctx.db, { limit });
    return c.json({ entries: rows.map((row) => ({ ...row, at: row.at.toISOString() })) });
  });
