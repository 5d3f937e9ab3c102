import { and, desc, eq, gt, inArray, isNotNull, lt, notInArray, or } from "drizzle-orm";
import { audit } from "../audit/audit";
import { dailyBackupHour } from "../backups/maintenance";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { jobs, servers, upkeepRuns, type Job, type Server, type UpkeepRun } from "../db/schema";
import { dispatchJob } from "../fleet/hosts";
import { payloadOf, resultOf } from "../fleet/jobs";
import { logError } from "../logging";
import { settingsOf } from "./settings";

// Database and media upkeep (homeserver.upkeep, agent/homeserver/upkeep.ts): scheduled daily, its sizes recorded.

const HOUR = 60 * 60_000;
const DAY = 24 * HOUR;

/**
 * Cached copies of other homeservers' media not fetched for this many days are deleted by upkeep,
 * unless the owner set a media retention of their own (settings): then theirs. Synapse fetches
 * them again when someone asks; the homeserver's own uploads are never touched by upkeep.
 */
export const REMOTE_MEDIA_RETENTION_DAYS = 30;

/** What a server's upkeep keeps of cached remote media, in days. */
export const remoteMediaRetentionDays = (server: Server) => settingsOf(server).mediaRetentionDays ?? REMOTE_MEDIA_RETENTION_DAYS;
/** Upkeep is not sent again while one was sent this recently (a repeated run of the hourly cron, a retry the day before). */
const UPKEEP_SKIP_MS = 20 * HOUR;
/** Upkeep records are kept as long as the hourly usage figures: a year. */
export const UPKEEP_RECORD_RETENTION_MS = 365 * DAY;

/** The hour of the day (UTC) a server's upkeep runs: twelve hours from its backup, so the two never load its host together. */
export function dailyUpkeepHour(serverId: string): number {
  return (dailyBackupHour(serverId) + 12) % 24;
}

/**
 * Sends the daily upkeep of each running homeserver whose hour this is, unless
 * one is under way or was sent within the last 20 hours. Upkeep needs Synapse
 * and PostgreSQL up: a stopped, suspended or busy (starting, restoring…) one waits for tomorrow.
 */
export async function scheduleDailyUpkeep(ctx: WorkContext): Promise<number> {
  const recent = ctx.db
    .select({ serverId: jobs.serverId })
    .from(jobs)
    .where(
      and(
        eq(jobs.kind, "homeserver.upkeep"),
        isNotNull(jobs.serverId),
        or(inArray(jobs.status, ["queued", "sent", "acked"]), gt(jobs.createdAt, new Date(ctx.now.getTime() - UPKEEP_SKIP_MS))),
      ),
    );
  const candidates = await ctx.db
    .select()
    .from(servers)
    .where(and(eq(servers.status, "running"), isNotNull(servers.hostId), notInArray(servers.id, recent)));
  let sent = 0;
  for (const server of candidates.filter((candidate) => dailyUpkeepHour(candidate.id) === ctx.now.getUTCHours())) {
    try {
      await dispatchJob(
        ctx.db,
        ctx.env,
        { hostId: server.hostId!, kind: "homeserver.upkeep", payload: { serverId: server.id, remoteMediaRetentionDays: remoteMediaRetentionDays(server) } },
        ctx.now,
      );
      sent++;
    } catch (error) {
      // One server's trouble must not cost the others their upkeep.
      logError("scheduled_upkeep_failed", error, { serverId: server.id });
    }
  }
  return sent;
}

/**
 * Records a finished upkeep: its sizes for the server's owner, and an audit
 * entry (sizes only). A result counts only for the server its job was sent
 * about, and only while that server is on the host that answered: a host
 * cannot write figures into another customer's record.
 */
export async function applyUpkeepOutcome(ctx: WorkContext, job: Job): Promise<void> {
  const payload = payloadOf(job, "homeserver.upkeep");
  if (!payload) return;
  const result = resultOf(job, "homeserver.upkeep");
  if (!result) {
    await audit(ctx.db, ctx.now, "system", "server.upkeep_failed", payload.serverId, { reason: job.error });
    return;
  }
  if (result.serverId !== payload.serverId) return;
  const [server] = await ctx.db
    .select({ id: servers.id })
    .from(servers)
    .where(and(eq(servers.id, payload.serverId), eq(servers.hostId, job.hostId)));
  if (!server) return;
  const run = {
    jobId: job.id,
    serverId: server.id,
    databaseBytesBefore: result.before.databaseBytes,
    databaseBytesAfter: result.after.databaseBytes,
    stateGroupsStateRowsBefore: result.before.stateGroupsStateRows,
    stateGroupsStateRowsAfter: result.after.stateGroupsStateRows,
    mediaBytesBefore: result.before.mediaBytes,
    mediaBytesAfter: result.after.mediaBytes,
    remoteMediaDeleted: result.remoteMediaDeleted,
    compressorMs: result.compressorMs,
    finishedAt: job.finishedAt ?? ctx.now,
  };
  await ctx.db.batch([
    ctx.db.insert(upkeepRuns).values(run).onConflictDoNothing(),
    audit(ctx.db, ctx.now, "system", "server.upkeep_done", server.id, {
      databaseBytes: [run.databaseBytesBefore, run.databaseBytesAfter],
      stateGroupsStateRows: [run.stateGroupsStateRowsBefore, run.stateGroupsStateRowsAfter],
      mediaBytes: [run.mediaBytesBefore, run.mediaBytesAfter],
      remoteMediaDeleted: run.remoteMediaDeleted,
    }),
  ]);
}

export async function lastUpkeep(db: Database, serverId: string): Promise<UpkeepRun | undefined> {
  const [run] = await db.select().from(upkeepRuns).where(eq(upkeepRuns.serverId, serverId)).orderBy(desc(upkeepRuns.finishedAt)).limit(1);
  return run;
}

export async function pruneUpkeepRuns(db: Database, now: Date): Promise<number> {
  const pruned = await db
    .delete(upkeepRuns)
    .where(lt(upkeepRuns.finishedAt, new Date(now.getTime() - UPKEEP_RECORD_RETENTION_MS)))
    .returning({ jobId: upkeepRuns.jobId });
  return pruned.length;
}
