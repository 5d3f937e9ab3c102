import { and, asc, eq, inArray } from "drizzle-orm";
import { legalExportParts, legalExports, type LegalExport } from "../db/schema";
import { jobFileUploads } from "../uploads/job-files";
import { failLegalExport, legalExportById, UNFINISHED_LEGAL_EXPORT } from "./exports";

// What agents do with legal exports, over signed HTTP: upload the host's file in parts, complete or
// abort it, as worker/uploads/job-files.ts allows. No agent can read one. The export is ready only
// when its job reports this upload's size and SHA-256 (./exports.ts).
export const legalExportUploads = jobFileUploads<LegalExport>({
  jobKind: "homeserver.legal_export",
  noun: "legal export",
  unfinished: UNFINISHED_LEGAL_EXPORT,
  byId: legalExportById,
  partsOf: (db, id) =>
    db
      .select({ partNumber: legalExportParts.partNumber, size: legalExportParts.size, sha256: legalExportParts.sha256, etag: legalExportParts.etag })
      .from(legalExportParts)
      .where(eq(legalExportParts.exportId, id))
      .orderBy(asc(legalExportParts.partNumber)),
  forgetPart: (db, id, partNumber) => db.delete(legalExportParts).where(and(eq(legalExportParts.exportId, id), eq(legalExportParts.partNumber, partNumber))),
  recordPart: (ctx, row, part) =>
    ctx.db.batch([
      ctx.db
        .insert(legalExportParts)
        .values({ exportId: row.id, ...part, uploadedAt: ctx.now })
        .onConflictDoUpdate({ target: [legalExportParts.exportId, legalExportParts.partNumber], set: { ...part, uploadedAt: ctx.now } }),
      ctx.db
        .update(legalExports)
        .set({ status: "running" })
        .where(and(eq(legalExports.id, row.id), inArray(legalExports.status, UNFINISHED_LEGAL_EXPORT))),
    ]),
  markUploaded: async (ctx, row, claimed, parts) => {
    const [uploaded] = await ctx.db
      .update(legalExports)
      .set({ status: "running", sizeBytes: claimed.size, sha256: claimed.sha256, parts })
      .where(and(eq(legalExports.id, row.id), inArray(legalExports.status, UNFINISHED_LEGAL_EXPORT)))
      .returning();
    return uploaded;
  },
  fail: failLegalExport,
});
