import { and, asc, eq, inArray } from "drizzle-orm";
import type { BackupCompleteRequest, BackupPartReceipt } from "../../protocol/messages";
import { legalExportParts, legalExports, type LegalExport } from "../db/schema";
import { conflict, notFound } from "../errors";
import { unfinishedJobsOfKind } from "../fleet/jobs";
import { assembleParts, storePart, type AgentUploadContext } from "../uploads/parts";
import { failLegalExport, legalExportById, UNFINISHED_LEGAL_EXPORT } from "./exports";

// What agents do with legal exports, over signed HTTP: upload the host's file in parts, complete or
// abort it. Only the export's own host may, and only while that export's job is unfinished on it:
// another host, a finished job, or the job of another export get nowhere. No agent can read one.

/** The export, if it is this host's and its job is still under way there; otherwise the same 404 as a missing one. */
async function exportUnderWay(ctx: AgentUploadContext, exportId: string): Promise<LegalExport> {
  const row = await legalExportById(ctx.db, exportId);
  const running =
    row?.hostId === ctx.host.id && (await unfinishedJobsOfKind(ctx.db, ctx.host.id, ["homeserver.legal_export"])).some((job) => job.id === row.jobId);
  if (!row || !running) throw notFound("No such legal export under way on this host.");
  if (!UNFINISHED_LEGAL_EXPORT.includes(row.status)) throw conflict("export_finished", `This export has ${row.status}; it takes no more uploads.`);
  return row;
}

function requireUploadOpen(row: LegalExport): LegalExport {
  if (row.sizeBytes !== null) throw conflict("export_uploaded", "This export's upload is complete; it takes no more parts.");
  return row;
}

/** Streams one part of the host's file into R2 and records it; the same part number sent again (a retry) replaces it. */
export async function receiveExportPart(
  ctx: AgentUploadContext,
  exportId: string,
  partNumber: number,
  body: ReadableStream<Uint8Array> | null,
  size: number,
  signedSha256: string,
): Promise<BackupPartReceipt> {
  const row = requireUploadOpen(await exportUnderWay(ctx, exportId));
  const recorded = await ctx.db.select().from(legalExportParts).where(eq(legalExportParts.exportId, row.id));
  const forget = () => ctx.db.delete(legalExportParts).where(and(eq(legalExportParts.exportId, row.id), eq(legalExportParts.partNumber, partNumber)));
  const { sha256, etag } = await storePart(ctx, row, recorded, { partNumber, body, size, signedSha256 }, forget);
  await ctx.db.batch([
    ctx.db
      .insert(legalExportParts)
      .values({ exportId: row.id, partNumber, size, sha256, etag, uploadedAt: ctx.now })
      .onConflictDoUpdate({ target: [legalExportParts.exportId, legalExportParts.partNumber], set: { size, sha256, etag, uploadedAt: ctx.now } }),
    ctx.db
      .update(legalExports)
      .set({ status: "running" })
      .where(and(eq(legalExports.id, row.id), inArray(legalExports.status, UNFINISHED_LEGAL_EXPORT))),
  ]);
  return { partNumber, size, sha256 };
}

/**
 * Completes the host's file once the agent's list matches what was received. The export is ready
 * only when its job reports success with this size and SHA-256 (worker/legal/exports.ts). Repeating
 * a completion that went through (a retry after a lost answer) changes nothing.
 */
export async function completeExportUpload(ctx: AgentUploadContext, exportId: string, claimed: BackupCompleteRequest): Promise<LegalExport> {
  const row = await exportUnderWay(ctx, exportId);
  if (row.sizeBytes === claimed.size && row.sha256 === claimed.sha256) return row;
  requireUploadOpen(row);
  const received = await ctx.db
    .select({ partNumber: legalExportParts.partNumber, size: legalExportParts.size, sha256: legalExportParts.sha256, etag: legalExportParts.etag })
    .from(legalExportParts)
    .where(eq(legalExportParts.exportId, row.id))
    .orderBy(asc(legalExportParts.partNumber));
  const parts = await assembleParts(ctx, row, received, claimed);
  const [uploaded] = await ctx.db
    .update(legalExports)
    .set({ status: "running", sizeBytes: claimed.size, sha256: claimed.sha256, parts })
    .where(and(eq(legalExports.id, row.id), inArray(legalExports.status, UNFINISHED_LEGAL_EXPORT)))
    .returning();
  return uploaded ?? (await legalExportById(ctx.db, row.id))!;
}

/** The agent gives up: the parts are discarded and the export has failed. */
export async function abortExportUpload(ctx: AgentUploadContext, exportId: string, reason: string): Promise<LegalExport> {
  const row = await exportUnderWay(ctx, exportId);
  return failLegalExport(ctx, row, `aborted by the host: ${reason}`, `host:${ctx.host.id}`);
}
