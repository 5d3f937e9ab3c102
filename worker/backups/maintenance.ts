import { and, eq, gt, gte, inArray, isNotNull, isNull, lt, ne, notExists, notInArray, or, type SQL } from "drizzle-orm";
import { alias } from "drizzle-orm/sqlite-core";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { auditLog, backups, jobs, servers, type Backup, type Server, type ServerStatus } from "../db/schema";
import { logError } from "../logging";
import { failBackup, manifestKeyOf, startBackup, UNFINISHED_BACKUP, UPLOAD_NOT_COMPLETED } from "./backups";
import { audit } from "../audit/audit";
import {
  BACKUP_LATE_AFTER_MS,
  BACKUP_OVERDUE_AFTER_MS,
  BACKUP_OVERDUE_REALERT_MS,
  BACKUP_RETENTION_MS,
  DAILY_BACKUP_SKIP_MS,
  ORPHANED_BACKUP_AFTER_MS,
} from "./policy";

// What the hourly cron does for backups: the daily schedule, retention, and giving up abandoned uploads.

const BACKED_UP_DAILY: ServerStatus[] = ["running", "stopped", "suspended"];

/** The hour of the day (UTC) a server's daily backup starts: a stable hash of its id spreads servers across the day. */
export function dailyBackupHour(serverId: string): number {
  return serverSpread(serverId) % 24;
}

/** A stable, well-spread number per server (FNV-1a: cheap), from which its work's hours and days are taken. */
export function serverSpread(serverId: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < serverId.length; i++) hash = Math.imul(hash ^ serverId.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

/**
 * Enqueues the daily backup of each server whose hour this is, unless one
 * succeeded or is under way within the last 20 hours (a manual one, say).
 * Suspended servers are backed up too: their data is kept until deletion.
 */
export async function scheduleDailyBackups(ctx: WorkContext): Promise<number> {
  const since = new Date(ctx.now.getTime() - DAILY_BACKUP_SKIP_MS);
  const recent = ctx.db
    .select({ serverId: backups.serverId })
    .from(backups)
    .where(and(gt(backups.createdAt, since), inArray(backups.status, ["succeeded", ...UNFINISHED_BACKUP])));
  const candidates = await ctx.db
    .select()
    .from(servers)
    .where(and(inArray(servers.status, BACKED_UP_DAILY), isNotNull(servers.hostId), notInArray(servers.id, recent)));
  let started = 0;
  for (const server of candidates.filter((candidate) => dailyBackupHour(candidate.id) === ctx.now.getUTCHours())) {
    try {
      await startBackup(ctx, server, "scheduled", "system");
      started++;
    } catch (error) {
      // One server's trouble must not cost the others their backup.
      logError("scheduled_backup_failed", error, { serverId: server.id });
    }
  }
  return started;
}

/** When retention deletes a backup; null while it is past that age but kept as its server's newest successful backup. */
export function keptUntil(backup: Backup, newestSucceededId: string | undefined, now: Date): Date | null {
  const until = new Date(backup.createdAt.getTime() + BACKUP_RETENTION_MS);
  return backup.id === newestSucceededId && until <= now ? null : until;
}

/** Backups of `status` that are their server's newest of that status. */
function newestOfStatus(db: Database, status: Backup["status"]): SQL {
  const newer = alias(backups, "newer");
  return and(
    eq(backups.status, status),
    notExists(
      db
        .select({ id: newer.id })
        .from(newer)
        .where(and(eq(newer.serverId, backups.serverId), eq(newer.status, status), gt(newer.createdAt, backups.createdAt))),
    ),
  )!;
}

/** Each server's (or one server's) newest successful backup, except deleted servers': theirs age out like the rest. */
function newestSucceededBackups(db: Database, serverId?: string) {
  return db
    .select({ id: backups.id })
    .from(backups)
    .innerJoin(servers, eq(servers.id, backups.serverId))
    .where(and(newestOfStatus(db, "succeeded"), ne(servers.status, "deleted"), serverId ? eq(backups.serverId, serverId) : undefined));
}

/** The newest backup of `status` of each server `condition` selects, by server, in one query. */
async function newestBackupsOf(db: Database, status: Backup["status"], condition: SQL): Promise<Map<string, Backup>> {
  const rows = await db
    .select({ backup: backups })
    .from(backups)
    .innerJoin(servers, eq(servers.id, backups.serverId))
    .where(and(newestOfStatus(db, status), condition));
  return new Map(rows.map(({ backup }) => [backup.serverId, backup]));
}

/**
 * Servers backed up daily, made before `since`, without a successful backup since then: the
 * condition of late backups (operators' pages) and overdue ones (alerts).
 */
function withoutSuccessSince(db: Database, since: Date): SQL {
  const recentSuccess = db
    .select({ serverId: backups.serverId })
    .from(backups)
    .where(and(eq(backups.status, "succeeded"), gte(backups.createdAt, since)));
  return and(inArray(servers.status, BACKED_UP_DAILY), isNotNull(servers.hostId), lt(servers.createdAt, since), notInArray(servers.id, recentSuccess))!;
}

/** The newest successful and failed backups of the servers `condition` selects. */
async function backupHistories(db: Database, condition: SQL) {
  const [succeeded, failed] = await Promise.all([newestBackupsOf(db, "succeeded", condition), newestBackupsOf(db, "failed", condition)]);
  return { succeeded, failed };
}

export async function newestSucceededBackupId(db: Database, serverId: string): Promise<string | undefined> {
  const [row] = await newestSucceededBackups(db, serverId);
  return row?.id;
}

/**
 * 30-day rolling retention: finished backups older than 30 days are deleted,
 * their R2 objects first, then their rows. A server's newest successful
 * backup is always kept (a suspended server's, say), and so is any backup a
 * restore is reading.
 */
export async function pruneBackups(ctx: WorkContext): Promise<number> {
  const restoring = ctx.db
    .select({ id: jobs.backupId })
    .from(jobs)
    .where(and(eq(jobs.kind, "homeserver.restore"), inArray(jobs.status, ["queued", "sent", "acked"]), isNotNull(jobs.backupId)));
  const expired = await ctx.db
    .select()
    .from(backups)
    .where(
      and(
        lt(backups.createdAt, new Date(ctx.now.getTime() - BACKUP_RETENTION_MS)),
        inArray(backups.status, ["succeeded", "failed"]),
        notInArray(backups.id, newestSucceededBackups(ctx.db)),
        notInArray(backups.id, restoring),
      ),
    )
    .limit(500);
  if (expired.length === 0) return 0;
  await ctx.env.BACKUPS.delete(expired.flatMap((backup) => [backup.r2Key, manifestKeyOf(backup)]));
  await ctx.db.delete(backups).where(
    inArray(
      backups.id,
      expired.map((backup) => backup.id),
    ),
  );
  return expired.length;
}

/**
 * The backstop for uploads nobody will finish: an unfinished backup whose job
 * has ended (or was never written) is aborted and failed. Job outcomes do
 * this as they happen; this catches what they missed.
 */
export async function failAbandonedBackups(ctx: WorkContext): Promise<number> {
  const abandoned = await ctx.db
    .select({ backup: backups, jobError: jobs.error })
    .from(backups)
    .leftJoin(jobs, eq(jobs.id, backups.jobId))
    .where(
      and(
        inArray(backups.status, UNFINISHED_BACKUP),
        or(inArray(jobs.status, ["succeeded", "failed"]), and(isNull(jobs.id), lt(backups.createdAt, new Date(ctx.now.getTime() - ORPHANED_BACKUP_AFTER_MS)))),
      ),
    );
  for (const { backup, jobError } of abandoned) {
    await failBackup(ctx, backup, jobError ?? UPLOAD_NOT_COMPLETED, "system");
  }
  return abandoned.length;
}

/**
 * Operators hear about a homeserver whose backups keep failing (or never
 * start): no successful backup for two days raises an alert — an audit entry
 * and a warning log line, repeated daily while it lasts — naming the server,
 * its host, its last success and its last failure's reason.
 */
export async function alertOverdueBackups(ctx: WorkContext): Promise<number> {
  const recentAlert = ctx.db
    .select({ serverId: auditLog.target })
    .from(auditLog)
    .where(and(eq(auditLog.action, "backup.overdue"), gt(auditLog.at, new Date(ctx.now.getTime() - BACKUP_OVERDUE_REALERT_MS))));
  const condition = and(withoutSuccessSince(ctx.db, new Date(ctx.now.getTime() - BACKUP_OVERDUE_AFTER_MS)), notInArray(servers.id, recentAlert))!;
  const overdue = await ctx.db.select().from(servers).where(condition);
  const newest = await backupHistories(ctx.db, condition);
  for (const server of overdue) {
    const detail = {
      hostId: server.hostId,
      lastSucceededAt: newest.succeeded.get(server.id)?.createdAt.toISOString() ?? null,
      lastFailure: newest.failed.get(server.id)?.error ?? null,
    };
    console.warn(JSON.stringify({ event: "backup_overdue", serverId: server.id, ...detail }));
    await audit(ctx.db, ctx.now, "system", "backup.overdue", server.id, detail);
  }
  return overdue.length;
}

export interface LateBackup {
  server: Server;
  /** When its newest successful backup was taken, or null when none ever succeeded. */
  lastSucceededAt: Date | null;
  /** Its newest failed backup since then, if any: when, and why. */
  lastFailure: { at: Date; error: string | null } | null;
}

/**
 * Homeservers backed up daily whose last successful backup is older than 26 hours (or that have
 * none, once they are that old), the longest waiting first (since that backup, or since they were
 * made): for operators' pages, ahead of the two-day alert.
 */
export async function lateBackups(db: Database, now: Date): Promise<LateBackup[]> {
  const condition = withoutSuccessSince(db, new Date(now.getTime() - BACKUP_LATE_AFTER_MS));
  const late = await db.select().from(servers).where(condition);
  const newest = await backupHistories(db, condition);
  const rows = late.map((server) => {
    const lastSucceededAt = newest.succeeded.get(server.id)?.createdAt ?? null;
    const failure = newest.failed.get(server.id);
    // Only a failure since that success says why it is late.
    const lastFailure = failure && (!lastSucceededAt || failure.createdAt > lastSucceededAt) ? { at: failure.createdAt, error: failure.error } : null;
    return { server, lastSucceededAt, lastFailure };
  });
  const waitingSince = (row: LateBackup) => (row.lastSucceededAt ?? row.server.createdAt).getTime();
  return rows.sort((a, b) => waitingSince(a) - waitingSince(b));
}
