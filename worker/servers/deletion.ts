import { and, desc, eq, gt, inArray, isNotNull, sql } from "drizzle-orm";
import { audit, type Actor } from "../audit/audit";
import { requireOnlineHost, startBackup, UNFINISHED_BACKUP } from "../backups/backups";
import { DELETION_RETRY_MS } from "../backups/policy";
import type { WorkContext } from "../context";
import { backups, entitlements, jobs, servers, workloads, type Backup, type Server, type ServerStatus, type User } from "../db/schema";
import { removeServerDns } from "../dns/records";
import { discardImportOf } from "../imports/imports";
import { ApiError, conflict } from "../errors";
import { ownedServer, startLifecycleJob } from "./servers";

export const DELETE_FROM: ServerStatus[] = ["running", "stopped", "suspended", "failed", "awaiting_delegation"];

/**
 * A homeserver still waiting for its delegation has nothing on its host: no final backup, it is
 * deleted at once with its DNS records. Its name stays claimed as every name does, but its domain
 * is given back: no homeserver ever ran under it, so no server out there trusts a key for it. An
 * archive uploaded to import into it is deleted with it.
 */
export async function deleteUnmade(ctx: WorkContext, server: Server, actor: Actor): Promise<Server> {
  const [deleted] = await ctx.db
    .update(servers)
    .set({ status: "deleted", statusReason: null, serverName: null, updatedAt: ctx.now })
    .where(and(eq(servers.id, server.id), eq(servers.status, "awaiting_delegation")))
    .returning();
  if (!deleted) throw conflict("invalid_state", "The server changed state meanwhile; try again.");
  await audit(ctx.db, ctx.now, actor, "server.deleted", server.id, { from: server.status, serverName: server.serverName });
  await discardImportOf(ctx, server.id);
  await removeServerDns(ctx, deleted);
  return deleted;
}

/**
 * Deleting a homeserver starts with a final backup, during which the server is
 * `deleting`. Only once that backup succeeded does its host destroy the
 * homeserver (deleteAfterFinalBackup); if it fails, the server goes back to
 * the status it had, with the reason, and nothing is destroyed (stopDeletion).
 */
export async function requestDeletion(ctx: WorkContext, server: Server, actor: Actor): Promise<Server> {
  if (!DELETE_FROM.includes(server.status)) {
    throw conflict("invalid_state", `The server is ${server.status}; it can be deleted when it is ${DELETE_FROM.join(", ")}.`);
  }
  if (server.status === "awaiting_delegation") return deleteUnmade(ctx, server, actor);
  const [deleting] = await ctx.db
    .update(servers)
    // No lifecycle job while the final backup is taken: a late outcome of an earlier one changes nothing.
    .set({ status: "deleting", previousStatus: server.status, statusReason: "taking a final backup", lifecycleJobId: null, updatedAt: ctx.now })
    .where(and(eq(servers.id, server.id), eq(servers.status, server.status)))
    .returning();
  if (!deleting) throw conflict("invalid_state", "The server changed state meanwhile; try again.");
  try {
    await startBackup(ctx, deleting, "final", actor);
  } catch (error) {
    await ctx.db
      .update(servers)
      .set({ status: server.status, previousStatus: null, statusReason: server.statusReason, updatedAt: ctx.now })
      .where(and(eq(servers.id, server.id), eq(servers.status, "deleting")));
    throw error;
  }
  await audit(ctx.db, ctx.now, actor, "server.deletion_requested", server.id, { from: server.status });
  return deleting;
}

/** DELETE /api/servers/:id: the owner's homeserver, whose host must be connected to take the final backup. */
export async function deleteOwnedServer(ctx: WorkContext, user: User, serverId: string): Promise<Server> {
  const server = await ownedServer(ctx.db, user.id, serverId);
  if (server.status !== "awaiting_delegation") await requireOnlineHost(ctx.db, server);
  return requestDeletion(ctx, server, `user:${user.id}`);
}

/** The final backup succeeded: the host destroys the homeserver, and reconciliation must never bring it back (nor its DNS records). */
export async function deleteAfterFinalBackup(ctx: WorkContext, backup: Backup): Promise<void> {
  const [waiting] = await ctx.db
    .select()
    .from(servers)
    .where(and(eq(servers.id, backup.serverId), eq(servers.status, "deleting"), isNotNull(servers.previousStatus)));
  if (!waiting?.hostId) return;
  await ctx.db.update(workloads).set({ desired: "absent", updatedAt: ctx.now }).where(eq(workloads.id, waiting.id));
  // Still waiting for this backup: the delete job is dispatched once, whoever gets here first.
  const server = await startLifecycleJob(
    ctx,
    { id: waiting.id, hostId: waiting.hostId },
    { from: ["deleting"], to: "deleting", previousStatus: null },
    { kind: "homeserver.delete", payload: { serverId: waiting.id } },
    isNotNull(servers.previousStatus),
  );
  if (!server) return;
  await audit(ctx.db, ctx.now, `host:${backup.hostId}`, "server.final_backup_taken", server.id, { backupId: backup.id });
  await removeServerDns(ctx, server);
}

/** The final backup failed: nothing is destroyed, and the server goes back to the status it had. */
export async function stopDeletion(ctx: WorkContext, serverId: string): Promise<void> {
  await ctx.db
    .update(servers)
    .set({
      status: sql`coalesce(${servers.previousStatus}, 'failed')`,
      previousStatus: null,
      // The backup's own error (the host's words) stays with the backup for operators.
      statusReason: "deletion stopped, nothing was deleted: the final backup failed",
      updatedAt: ctx.now,
    })
    .where(and(eq(servers.id, serverId), eq(servers.status, "deleting"), isNotNull(servers.previousStatus)));
}

/**
 * The cron's backstop for a deletion whose final backup finished without its
 * job's outcome being applied (the Worker stopped in between): a server still
 * waiting for its final backup (`deleting` with a previous status to return to)
 * whose newest final backup has finished moves on as the outcome would have.
 */
export async function resumeStalledDeletions(ctx: WorkContext): Promise<number> {
  const waiting = await ctx.db
    .select({ id: servers.id })
    .from(servers)
    .where(and(eq(servers.status, "deleting"), isNotNull(servers.previousStatus)));
  let resumed = 0;
  for (const { id } of waiting) {
    const [latest] = await ctx.db
      .select({ backup: backups, jobStatus: jobs.status })
      .from(backups)
      .leftJoin(jobs, eq(jobs.id, backups.jobId))
      .where(and(eq(backups.serverId, id), eq(backups.trigger, "final")))
      .orderBy(desc(backups.createdAt))
      .limit(1);
    // Still being taken, or its job has not ended yet (the outcome will come).
    if (!latest || UNFINISHED_BACKUP.includes(latest.backup.status) || (latest.jobStatus && !["succeeded", "failed"].includes(latest.jobStatus))) continue;
    if (latest.backup.status === "succeeded") await deleteAfterFinalBackup(ctx, latest.backup);
    else await stopDeletion(ctx, id);
    resumed++;
  }
  return resumed;
}

/**
 * Billing: the homeservers of accounts whose deletion is due are deleted, each
 * after its final backup. One whose final backup failed (or could not start)
 * is tried again a day later. `userId` limits it to one account.
 */
export async function startDueDeletions(ctx: WorkContext, userId?: string): Promise<number> {
  const due = await ctx.db
    .select({ server: servers })
    .from(servers)
    .innerJoin(entitlements, eq(entitlements.userId, servers.userId))
    .where(and(eq(entitlements.state, "deletion_due"), inArray(servers.status, DELETE_FROM), userId ? eq(servers.userId, userId) : undefined));
  let started = 0;
  for (const { server } of due) {
    const [recent] = await ctx.db
      .select({ id: backups.id })
      .from(backups)
      .where(and(eq(backups.serverId, server.id), eq(backups.trigger, "final"), gt(backups.createdAt, new Date(ctx.now.getTime() - DELETION_RETRY_MS))))
      .limit(1);
    if (recent) continue;
    try {
      await requestDeletion(ctx, server, "system");
      started++;
    } catch (error) {
      // A backup under way, say: the next hourly run tries again.
      if (!(error instanceof ApiError)) throw error;
      console.warn(JSON.stringify({ event: "due_deletion_deferred", serverId: server.id, code: error.code }));
    }
  }
  return started;
}
