import type { JobKind, JobResult } from "../../protocol/jobs";
import { BACKUP_PART_SIZE, type BackupCompleteRequest, type BackupPartReceipt } from "../../protocol/messages";
import type { Actor } from "../audit/audit";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import type { BackupManifestPart, Job } from "../db/schema";
import { conflict, notFound } from "../errors";
import { logError } from "../logging";
import { resultOf, unfinishedJobsOfKind } from "../fleet/jobs";
import { assembleParts, storePart, type AgentUploadContext, type PartUpload, type ReceivedPart } from "./parts";

// A file made by one job on one host and uploaded by it in signed parts (a legal export, a full
// export). Only that host may upload, and only while that job is unfinished there: another host,
// a finished job, or the job of another file get the 404 of a missing one. A completed upload takes
// no more parts. Whether the file is then ready is the job's outcome's to say.

/** A row of such a file: its host, its job, its state, and its upload. */
export interface JobFile extends PartUpload {
  id: string;
  hostId: string;
  jobId: string;
  status: string;
  sizeBytes: number | null;
  sha256: string | null;
}

/** Where one kind of job file is kept. */
export interface JobFileStore<Row extends JobFile> {
  jobKind: JobKind;
  /** What the 404 calls it: "legal export", "export". */
  noun: string;
  unfinished: readonly Row["status"][];
  byId(db: Database, id: string): Promise<Row | undefined>;
  /** The parts received, in part order. */
  partsOf(db: Database, id: string): Promise<ReceivedPart[]>;
  forgetPart(db: Database, id: string, partNumber: number): Promise<unknown>;
  /** Records a part (a retry replaces it) and that the file is being uploaded. */
  recordPart(ctx: AgentUploadContext, row: Row, part: ReceivedPart): Promise<unknown>;
  /** Records the completed upload while the row is unfinished; undefined when it no longer is. */
  markUploaded(ctx: AgentUploadContext, row: Row, claimed: BackupCompleteRequest, parts: BackupManifestPart[]): Promise<Row | undefined>;
  fail(ctx: WorkContext, row: Row, reason: string, actor: Actor): Promise<Row>;
}

export function jobFileUploads<Row extends JobFile>(store: JobFileStore<Row>) {
  /** The file, if it is this host's and its job is still under way there; otherwise the same 404 as a missing one. */
  async function underWay(ctx: AgentUploadContext, id: string): Promise<Row> {
    const row = await store.byId(ctx.db, id);
    const running = row?.hostId === ctx.host.id && (await unfinishedJobsOfKind(ctx.db, ctx.host.id, [store.jobKind])).some((job) => job.id === row.jobId);
    if (!row || !running) throw notFound(`No such ${store.noun} under way on this host.`);
    if (!store.unfinished.includes(row.status)) throw conflict("export_finished", `This ${store.noun} has ${row.status}; it takes no more uploads.`);
    return row;
  }

  function requireUploadOpen(row: Row): Row {
    if (row.sizeBytes !== null) throw conflict("export_uploaded", `This ${store.noun}'s upload is complete; it takes no more parts.`);
    return row;
  }

  return {
    /** Streams one part into R2 and records it; the same part number sent again (a retry) replaces it. */
    async receivePart(
      ctx: AgentUploadContext,
      id: string,
      partNumber: number,
      body: ReadableStream<Uint8Array> | null,
      size: number,
      signedSha256: string,
    ): Promise<BackupPartReceipt> {
      const row = requireUploadOpen(await underWay(ctx, id));
      const recorded = await store.partsOf(ctx.db, row.id);
      const { sha256, etag } = await storePart(ctx, row, recorded, { partNumber, body, size, signedSha256 }, () =>
        store.forgetPart(ctx.db, row.id, partNumber),
      );
      await store.recordPart(ctx, row, { partNumber, size, sha256, etag });
      return { partNumber, size, sha256 };
    },

    /** Completes the file once the agent's list matches what was received; a repeated completion (a retry after a lost answer) changes nothing. */
    async complete(ctx: AgentUploadContext, id: string, claimed: BackupCompleteRequest): Promise<Row> {
      const row = await underWay(ctx, id);
      if (row.sizeBytes === claimed.size && row.sha256 === claimed.sha256) return row;
      requireUploadOpen(row);
      const parts = await assembleParts(ctx, row, await store.partsOf(ctx.db, row.id), claimed);
      return (await store.markUploaded(ctx, row, claimed, parts)) ?? (await store.byId(ctx.db, row.id))!;
    },

    /** The agent gives up: the parts are discarded and the file has failed. */
    async abort(ctx: AgentUploadContext, id: string, reason: string): Promise<Row> {
      return store.fail(ctx, await underWay(ctx, id), `aborted by the host: ${reason}`, `host:${ctx.host.id}`);
    },
  };
}

/** Why a job file whose job ended failed all the same: our words, not the agent's. */
export const EXPORT_UPLOAD_NOT_COMPLETED = "the export job ended without completing the upload it reported";

type FileJobKind = "homeserver.legal_export" | "homeserver.full_export";

/**
 * After a job file's job ended: the job's result when the file is unfinished and the job reports
 * the very upload the Worker received (same size and SHA-256). Otherwise nothing: a finished file
 * is left as it is, and an unfinished one has failed (with the job's error, or our words).
 */
export async function settleJobFile<Row extends JobFile, Kind extends FileJobKind>(
  ctx: WorkContext,
  job: Job,
  kind: Kind,
  row: Row | undefined,
  store: { unfinished: readonly Row["status"][]; fail(ctx: WorkContext, row: Row, reason: string, actor: Actor): Promise<Row> },
): Promise<JobResult<Kind> | undefined> {
  if (!row || !store.unfinished.includes(row.status)) return undefined;
  if (job.status === "failed") {
    await store.fail(ctx, row, job.error ?? "the export job failed", "system");
    return undefined;
  }
  const result = resultOf(job, kind);
  if (!result || result.exportId !== row.id || row.sizeBytes !== result.size || row.sha256 !== result.sha256) {
    await store.fail(ctx, row, EXPORT_UPLOAD_NOT_COMPLETED, "system");
    return undefined;
  }
  return result;
}

/**
 * The R2 multipart upload of a new job file, `<folder>/<serverId>/<id>.age`: the columns its row
 * starts with, and the upload itself (to abort should the row not be written).
 */
export async function newJobFileUpload(ctx: WorkContext, folder: string, serverId: string, id: string) {
  const r2Key = `${folder}/${serverId}/${id}.age`;
  const upload = await ctx.env.BACKUPS.createMultipartUpload(r2Key, {
    httpMetadata: { contentType: "application/octet-stream" },
    customMetadata: { serverId, [folder === "legal-exports" ? "legalExportId" : "exportId"]: id },
  });
  const columns = { r2Key, uploadId: upload.uploadId, partSize: BACKUP_PART_SIZE, sizeBytes: null, sha256: null, parts: null };
  return { upload, columns };
}

/** Drops the parts of a job file given up before its upload completed: R2 forgets them. */
export async function abortJobFileUpload(ctx: WorkContext, row: JobFile): Promise<void> {
  if (row.sizeBytes !== null) return;
  try {
    await ctx.env.BACKUPS.resumeMultipartUpload(row.r2Key, row.uploadId).abort();
  } catch (error) {
    // Already aborted or expired: either way its parts are gone.
    logError("job_file_abort_failed", error, { id: row.id });
  }
}
