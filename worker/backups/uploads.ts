import { and, asc, eq, inArray, sql } from "drizzle-orm";
import type { BackupCompleteRequest, BackupPartReceipt } from "../../protocol/messages";
import { audit } from "../audit/audit";
import type { WorkContext } from "../context";
import { hex } from "../crypto/bytes";
import { backupParts, backups, type Backup, type BackupManifestPart, type Host } from "../db/schema";
import { ApiError, badRequest, conflict, forbidden, notFound } from "../errors";
import { unfinishedJobsOfKind } from "../fleet/jobs";
import { backupById, failBackup, manifestKeyOf, UNFINISHED_BACKUP } from "./backups";

/**
 * What agents do with backups, over signed HTTP: upload the ciphertext of one
 * of their own host's backups in parts while it is unfinished, complete or
 * abort it, and download one they are restoring. No agent can delete a backup
 * or touch another host's.
 */
export interface AgentBackupContext extends WorkContext {
  host: Host;
  /** Refuses the request after all: its streamed body was not the one signed, so it proves nothing. */
  refuseRequest(reason: "body does not match its signed digest"): Promise<ApiError>;
}

async function ownBackup(ctx: AgentBackupContext, backupId: string): Promise<Backup> {
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
 * (a retry) replaces it. Every part but the last has exactly the backup's
 * part size, so a short part can be followed by none.
 */
export async function receivePart(
  ctx: AgentBackupContext,
  backupId: string,
  partNumber: number,
  body: ReadableStream<Uint8Array> | null,
  size: number,
  signedSha256: string,
): Promise<BackupPartReceipt> {
  const backup = requireUnfinished(await ownBackup(ctx, backupId));
  const recorded = await ctx.db.select().from(backupParts).where(eq(backupParts.backupId, backup.id));
  const shortBefore = recorded.some((part) => part.partNumber < partNumber && part.size < backup.partSize);
  const anyAfter = recorded.some((part) => part.partNumber > partNumber);
  if (!body || size < 1 || size > backup.partSize || shortBefore || (size < backup.partSize && anyAfter)) {
    throw badRequest("invalid_part_size", `Every part but the last has exactly ${backup.partSize} bytes, and the last at most that.`);
  }

  const digest = new crypto.DigestStream("SHA-256");
  const [toR2, toDigest] = body.tee();
  const upload = ctx.env.BACKUPS.resumeMultipartUpload(backup.r2Key, backup.uploadId);
  let etag: string;
  try {
    [{ etag }] = await Promise.all([upload.uploadPart(partNumber, toR2.pipeThrough(new FixedLengthStream(size))), toDigest.pipeTo(digest)]);
  } catch {
    // A body cut short (the agent's connection dropped) or R2 failing: either way the part is to be sent again.
    await forgetPart(ctx, backup.id, partNumber);
    throw new ApiError(503, "part_not_stored", "The part could not be stored; send it again.");
  }
  const sha256 = hex(new Uint8Array(await digest.digest));
  if (sha256 !== signedSha256) {
    // R2 now holds these bytes under this number: the part must be sent again.
    await forgetPart(ctx, backup.id, partNumber);
    throw await ctx.refuseRequest("body does not match its signed digest");
  }

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

function forgetPart(ctx: AgentBackupContext, backupId: string, partNumber: number) {
  return ctx.db.delete(backupParts).where(and(eq(backupParts.backupId, backupId), eq(backupParts.partNumber, partNumber)));
}

/** Why the agent's list of parts is not what the Worker received, or null when it is. */
function manifestProblem(partSize: number, received: BackupManifestPart[], claimed: BackupCompleteRequest): string | null {
  if (claimed.parts.length !== received.length) return `The Worker holds ${received.length} part(s); the list names ${claimed.parts.length}.`;
  for (const [index, part] of received.entries()) {
    const listed = claimed.parts[index]!;
    if (part.partNumber !== index + 1 || listed.partNumber !== index + 1) return "Parts must be numbered from 1 without gaps.";
    if (listed.size !== part.size || listed.sha256 !== part.sha256) return `Part ${part.partNumber} is not what the Worker received.`;
    if (index < received.length - 1 && part.size !== partSize) return `Part ${part.partNumber} is short but not the last.`;
  }
  const total = received.reduce((sum, part) => sum + part.size, 0);
  if (total !== claimed.size) return `The parts add up to ${total} bytes, not ${claimed.size}.`;
  return null;
}

/**
 * Completes the upload once the agent's list matches what was received, part
 * by part: R2 assembles the object, the manifest is written beside it and to
 * D1, and the backup has succeeded. Repeating a completion that went through
 * (a retry after a lost answer) returns the backup unchanged.
 */
export async function completeBackup(ctx: AgentBackupContext, backupId: string, claimed: BackupCompleteRequest): Promise<Backup> {
  const backup = await ownBackup(ctx, backupId);
  if (backup.status === "succeeded" && backup.sizeBytes === claimed.size && backup.sha256 === claimed.sha256) return backup;
  requireUnfinished(backup);
  const received = await ctx.db
    .select({ partNumber: backupParts.partNumber, size: backupParts.size, sha256: backupParts.sha256, etag: backupParts.etag })
    .from(backupParts)
    .where(eq(backupParts.backupId, backup.id))
    .orderBy(asc(backupParts.partNumber));
  const problem = manifestProblem(backup.partSize, received, claimed);
  if (problem) throw conflict("parts_mismatch", problem);

  await ctx.env.BACKUPS.resumeMultipartUpload(backup.r2Key, backup.uploadId).complete(received.map(({ partNumber, etag }) => ({ partNumber, etag })));
  const parts = received.map(({ partNumber, size, sha256 }) => ({ partNumber, size, sha256 }));
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
export async function abortBackup(ctx: AgentBackupContext, backupId: string, reason: string): Promise<Backup> {
  const backup = requireUnfinished(await ownBackup(ctx, backupId));
  return failBackup(ctx, backup, `aborted by the host: ${reason}`, `host:${ctx.host.id}`);
}

/** The ciphertext of a successful backup, for the host that has an unfinished restore job for it (any host: restores may move). */
export async function openBackupForRestore(ctx: AgentBackupContext, backupId: string): Promise<R2ObjectBody> {
  const backup = await backupById(ctx.db, backupId);
  if (backup?.status !== "succeeded") throw notFound("No such backup.");
  const restoring = (await unfinishedJobsOfKind(ctx.db, ctx.host.id, ["homeserver.restore"])).some((job) => job.backupId === backup.id);
  if (!restoring) throw forbidden("not_restoring", "Only a host with a restore job for this backup may download it.");
  const object = await ctx.env.BACKUPS.get(backup.r2Key);
  if (!object) throw notFound("The backup's object is missing.");
  return object;
}
