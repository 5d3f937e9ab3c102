import { and, asc, eq, inArray, sql } from "drizzle-orm";
import { serverExportParts, serverExports, type ServerExport } from "../db/schema";
import { jobFileUploads } from "../uploads/job-files";
import { failServerExport, serverExportById, UNFINISHED_EXPORT } from "./exports";

// What agents do with full exports, over signed HTTP: upload the file in parts, complete or abort
// it, as worker/uploads/job-files.ts allows (a Synapse on the host holds no host key). No agent
// can read or delete an export; it is ready once its job reports this upload (./exports.ts).
export const serverExportUploads = jobFileUploads<ServerExport>({
  jobKind: "homeserver.full_export",
  noun: "export",
  unfinished: UNFINISHED_EXPORT,
  byId: serverExportById,
  partsOf: (db, id) =>
    db
      .select({ partNumber: serverExportParts.partNumber, size: serverExportParts.size, sha256: serverExportParts.sha256, etag: serverExportParts.etag })
      .from(serverExportParts)
      .where(eq(serverExportParts.exportId, id))
      .orderBy(asc(serverExportParts.partNumber)),
  forgetPart: (db, id, partNumber) => db.delete(serverExportParts).where(and(eq(serverExportParts.exportId, id), eq(serverExportParts.partNumber, partNumber))),
  recordPart: (ctx, row, part) =>
    ctx.db.batch([
      ctx.db
        .insert(serverExportParts)
        .values({ exportId: row.id, ...part, uploadedAt: ctx.now })
        .onConflictDoUpdate({ target: [serverExportParts.exportId, serverExportParts.partNumber], set: { ...part, uploadedAt: ctx.now } }),
      ctx.db
        .update(serverExports)
        .set({
          status: "running",
          progressBytes: sql`(SELECT coalesce(sum(${serverExportParts.size}), 0) FROM ${serverExportParts} WHERE ${serverExportParts.exportId} = ${row.id})`,
        })
        .where(and(eq(serverExports.id, row.id), inArray(serverExports.status, UNFINISHED_EXPORT))),
    ]),
  markUploaded: async (ctx, row, claimed, parts) => {
    const [uploaded] = await ctx.db
      .update(serverExports)
      .set({ status: "running", sizeBytes: claimed.size, sha256: claimed.sha256, parts, progressBytes: claimed.size })
      .where(and(eq(serverExports.id, row.id), inArray(serverExports.status, UNFINISHED_EXPORT)))
      .returning();
    return uploaded;
  },
  fail: failServerExport,
});
