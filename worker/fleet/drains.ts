import { and, asc, desc, eq, isNull, ne } from "drizzle-orm";
import { audit } from "../audit/audit";
import { planById } from "../billing/plans";
import type { WorkContext } from "../context";
import { isUniqueViolation } from "../db/client";
import { hostDrains, serverMigrations, servers, type Host, type HostDrain, type Server } from "../db/schema";
import { ApiError, conflict } from "../errors";
import { startMigration } from "../servers/migration";
import { placementCandidates } from "../servers/placement";
import { requireHost, setHostState } from "./hosts";
import { DRAIN_CONCURRENCY } from "./policy";

/**
 * Draining a host: it takes no new homeservers (state draining), and every running homeserver on
 * it is moved to another host of its region chosen as placement chooses, at most
 * DRAIN_CONCURRENCY at a time. Each finished move starts the next (and the hourly cron does too).
 * The drain ends once nothing is under way and nothing more can start now; what is left stays on
 * the host with its reason (not running, no room elsewhere, its move failed) for the operator,
 * who may drain again to retry. A cancelled drain starts no more moves and ends once those under
 * way have finished or rolled back; the host stays draining until the operator sets it active.
 */
export async function startDrain(ctx: WorkContext, operatorId: string, hostId: string): Promise<HostDrain> {
  await requireHost(ctx.db, hostId);
  await setHostState(ctx.db, operatorId, hostId, "draining", undefined, ctx.now);
  const id = crypto.randomUUID();
  try {
    await ctx.db.insert(hostDrains).values({ id, hostId, requestedBy: `user:${operatorId}`, concurrency: DRAIN_CONCURRENCY, startedAt: ctx.now });
  } catch (error) {
    if (isUniqueViolation(error)) throw conflict("drain_running", "This host is being drained already.");
    throw error;
  }
  await audit(ctx.db, ctx.now, `user:${operatorId}`, "host.drain_started", hostId, { drainId: id, concurrency: DRAIN_CONCURRENCY });
  await continueDrain(ctx, id);
  return (await drainById(ctx, id))!;
}

async function drainById(ctx: WorkContext, id: string): Promise<HostDrain | undefined> {
  const [drain] = await ctx.db.select().from(hostDrains).where(eq(hostDrains.id, id));
  return drain;
}

/** Starts moves while the drain has free slots and homeservers it has not tried; ends it when nothing is left to do. */
export async function continueDrain(ctx: WorkContext, drainId: string): Promise<void> {
  const drain = await drainById(ctx, drainId);
  if (!drain || drain.finishedAt) return;
  // Its homeservers' final backups are taken on it: the drain waits for it to reconnect (the hourly run goes on).
  if ((await requireHost(ctx.db, drain.hostId)).status === "offline") return;
  const moves = await ctx.db.select().from(serverMigrations).where(eq(serverMigrations.drainId, drain.id));
  const tried = new Set(moves.map((move) => move.serverId));
  let underWay = moves.filter((move) => !move.finishedAt).length;
  for (const server of drain.cancelledAt ? [] : await serversOn(ctx, drain.hostId)) {
    if (underWay >= drain.concurrency) break;
    if (tried.has(server.id) || server.status !== "running") continue;
    if (await moveSomewhere(ctx, drain, server)) underWay++;
  }
  if (underWay > 0) return;
  const [ended] = await ctx.db
    .update(hostDrains)
    .set({ finishedAt: ctx.now })
    .where(and(eq(hostDrains.id, drain.id), isNull(hostDrains.finishedAt)))
    .returning();
  if (ended) await audit(ctx.db, ctx.now, "system", "host.drain_finished", drain.hostId, { drainId: drain.id, ...(await drainProgress(ctx, ended)).counts });
}

/** Tries the region's hosts with room, least loaded first; false when none took it. */
async function moveSomewhere(ctx: WorkContext, drain: HostDrain, server: Server): Promise<boolean> {
  const plan = planById(server.planId);
  if (!plan) return false;
  for (const target of await placementCandidates(ctx, server.region, plan)) {
    if (target.id === drain.hostId) continue;
    try {
      await startMigration(ctx, { serverId: server.id, targetHostId: target.id, actor: drain.requestedBy as `user:${string}`, drain });
      return true;
    } catch (error) {
      // Another request took the room, or the server changed meanwhile: the next host, or the next server.
      if (!(error instanceof ApiError)) throw error;
    }
  }
  return false;
}

async function serversOn(ctx: WorkContext, hostId: string): Promise<Server[]> {
  return ctx.db
    .select()
    .from(servers)
    .where(and(eq(servers.hostId, hostId), ne(servers.status, "deleted")))
    .orderBy(asc(servers.createdAt));
}

/**
 * Cancels a host's unfinished drain: no more of its moves start; those under way go on to their
 * end (their success, or their rollback), after which the drain ends. The host stays draining.
 */
export async function cancelDrain(ctx: WorkContext, operatorId: string, hostId: string): Promise<HostDrain> {
  await requireHost(ctx.db, hostId);
  const [cancelled] = await ctx.db
    .update(hostDrains)
    .set({ cancelledAt: ctx.now, cancelledBy: `user:${operatorId}` })
    .where(and(eq(hostDrains.hostId, hostId), isNull(hostDrains.finishedAt), isNull(hostDrains.cancelledAt)))
    .returning();
  if (!cancelled) throw conflict("no_drain_running", "This host has no drain under way to cancel.");
  await audit(ctx.db, ctx.now, `user:${operatorId}`, "host.drain_cancelled", hostId, { drainId: cancelled.id });
  await continueDrain(ctx, cancelled.id);
  return (await drainById(ctx, cancelled.id))!;
}

/** The hourly backstop: every unfinished drain starts what it can (room may have appeared) and ends when it is done. */
export async function continueDrains(ctx: WorkContext): Promise<number> {
  const open = await ctx.db.select({ id: hostDrains.id }).from(hostDrains).where(isNull(hostDrains.finishedAt));
  for (const { id } of open) await continueDrain(ctx, id);
  return open.length;
}

/** The newest drain of a host, if it was ever drained. */
export async function latestDrain(ctx: WorkContext, hostId: string): Promise<HostDrain | undefined> {
  const [drain] = await ctx.db.select().from(hostDrains).where(eq(hostDrains.hostId, hostId)).orderBy(desc(hostDrains.startedAt)).limit(1);
  return drain;
}

/**
 * How a drain stands: its homeservers (those it moved off, and those still on the host) counted as
 * moved, failed (moved back after a failure), moving, and remaining, each remaining one with why.
 */
export async function drainProgress(ctx: WorkContext, drain: HostDrain) {
  const host = await requireHost(ctx.db, drain.hostId);
  const moves = await ctx.db.select().from(serverMigrations).where(eq(serverMigrations.drainId, drain.id)).orderBy(asc(serverMigrations.startedAt));
  const tried = new Set(moves.map((move) => move.serverId));
  const left = (await serversOn(ctx, drain.hostId)).filter((server) => !tried.has(server.id));
  const moved = moves.filter((move) => move.phase === "succeeded" || (move.servingAt && !move.finishedAt)).length;
  const failed = moves.filter((move) => move.phase === "failed").length;
  const counts = { total: moves.length + left.length, moved, failed, moving: moves.length - moved - failed, remaining: left.length };
  return {
    counts,
    view: {
      id: drain.id,
      hostId: drain.hostId,
      concurrency: drain.concurrency,
      startedAt: drain.startedAt.toISOString(),
      cancelledAt: drain.cancelledAt?.toISOString() ?? null,
      finishedAt: drain.finishedAt?.toISOString() ?? null,
      ...counts,
      migrations: moves.map((move) => ({
        id: move.id,
        serverId: move.serverId,
        targetHostId: move.targetHostId,
        phase: move.phase,
        downtimeMs: move.downtimeMs,
      })),
      remainingServers: left.map((server) => ({
        serverId: server.id,
        status: server.status,
        reason: remainingReason(drain, host, server),
      })),
    },
  };
}

function remainingReason(drain: HostDrain, host: Host, server: Server): string {
  if (server.status !== "running") return `it is ${server.status}: only running homeservers are moved`;
  if (drain.cancelledAt) return "the drain was cancelled";
  if (drain.finishedAt) return host.status === "online" ? "no other host of its region had room for it" : `its host is ${host.status}`;
  return host.status === "online" ? "waiting for a free slot" : "waiting for its host to reconnect";
}
