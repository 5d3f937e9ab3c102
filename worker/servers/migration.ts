import { and, desc, eq, isNotNull, isNull, or, sql, type SQL } from "drizzle-orm";
import type { JobKind, JobPayload } from "../../protocol/jobs";
import { audit, type Actor } from "../audit/audit";
import { agentUrl, settleBackupJob, startBackup, unfinishedBackup } from "../backups/backups";
import { planById } from "../billing/plans";
import type { WorkContext } from "../context";
import { isUniqueViolation, type Database } from "../db/client";
import { insertWhere } from "../db/conditional-insert";
import { serverMigrations, servers, workloads, type HostDrain, type Job, type MigrationPhase, type Server, type ServerMigration } from "../db/schema";
import { ApiError, conflict, notFound } from "../errors";
import { continueDrain } from "../fleet/drains";
import { unfinishedServerExport } from "../exports/exports";
import { dispatchJob, requireHost } from "../fleet/hosts";
import { getJob, resultOf } from "../fleet/jobs";
import { logError } from "../logging";
import { enforceEntitlement } from "./entitlement-jobs";
import { acceptsCustomerData, hasRoomSql, takesPlacementsSql } from "./placement";
import { switchRoute } from "./routing";
import { homeserverSpec } from "./servers";

/**
 * Moving a homeserver to another host of its region, driven by its jobs' outcomes:
 *
 *   provisioning_target → stopping_source → backing_up → restoring_target → (route switched)
 *   → checking_target → destroying_source → succeeded
 *
 * The target is provisioned while the source still serves; downtime starts when the source is
 * told to stop, so that its final backup is consistent, and ends when the target passed its
 * health check. The server keeps its name; its signing key, secrets, database and media travel
 * in that backup. A failure before the switch starts the source again untouched (restarting_source;
 * not needed when only the target's provisioning failed) and removes the target's copy
 * (removing_target → failed). A failure of the target's check after the switch points the route
 * back and does the same: the source's copy is destroyed only once the target serves.
 *
 * Each step is a compare-and-set on the migration's current job: an outcome applied twice (the
 * host's Durable Object and the cron's recovery) moves it once.
 */

/** What the customer reads while their homeserver moves, and after a move that was rolled back. */
export const MOVING_REASON = "moving to another host";
export const MOVE_ROLLED_BACK_REASON = "a move to another host failed; the homeserver runs where it was, with its data as it was";
const MOVE_RESTART_FAILED_REASON = "a move to another host failed and the homeserver could not be started again; our operators have been told";

/** A step whose job was written but never sent (the Worker stopped in between) is treated as failed after this long. */
export const LOST_STEP_AFTER_MS = 10 * 60_000;

const UNFINISHED = isNull(serverMigrations.finishedAt);

/** How far along each forward phase is (its share of the progress bar) and what the customer reads. */
const PHASE_PROGRESS: Partial<Record<MigrationPhase, { from: number; to: number; message: string }>> = {
  provisioning_target: { from: 0, to: 0.2, message: "preparing its new host" },
  stopping_source: { from: 0.2, to: 0.3, message: "stopping it for a final backup" },
  backing_up: { from: 0.3, to: 0.55, message: "taking a final backup" },
  restoring_target: { from: 0.55, to: 0.8, message: "restoring it on its new host" },
  checking_target: { from: 0.8, to: 1, message: "checking it on its new host" },
  restarting_source: { from: 0, to: 1, message: "the move failed: starting it again where it was" },
};

export interface MigrationRequest {
  serverId: string;
  targetHostId: string;
  actor: Actor;
  /** The drain it belongs to: started only while the drain has a free slot. */
  drain?: HostDrain;
}

export async function unfinishedMigration(db: Database, serverId: string): Promise<ServerMigration | undefined> {
  const [row] = await db
    .select()
    .from(serverMigrations)
    .where(and(eq(serverMigrations.serverId, serverId), UNFINISHED));
  return row;
}

const alreadyMoving = () => conflict("already_moving", "This homeserver is being moved already.");

/**
 * Starts moving a running homeserver to `targetHostId`. The target's room is reserved in the
 * statement that records the migration (the same checks as placement: active, room for the
 * plan), so concurrent moves and placements cannot over-commit it; the reads before are for
 * clear answers only. Then the target provisions it beside the source, which keeps serving.
 */
export async function startMigration(ctx: WorkContext, request: MigrationRequest): Promise<ServerMigration> {
  const [server] = await ctx.db.select().from(servers).where(eq(servers.id, request.serverId));
  if (!server || server.status === "deleted") throw notFound("No such server.");
  if (server.status === "moving" || (await unfinishedMigration(ctx.db, server.id))) throw alreadyMoving();
  if (server.status !== "running" || !server.hostId) throw conflict("invalid_state", `The server is ${server.status}; only a running homeserver is moved.`);
  const target = await requireHost(ctx.db, request.targetHostId);
  const source = await requireHost(ctx.db, server.hostId);
  if (target.id === source.id) throw conflict("same_host", "The homeserver runs on that host already.");
  if (target.region !== server.region) throw conflict("other_region", `The homeserver is in ${server.region}; it moves only to a host of that region.`);
  if (target.status !== "online") throw conflict("host_offline", "The target host is not connected.");
  if (target.state !== "active") throw conflict("host_not_active", `The target host is ${target.state.replaceAll("_", " ")}: it takes no homeservers.`);
  if (!acceptsCustomerData(ctx.config, target))
    throw conflict("host_not_accepted", "Customer data may not go to the target host (its data root is not encrypted).");
  if (source.status !== "online") throw conflict("source_offline", "The homeserver's host is not connected: it cannot take the final backup.");
  if (await unfinishedBackup(ctx.db, server.id)) throw conflict("backup_running", "A backup of this homeserver is under way; move it when it has finished.");
  // The export reads the source's database and files; the host would hold the move's stop until it ended, past the step's deadline.
  if (await unfinishedServerExport(ctx.db, server.id))
    throw conflict("export_running", "An export of this homeserver is under way; move it when it has finished.");
  const plan = planById(server.planId);
  if (!plan) throw conflict("invalid_state", "The homeserver's plan is unknown.");

  const id = crypto.randomUUID();
  const provisionJobId = crypto.randomUUID();
  const stillRunningHere = sql`EXISTS (SELECT 1 FROM ${servers} WHERE ${servers.id} = ${server.id} AND ${servers.status} = 'running'
    AND ${servers.hostId} = ${source.id} AND ${servers.reservedOnHostId} IS NULL)`;
  const drainSlot = request.drain
    ? sql`(SELECT count(*) FROM ${serverMigrations} WHERE ${serverMigrations.drainId} = ${request.drain.id} AND ${serverMigrations.finishedAt} IS NULL) < ${request.drain.concurrency}`
    : undefined;
  const row = {
    id,
    serverId: server.id,
    sourceHostId: source.id,
    targetHostId: target.id,
    drainId: request.drain?.id ?? null,
    requestedBy: request.actor,
    phase: "provisioning_target" as const,
    currentJobId: provisionJobId,
    startedAt: ctx.now,
    updatedAt: ctx.now,
  };
  try {
    await ctx.db.batch([
      insertWhere(
        ctx.db,
        serverMigrations,
        row,
        and(stillRunningHere, takesPlacementsSql(target.id), hasRoomSql(target.id, plan, ctx.now, server.id), drainSlot)!,
      ),
      ctx.db
        .update(servers)
        .set({
          status: "moving",
          previousStatus: "running",
          statusReason: MOVING_REASON,
          // No lifecycle job while it moves: a late outcome of an earlier one changes nothing.
          lifecycleJobId: null,
          reservedOnHostId: target.id,
          updatedAt: ctx.now,
        })
        .where(and(eq(servers.id, server.id), sql`EXISTS (SELECT 1 FROM ${serverMigrations} WHERE ${serverMigrations.id} = ${id})`)),
    ]);
  } catch (error) {
    if (isUniqueViolation(error)) throw alreadyMoving();
    throw error;
  }
  const [started] = await ctx.db.select().from(serverMigrations).where(eq(serverMigrations.id, id));
  if (!started) {
    const [now] = await ctx.db.select({ status: servers.status }).from(servers).where(eq(servers.id, server.id));
    if (now?.status !== "running") throw conflict("invalid_state", "The server changed state meanwhile; try again.");
    throw conflict("no_capacity", "The target host has no room for this homeserver's plan (or stopped taking homeservers).");
  }
  await audit(ctx.db, ctx.now, request.actor, "migration.started", server.id, {
    migrationId: id,
    sourceHostId: source.id,
    targetHostId: target.id,
    ...(request.drain ? { drainId: request.drain.id } : {}),
  });
  await dispatchJob(
    ctx.db,
    ctx.env,
    { id: provisionJobId, hostId: target.id, kind: "homeserver.provision", payload: homeserverSpec(ctx.config, server, plan) },
    ctx.now,
  );
  return started;
}

/** True while the migration's current job is `jobId`: the condition that lets one step's writes through once. */
function stepOf(migrationId: string, jobId: string): SQL {
  return sql`EXISTS (SELECT 1 FROM ${serverMigrations} WHERE ${serverMigrations.id} = ${migrationId} AND ${serverMigrations.currentJobId} = ${jobId})`;
}

interface Step {
  phase: MigrationPhase;
  /** The migration's columns this step sets. */
  set?: Partial<ServerMigration>;
  /** The server's columns this step sets (with the migration's, or not at all). */
  server?: Partial<Server>;
  /** Where its workload's record now is (the switch, and a switch back). */
  workloadHostId?: string;
  audit?: Record<string, unknown>;
}

/**
 * Moves `migration` from its current job to `step`: in one batch, the migration (only if its
 * current job is still `migration.currentJobId`), the server and the workload (only if the
 * migration moved). Returns the new job's id, or null when another outcome moved it first.
 */
async function claimStep(ctx: WorkContext, migration: ServerMigration, step: Step): Promise<string | null> {
  const jobId = crypto.randomUUID();
  const current = migration.currentJobId === null ? isNull(serverMigrations.currentJobId) : eq(serverMigrations.currentJobId, migration.currentJobId);
  const claimed = stepOf(migration.id, jobId);
  const [moved] = await ctx.db.batch([
    ctx.db
      .update(serverMigrations)
      .set({ ...step.set, phase: step.phase, currentJobId: jobId, updatedAt: ctx.now })
      .where(and(eq(serverMigrations.id, migration.id), current, UNFINISHED))
      .returning(),
    ...(step.server
      ? [
          ctx.db
            .update(servers)
            .set({ ...step.server, updatedAt: ctx.now })
            .where(and(eq(servers.id, migration.serverId), claimed)),
        ]
      : []),
    ...(step.workloadHostId
      ? [
          ctx.db
            .update(workloads)
            .set({ hostId: step.workloadHostId, updatedAt: ctx.now })
            .where(and(eq(workloads.id, migration.serverId), claimed)),
        ]
      : []),
  ]);
  if (moved.length === 0) return null;
  await audit(ctx.db, ctx.now, "system", `migration.${step.phase}`, migration.serverId, { migrationId: migration.id, ...step.audit });
  return jobId;
}

/** Claims `step` and sends its job; false when another outcome moved the migration first. */
async function nextStep<K extends JobKind>(ctx: WorkContext, migration: ServerMigration, step: Step, job: { hostId: string; kind: K; payload: JobPayload<K> }) {
  const jobId = await claimStep(ctx, migration, step);
  if (jobId) await dispatchJob(ctx.db, ctx.env, { id: jobId, ...job }, ctx.now);
  return jobId !== null;
}

/**
 * A step after which the homeserver serves again, on the target or back on the source: it is
 * running, and billing's decisions taken while it moved (a suspension, say) apply now.
 */
async function servingAgain<K extends JobKind>(
  ctx: WorkContext,
  migration: ServerMigration,
  step: Step,
  job: { hostId: string; kind: K; payload: JobPayload<K> },
) {
  const serving = { ...step, server: { ...step.server, status: "running" as const, previousStatus: null } };
  if (await nextStep(ctx, migration, serving, job)) await enforceEntitlement(ctx, await serverOf(ctx, migration));
}

/** From the source told to stop until now (nothing when it never stopped). */
function downtimeOf(ctx: WorkContext, migration: ServerMigration): number {
  return migration.sourceStoppedAt ? ctx.now.getTime() - migration.sourceStoppedAt.getTime() : 0;
}

/** The migration ends: the second host's reservation is released, and its drain (if any) goes on. */
async function finish(ctx: WorkContext, migration: ServerMigration, phase: "succeeded" | "failed", error?: string): Promise<void> {
  const [finished] = await ctx.db.batch([
    ctx.db
      .update(serverMigrations)
      .set({ phase, currentJobId: null, finishedAt: ctx.now, updatedAt: ctx.now, ...(error ? { error: joinErrors(migration.error, error) } : {}) })
      .where(
        and(eq(serverMigrations.id, migration.id), migration.currentJobId ? eq(serverMigrations.currentJobId, migration.currentJobId) : undefined, UNFINISHED),
      )
      .returning(),
    ctx.db
      .update(servers)
      .set({ reservedOnHostId: null, updatedAt: ctx.now })
      .where(
        and(
          eq(servers.id, migration.serverId),
          // Once this one has finished (above), and unless a newer move holds a reservation of its own.
          sql`NOT EXISTS (SELECT 1 FROM ${serverMigrations} WHERE ${serverMigrations.serverId} = ${migration.serverId} AND ${serverMigrations.finishedAt} IS NULL)`,
        ),
      ),
  ]);
  if (finished.length === 0) return;
  await audit(ctx.db, ctx.now, "system", `migration.${phase}`, migration.serverId, { migrationId: migration.id, ...(error ? { reason: error } : {}) });
  // A finished migration frees its drain's slot for the next.
  if (migration.drainId) await continueDrain(ctx, migration.drainId);
}

function joinErrors(earlier: string | null, error: string): string {
  return (earlier ? `${earlier}; then ${error}` : error).slice(0, 2000);
}

async function serverOf(ctx: WorkContext, migration: ServerMigration): Promise<Server> {
  const [server] = await ctx.db.select().from(servers).where(eq(servers.id, migration.serverId));
  return server!;
}

/**
 * Applied when a job's outcome is recorded (before the lifecycle outcomes): true when the job was a
 * migration's current step, which then moves on or falls back.
 */
export async function applyMigrationOutcome(ctx: WorkContext, job: Job): Promise<boolean> {
  const [migration] = await ctx.db
    .select()
    .from(serverMigrations)
    .where(and(eq(serverMigrations.currentJobId, job.id), UNFINISHED));
  if (!migration) return false;
  if (job.kind === "homeserver.backup") {
    const backup = await settleBackupJob(ctx, job);
    if (backup?.status === "succeeded") await advance(ctx, migration, job);
    else await fallBack(ctx, migration, backup?.error ?? job.error ?? "the final backup failed");
    return true;
  }
  if (job.status === "succeeded") await advance(ctx, migration, job);
  else await fallBack(ctx, migration, job.error ?? "the job failed");
  return true;
}

/** The current step succeeded: the next one. */
async function advance(ctx: WorkContext, migration: ServerMigration, job: Job): Promise<void> {
  const { sourceHostId: source, targetHostId: target, serverId } = migration;
  switch (migration.phase) {
    case "provisioning_target":
      await nextStep(
        ctx,
        migration,
        { phase: "stopping_source", set: { sourceStoppedAt: ctx.now } },
        { hostId: source, kind: "homeserver.stop", payload: { serverId } },
      );
      return;
    case "stopping_source": {
      const jobId = await claimStep(ctx, migration, { phase: "backing_up" });
      if (!jobId) return;
      const claimed = { ...migration, phase: "backing_up" as const, currentJobId: jobId };
      try {
        const backup = await startBackup(ctx, await serverOf(ctx, migration), "migration", "system", jobId);
        await ctx.db.update(serverMigrations).set({ backupId: backup.id }).where(eq(serverMigrations.id, migration.id));
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        await fallBack(ctx, claimed, `the final backup could not start: ${error.message}`);
      }
      return;
    }
    case "backing_up": {
      const backupId = migration.backupId ?? job.backupId!;
      const payload = { serverId, backupId, downloadUrl: agentUrl(ctx.config, `/api/agent/backups/${backupId}/object`) };
      await nextStep(ctx, migration, { phase: "restoring_target", set: { backupId } }, { hostId: target, kind: "homeserver.restore", payload });
      return;
    }
    case "restoring_target": {
      const server = await serverOf(ctx, migration);
      try {
        await switchRoute(ctx, server, target);
      } catch (error) {
        logError("migration_switch_failed", error, { migrationId: migration.id });
        await fallBack(ctx, migration, "switching the route to the target failed");
        return;
      }
      await nextStep(
        ctx,
        migration,
        {
          phase: "checking_target",
          set: { switchedAt: ctx.now },
          server: { hostId: target, reservedOnHostId: source },
          workloadHostId: target,
        },
        { hostId: target, kind: "homeserver.start", payload: { serverId } },
      );
      return;
    }
    case "checking_target": {
      const result = resultOf(job, "homeserver.start");
      const downtimeMs = downtimeOf(ctx, migration);
      await servingAgain(
        ctx,
        migration,
        {
          phase: "destroying_source",
          set: { servingAt: ctx.now, downtimeMs },
          server: { statusReason: null, ...(result ? { synapseVersion: result.synapseVersion } : {}) },
          audit: { downtimeMs },
        },
        { hostId: source, kind: "homeserver.delete", payload: { serverId } },
      );
      return;
    }
    case "destroying_source":
      await finish(ctx, migration, "succeeded");
      return;
    case "restarting_source": {
      const downtimeMs = downtimeOf(ctx, migration);
      await servingAgain(
        ctx,
        migration,
        { phase: "removing_target", set: { downtimeMs }, server: { statusReason: MOVE_ROLLED_BACK_REASON }, audit: { downtimeMs } },
        { hostId: target, kind: "homeserver.delete", payload: { serverId } },
      );
      return;
    }
    case "removing_target":
      await finish(ctx, migration, "failed");
      return;
    case "succeeded":
    case "failed":
      return;
  }
}

/** The current step failed: back to where the homeserver was, or (once the target serves) on to the end, saying what was left. */
async function fallBack(ctx: WorkContext, migration: ServerMigration, reason: string): Promise<void> {
  const { sourceHostId: source, targetHostId: target, serverId } = migration;
  const error = joinErrors(migration.error, `${migration.phase}: ${reason}`);
  const removeTarget = { hostId: target, kind: "homeserver.delete" as const, payload: { serverId } };
  const restartSource = { hostId: source, kind: "homeserver.start" as const, payload: { serverId } };
  switch (migration.phase) {
    case "provisioning_target": {
      // The source was never touched: it runs on while the target's partial copy is removed.
      await servingAgain(
        ctx,
        migration,
        { phase: "removing_target", set: { error, downtimeMs: 0 }, server: { statusReason: MOVE_ROLLED_BACK_REASON }, audit: { reason } },
        removeTarget,
      );
      return;
    }
    case "stopping_source":
    case "backing_up":
    case "restoring_target":
      await nextStep(ctx, migration, { phase: "restarting_source", set: { error }, audit: { reason } }, restartSource);
      return;
    case "checking_target": {
      // The target never passed its check: the route goes back to the source, whose data is as it was when it stopped.
      try {
        await switchRoute(ctx, await serverOf(ctx, migration), source);
      } catch (switchError) {
        logError("migration_switch_back_failed", switchError, { migrationId: migration.id });
      }
      await nextStep(
        ctx,
        migration,
        {
          phase: "restarting_source",
          set: { error, switchedAt: null },
          server: { hostId: source, reservedOnHostId: target },
          workloadHostId: source,
          audit: { reason, routeSwitchedBack: true },
        },
        restartSource,
      );
      return;
    }
    case "restarting_source":
      await nextStep(
        ctx,
        migration,
        {
          phase: "removing_target",
          set: { error },
          server: { status: "failed", previousStatus: null, statusReason: MOVE_RESTART_FAILED_REASON },
          audit: { reason },
        },
        removeTarget,
      );
      return;
    case "destroying_source":
      await finish(ctx, migration, "succeeded", `the source's copy could not be destroyed: ${reason}`);
      return;
    case "removing_target":
      await finish(ctx, migration, "failed", `the target's copy could not be removed: ${reason}`);
      return;
    case "succeeded":
    case "failed":
      return;
  }
}

/**
 * The cron's backstop, so that no server stays `moving`: a migration whose current job finished
 * without its outcome being applied (the Worker stopped in between) moves on as the outcome
 * would have; one whose job is gone, or was never written, counts as failed and falls back.
 * Jobs past their deadline were failed (and applied) by the cron's first step.
 */
export async function recoverMigrations(ctx: WorkContext): Promise<number> {
  const open = await ctx.db.select().from(serverMigrations).where(UNFINISHED);
  let recovered = 0;
  for (const migration of open) {
    const job = migration.currentJobId ? await getJob(ctx.db, migration.currentJobId) : undefined;
    if (job && (job.status === "succeeded" || job.status === "failed")) {
      await applyMigrationOutcome(ctx, job);
      recovered++;
    } else if (!job && ctx.now.getTime() - migration.updatedAt.getTime() >= LOST_STEP_AFTER_MS) {
      await fallBack(ctx, migration, "its job was lost");
      recovered++;
    }
  }
  return recovered;
}

/** Migrations, newest first, for operators: of one drain, one server, or into or out of one host; or all. */
export async function listMigrations(
  db: Database,
  filter: { drainId?: string; serverId?: string; hostId?: string },
  limit: number,
): Promise<ServerMigration[]> {
  return db
    .select()
    .from(serverMigrations)
    .where(
      and(
        filter.drainId ? eq(serverMigrations.drainId, filter.drainId) : undefined,
        filter.serverId ? eq(serverMigrations.serverId, filter.serverId) : undefined,
        filter.hostId ? or(eq(serverMigrations.sourceHostId, filter.hostId), eq(serverMigrations.targetHostId, filter.hostId)) : undefined,
      ),
    )
    .orderBy(desc(serverMigrations.startedAt))
    .limit(limit);
}

/** A migration as operators see it: every step's time and the error in the host's words. */
export function presentMigration(migration: ServerMigration) {
  const iso = (date: Date | null) => date?.toISOString() ?? null;
  return {
    id: migration.id,
    serverId: migration.serverId,
    sourceHostId: migration.sourceHostId,
    targetHostId: migration.targetHostId,
    drainId: migration.drainId,
    requestedBy: migration.requestedBy,
    phase: migration.phase,
    currentJobId: migration.currentJobId,
    backupId: migration.backupId,
    error: migration.error,
    startedAt: migration.startedAt.toISOString(),
    sourceStoppedAt: iso(migration.sourceStoppedAt),
    switchedAt: iso(migration.switchedAt),
    servingAt: iso(migration.servingAt),
    finishedAt: iso(migration.finishedAt),
    downtimeMs: migration.downtimeMs,
  };
}

/**
 * What the owner sees of moves: `move` while the homeserver moves (how far along, in our words),
 * and `lastMove` once one ended (when, whether it moved or stayed, and the downtime).
 */
export async function movesForCustomer(db: Database, server: Server) {
  const [latest] = await db.select().from(serverMigrations).where(eq(serverMigrations.serverId, server.id)).orderBy(desc(serverMigrations.startedAt)).limit(1);
  const [lastFinished] =
    latest?.finishedAt || !latest
      ? [latest]
      : await db
          .select()
          .from(serverMigrations)
          .where(and(eq(serverMigrations.serverId, server.id), isNotNull(serverMigrations.finishedAt)))
          .orderBy(desc(serverMigrations.startedAt))
          .limit(1);
  return {
    move: server.status === "moving" && latest && !latest.finishedAt ? await moveProgress(db, latest) : null,
    lastMove: lastFinished?.finishedAt
      ? {
          finishedAt: lastFinished.finishedAt.toISOString(),
          outcome: lastFinished.phase === "succeeded" ? ("moved" as const) : ("stayed" as const),
          downtimeMs: lastFinished.downtimeMs,
        }
      : null,
  };
}

async function moveProgress(db: Database, migration: ServerMigration) {
  const share = PHASE_PROGRESS[migration.phase] ?? { from: 1, to: 1, message: "finishing" };
  const job = migration.currentJobId ? await getJob(db, migration.currentJobId) : undefined;
  const within = job?.progress ?? 0;
  return { progress: Math.round((share.from + (share.to - share.from) * within) * 100) / 100, message: share.message };
}
