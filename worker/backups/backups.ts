import { and, desc, eq, inArray } from "drizzle-orm";
import type { BackupCounts } from "../../protocol/jobs";
import { BACKUP_PART_SIZE } from "../../protocol/messages";
import { audit, type Actor } from "../audit/audit";
import type { WorkerConfig } from "../config";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { backups, hosts, type Backup, type BackupStatus, type BackupTrigger, type Job, type Server, type ServerStatus, type User } from "../db/schema";
import { consumeRateLimits } from "../auth/rate-limit";
import { conflict } from "../errors";
import { dispatchJob } from "../fleet/hosts";
import { resultOf } from "../fleet/jobs";
import { ownedServer } from "../servers/servers";
import { backupRecipient } from "./keys";

export const UNFINISHED_BACKUP: BackupStatus[] = ["pending", "running"];

/** The manifest (each part's size and SHA-256, and the total) sits beside the ciphertext in R2. */
export function manifestKeyOf(backup: Pick<Backup, "r2Key">): string {
  return backup.r2Key.replace(/\.age$/, ".manifest.json");
}

/**
 * An absolute URL on the Worker for agents. Always PUBLIC_URL: jobs made by
 * the cron have no request to take an origin from (development sets it to
 * the local Worker).
 */
export function agentUrl(config: WorkerConfig, path: string): string {
  return new URL(path, config.publicOrigin).toString();
}

export async function unfinishedBackup(db: Database, serverId: string): Promise<Backup | undefined> {
  const [row] = await db
    .select()
    .from(backups)
    .where(and(eq(backups.serverId, serverId), inArray(backups.status, UNFINISHED_BACKUP)));
  return row;
}

const backupRunning = () => conflict("backup_running", "A backup of this homeserver is under way; try again when it has finished.");

/** Work that needs the homeserver's host (a backup, a restore) is refused while that host is away. */
export async function requireOnlineHost(db: Database, server: Server): Promise<void> {
  const [host] = server.hostId ? await db.select({ status: hosts.status }).from(hosts).where(eq(hosts.id, server.hostId)) : [];
  if (host?.status !== "online") throw conflict("host_offline", "The homeserver's host is not connected right now; try again later.");
}

/**
 * Starts a backup of `server` on its host: the R2 multipart upload, the row,
 * then the `homeserver.backup` job. One backup per server is under way at a
 * time, which a partial unique index enforces against races. `jobId` is given
 * when a row written before must already name the job (a migration's step).
 */
export async function startBackup(ctx: WorkContext, server: Server, trigger: BackupTrigger, actor: Actor, jobId = crypto.randomUUID()): Promise<Backup> {
  if (await unfinishedBackup(ctx.db, server.id)) throw backupRunning();
  const recipient = await backupRecipient(ctx.db, ctx.config.backupKeyWrappingSecret, server.id, ctx.now);
  const id = crypto.randomUUID();
  const r2Key = `backups/${server.id}/${id}.age`;
  const upload = await ctx.env.BACKUPS.createMultipartUpload(r2Key, {
    httpMetadata: { contentType: "application/octet-stream" },
    customMetadata: { serverId: server.id, backupId: id },
  });
  const row = {
    id,
    serverId: server.id,
    hostId: server.hostId!,
    trigger,
    status: "pending" as const,
    r2Key,
    uploadId: upload.uploadId,
    partSize: BACKUP_PART_SIZE,
    jobId,
    createdAt: ctx.now,
  };
  try {
    await ctx.db.batch([ctx.db.insert(backups).values(row), audit(ctx.db, ctx.now, actor, "backup.requested", server.id, { backupId: id, trigger })]);
  } catch (error) {
    await upload.abort();
    if (String(error).includes("UNIQUE")) throw backupRunning();
    throw error;
  }
  const payload = { serverId: server.id, backupId: id, recipient, partSize: row.partSize, uploadBase: agentUrl(ctx.config, `/api/agent/backups/${id}`) };
  await dispatchJob(ctx.db, ctx.env, { id: row.jobId, hostId: row.hostId, kind: "homeserver.backup", payload }, ctx.now);
  return (await backupById(ctx.db, id))!;
}

const SERVER_WORK = { backup_server: "backups", restore_server: "restores", export_server: "exports" } as const;

/**
 * Counts one more backup, restore or export asked for this homeserver, or throws 429 once it has
 * had its few an hour: each is heavy work on a host that runs other customers' homeservers too.
 */
export async function throttleServerWork(ctx: WorkContext, server: Server, work: keyof typeof SERVER_WORK): Promise<void> {
  const rules = ctx.config.rateLimits;
  const what = SERVER_WORK[work];
  await consumeRateLimits(
    ctx.db,
    rules,
    [{ name: work, subject: server.id }],
    ctx.now,
    (seconds) => `This homeserver has had its ${rules[work].limit} ${what} an hour; try again in ${Math.ceil(seconds / 60)} minutes.`,
  );
}

const BACKUP_FROM: ServerStatus[] = ["running", "stopped"];

/** A backup the owner asks for: of a running or stopped homeserver whose host is connected. */
export async function requestBackup(ctx: WorkContext, user: User, serverId: string): Promise<Backup> {
  const server = await ownedServer(ctx.db, user.id, serverId);
  if (!BACKUP_FROM.includes(server.status)) {
    throw conflict("invalid_state", `The server is ${server.status}; a backup can be taken when it is ${BACKUP_FROM.join(" or ")}.`);
  }
  await requireOnlineHost(ctx.db, server);
  await throttleServerWork(ctx, server, "backup_server");
  return startBackup(ctx, server, "manual", `user:${user.id}`);
}

export async function backupById(db: Database, id: string): Promise<Backup | undefined> {
  const [row] = await db.select().from(backups).where(eq(backups.id, id));
  return row;
}

/** A server's backups, newest first. */
export async function listBackups(db: Database, serverId: string): Promise<Backup[]> {
  return db.select().from(backups).where(eq(backups.serverId, serverId)).orderBy(desc(backups.createdAt));
}

/**
 * Gives up an unfinished backup: its multipart upload is aborted (R2 drops
 * the parts) and it is marked failed, never succeeded. A backup that finished
 * meanwhile is left as it is.
 */
export async function failBackup(ctx: WorkContext, backup: Backup, reason: string, actor: Actor): Promise<Backup> {
  const [failed] = await ctx.db
    .update(backups)
    .set({ status: "failed", error: reason.slice(0, 1000), completedAt: ctx.now })
    .where(and(eq(backups.id, backup.id), inArray(backups.status, UNFINISHED_BACKUP)))
    .returning();
  if (!failed) return (await backupById(ctx.db, backup.id))!;
  try {
    await ctx.env.BACKUPS.resumeMultipartUpload(backup.r2Key, backup.uploadId).abort();
  } catch (error) {
    // Already aborted or expired: either way its parts are gone.
    console.warn(JSON.stringify({ event: "backup_abort_failed", backupId: backup.id, message: String(error) }));
  }
  await audit(ctx.db, ctx.now, actor, "backup.failed", backup.serverId, { backupId: backup.id, reason: failed.error });
  return failed;
}

async function recordBackupCounts(ctx: WorkContext, backup: Backup, counts: BackupCounts | undefined): Promise<Backup> {
  if (!counts) return backup;
  const [recorded] = await ctx.db
    .update(backups)
    .set({ userCount: counts.users, roomCount: counts.rooms, eventCount: counts.events, mediaFileCount: counts.mediaFiles })
    .where(eq(backups.id, backup.id))
    .returning();
  return recorded ?? backup;
}

/** Why a backup whose job ended (or never ran) without completing its upload failed: our words, not the agent's. */
export const UPLOAD_NOT_COMPLETED = "the backup job ended without completing the upload";

/**
 * After its job ended: a backup the job left unfinished has failed, whatever the job reported; a
 * completed one keeps the counts its host measured (the manifest a restore verification checks).
 */
export async function settleBackupJob(ctx: WorkContext, job: Job): Promise<Backup | undefined> {
  const backup = job.backupId ? await backupById(ctx.db, job.backupId) : undefined;
  if (!backup || backup.hostId !== job.hostId) return backup;
  if (backup.status === "succeeded") return recordBackupCounts(ctx, backup, resultOf(job, "homeserver.backup")?.counts);
  if (!UNFINISHED_BACKUP.includes(backup.status)) return backup;
  const reason = job.status === "failed" ? (job.error ?? "the backup job failed") : UPLOAD_NOT_COMPLETED;
  return failBackup(ctx, backup, reason, "system");
}
