import { and, asc, eq, inArray, sql } from "drizzle-orm";
import type { BackupCompleteRequest, BackupPartReceipt } from "../../protocol/messages";
import { audit } from "../audit/audit";
import { backupParts, backups, type Backup } from "../db/schema";
import { conflict, forbidden, notFound } from "../errors";
import { unfinishedJobsOfKind } from "../fleet/jobs";
import { assembleParts, storePart, type AgentUploadContext } from "../uploads/parts";
import { backupById, failBackup, manifestKeyOf, UNFINISHED_BACKUP } from "./backups";

// What agents do with backups, over signed HTTP: upload the ciphertext of one
// of their own host's backups in parts while it is unfinished, complete or
// abort it, and download one they are restoring. No agent can delete a backup
// or touch another host's.

async function ownBackup(ctx: AgentUploadContext, backupId: string): Promise<Backup> {
  const [backup] = await ctx.db
    .select()
    .from(backups)
    .where(and(eq(backups.id, backupId), eq(backups.hostId, ctx.host.id)));
  if (!backup) throw notFound("No such backup.");
  return backup;
}

function requireUnfinished(backup: Backup): Backup {
  if (!UNFINISHED_BACKUP.includes(backup.status)) throw conflict("backup_finished", `This backup has ${backup.status}; it takes no more uploads.`);
  return backup;
}

/**
 * Streams one part into the backup's R2 multipart upload while hashing it,
 * and records its size, SHA-256 and etag; the same part number sent again
 * (a retry) replaces it.
 */
export async function receivePart(
  ctx: AgentUploadContext,
  backupId: string,
  partNumber: number,
  body: ReadableStream<Uint8Array> | null,
  size: number,
  signedSha256: string,
): Promise<BackupPartReceipt> {
  const backup = requireUnfinished(await ownBackup(ctx, backupId));
  const recorded = await ctx.db.select().from(backupParts).where(eq(backupParts.backupId, backup.id));
  const forget = () => ctx.db.delete(backupParts).where(and(eq(backupParts.backupId, backup.id), eq(backupParts.partNumber, partNumber)));
  const { sha256, etag } = await storePart(ctx, backup, recorded, { partNumber, body, size, signedSha256 }, forget);

  await ctx.db.batch([
    ctx.db
      .insert(backupParts)
      .values({ backupId: backup.id, partNumber, size, sha256, etag, uploadedAt: ctx.now })
      .onConflictDoUpdate({ target: [backupParts.backupId, backupParts.partNumber], set: { size, sha256, etag, uploadedAt: ctx.now } }),
    ctx.db
      .update(backups)
      .set({
        status: "running",
        startedAt: sql`coalesce(${backups.startedAt}, ${ctx.now.getTime()})`,
        progressBytes: sql`(SELECT coalesce(sum(${backupParts.size}), 0) FROM ${backupParts} WHERE ${backupParts.backupId} = ${backup.id})`,
      })
      .where(and(eq(backups.id, backup.id), inArray(backups.status, UNFINISHED_BACKUP))),
  ]);
  return { partNumber, size, sha256 };
}

/**
 * Completes the upload once the agent's list matches what was received, part
 * by part: R2 assembles the object, the manifest is written beside it and to
 * D1, and the backup has succeeded. Repeating a completion that went through
 * (a retry after a lost answer) returns the backup unchanged.
 */
export async function completeBackup(ctx: AgentUploadContext, backupId: string, claimed: BackupCompleteRequest): Promise<Backup> {
  const backup = await ownBackup(ctx, backupId);
  if (backup.status === "succeeded" && backup.sizeBytes === claimed.size && backup.sha256 === claimed.sha256) return backup;
  requireUnfinished(backup);
  const received = await ctx.db
    .select({ partNumber: backupParts.partNumber, size: backupParts.size, sha256: backupParts.sha256, etag: backupParts.etag })
    .from(backupParts)
    .where(eq(backupParts.backupId, backup.id))
    .orderBy(asc(backupParts.partNumber));
  const parts = await assembleParts(ctx, backup, received, claimed);
  const manifest = {
    format: 1,
    backupId: backup.id,
    serverId: backup.serverId,
    createdAt: backup.createdAt.toISOString(),
    encryption: "age (X25519)",
    partSize: backup.partSize,
    size: claimed.size,
    sha256: claimed.sha256,
    parts,
  };
  await ctx.env.BACKUPS.put(manifestKeyOf(backup), JSON.stringify(manifest, null, 2), { httpMetadata: { contentType: "application/json" } });
  const [succeeded] = await ctx.db.batch([
    ctx.db
      .update(backups)
      .set({ status: "succeeded", sizeBytes: claimed.size, sha256: claimed.sha256, parts, progressBytes: claimed.size, error: null, completedAt: ctx.now })
      .where(and(eq(backups.id, backup.id), inArray(backups.status, UNFINISHED_BACKUP)))
      .returning(),
    audit(ctx.db, ctx.now, `host:${ctx.host.id}`, "backup.succeeded", backup.serverId, { backupId: backup.id, size: claimed.size, parts: parts.length }),
  ]);
  return succeeded[0] ?? (await backupById(ctx.db, backup.id))!;
}

/** The agent gives up: the parts are discarded and the backup has failed. */
export async function abortBackup(ctx: AgentUploadContext, backupId: string, reason: string): Promise<Backup> {
  const backup = requireUnfinished(await ownBackup(ctx, backupId));
  return failBackup(ctx, backup, `aborted by the host: ${reason}`, `host:${ctx.host.id}`);
}

/** The ciphertext of a successful backup, for the host that has an unfinished restore (or restore verification) job for it (any host: restores may move). */
export async function openBackupForRestore(ctx: AgentUploadContext, backupId: string): Promise<R2ObjectBody> {
  const backup = await backupById(ctx.db, backupId);
  if (backup?.status !== "succeeded") throw notFound("No such backup.");
  const restoring = (await unfinishedJobsOfKind(ctx.db, ctx.host.id, ["homeserver.restore", "homeserver.restore_verify"])).some(
    (job) => job.backupId === backup.id,
  );
  if (!restoring) throw forbidden("not_restoring", "Only a host with a restore job for this backup may download it.");
  const object = await ctx.env.BACKUPS.get(backup.r2Key);
  if (!object) throw notFound("The backup's object is missing.");
  return object;
}
