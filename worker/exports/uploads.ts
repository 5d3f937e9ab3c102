import { and, asc, eq, inArray, sql } from "drizzle-orm";
import type { BackupCompleteRequest, BackupPartReceipt } from "../../protocol/messages";
import { serverExportParts, serverExports, type ServerExport } from "../db/schema";
import { conflict, notFound } from "../errors";
import { unfinishedJobsOfKind } from "../fleet/jobs";
import { assembleParts, storePart, type AgentUploadContext } from "../uploads/parts";
import { failServerExport, serverExportById, UNFINISHED_EXPORT } from "./exports";

// What agents do with full exports, over signed HTTP: upload the file in parts, complete or abort
// it. Only the export's own host may, and only while that export's job is unfinished on it: another
// host, a finished job, the job of another export or a Synapse on the host (which holds no host
// key) get nowhere. A completed upload takes no more parts; no agent can read or delete an export.

/** The export, if it is this host's and its job is still under way there; otherwise the same 404 as a missing one. */
async function exportUnderWay(ctx: AgentUploadContext, exportId: string): Promise<ServerExport> {
  const row = await serverExportById(ctx.db, exportId);
  const running =
    row?.hostId === ctx.host.id && (await unfinishedJobsOfKind(ctx.db, ctx.host.id, ["homeserver.full_export"])).some((job) => job.id === row.jobId);
  if (!row || !running) throw notFound("No such export under way on this host.");
  if (!UNFINISHED_EXPORT.includes(row.status)) throw conflict("export_finished", `This export has ${row.status}; it takes no more uploads.`);
  return row;
}

function requireUploadOpen(row: ServerExport): ServerExport {
  if (row.sizeBytes !== null) throw conflict("export_uploaded", "This export's upload is complete; it takes no more parts.");
  return row;
}

/** Streams one part into R2 and records it; the same part number sent again (a retry) replaces it. */
export async function receiveServerExportPart(
  ctx: AgentUploadContext,
  exportId: string,
  partNumber: number,
  body: ReadableStream<Uint8Array> | null,
  size: number,
  signedSha256: string,
): Promise<BackupPartReceipt> {
  const row = requireUploadOpen(await exportUnderWay(ctx, exportId));
  const recorded = await ctx.db.select().from(serverExportParts).where(eq(serverExportParts.exportId, row.id));
  const forget = () => ctx.db.delete(serverExportParts).where(and(eq(serverExportParts.exportId, row.id), eq(serverExportParts.partNumber, partNumber)));
  const { sha256, etag } = await storePart(ctx, row, recorded, { partNumber, body, size, signedSha256 }, forget);
  await ctx.db.batch([
    ctx.db
      .insert(serverExportParts)
      .values({ exportId: row.id, partNumber, size, sha256, etag, uploadedAt: ctx.now })
      .onConflictDoUpdate({ target: [serverExportParts.exportId, serverExportParts.partNumber], set: { size, sha256, etag, uploadedAt: ctx.now } }),
    ctx.db
      .update(serverExports)
      .set({
        status: "running",
        progressBytes: sql`(SELECT coalesce(sum(${serverExportParts.size}), 0) FROM ${serverExportParts} WHERE ${serverExportParts.exportId} = ${row.id})`,
      })
      .where(and(eq(serverExports.id, row.id), inArray(serverExports.status, UNFINISHED_EXPORT))),
  ]);
  return { partNumber, size, sha256 };
}

/**
 * Completes the file once the agent's list matches what was received. The export is ready only
 * when its job reports success with this size and SHA-256 (worker/exports/exports.ts). Repeating a
 * completion that went through (a retry after a lost answer) changes nothing.
 */
export async function completeServerExportUpload(ctx: AgentUploadContext, exportId: string, claimed: BackupCompleteRequest): Promise<ServerExport> {
  const row = await exportUnderWay(ctx, exportId);
  if (row.sizeBytes === claimed.size && row.sha256 === claimed.sha256) return row;
  requireUploadOpen(row);
  const received = await ctx.db
    .select({ partNumber: serverExportParts.partNumber, size: serverExportParts.size, sha256: serverExportParts.sha256, etag: serverExportParts.etag })
    .from(serverExportParts)
    .where(eq(serverExportParts.exportId, row.id))
    .orderBy(asc(serverExportParts.partNumber));
  const parts = await assembleParts(ctx, row, received, claimed);
  const [uploaded] = await ctx.db
    .update(serverExports)
    .set({ status: "running", sizeBytes: claimed.size, sha256: claimed.sha256, parts, progressBytes: claimed.size })
    .where(and(eq(serverExports.id, row.id), inArray(serverExports.status, UNFINISHED_EXPORT)))
    .returning();
  return uploaded ?? (await serverExportById(ctx.db, row.id))!;
}

/** The agent gives up: the parts are discarded and the export has failed. */
export async function abortServerExportUpload(ctx: AgentUploadContext, exportId: string, reason: string): Promise<ServerExport> {
  const row = await exportUnderWay(ctx, exportId);
  return failServerExport(ctx, row, `aborted by the host: ${reason}`, `host:${ctx.host.id}`);
}
