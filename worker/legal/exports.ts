import { and, desc, eq, inArray, isNotNull, isNull, lt } from "drizzle-orm";
import { z } from "zod";
import { legalExportScope } from "../../protocol/jobs";
import { audit, type Actor } from "../audit/audit";
import { agentUrl } from "../backups/backups";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { hex } from "../crypto/bytes";
import { legalExports, servers, type Job, type LegalExport, type LegalExportStatus } from "../db/schema";
import { conflict, notFound } from "../errors";
import { dispatchJob } from "../fleet/hosts";
import { abortJobFileUpload, newJobFileUpload, settleJobFile } from "../uploads/job-files";
import { encryptWorkerRecords } from "./worker-records";

/** What an operator enters for a legal request's export. */
export const legalExportRequest = z.strictObject({
  reference: z.string().trim().min(1).max(200),
  scope: legalExportScope,
  recipient: z.string().regex(/^age1[02-9ac-hj-np-z]{58}$/, "an age X25519 recipient (age1…)"),
  /** Present only when the customer may not be told: the legal ground, as the operator records it. */
  noticeBarred: z.strictObject({ reason: z.string().trim().min(3).max(500) }).optional(),
});
export type LegalExportRequest = z.output<typeof legalExportRequest>;

/** How long an export's files stay in R2 after it finished: long enough to hand them over, no longer. */
export const LEGAL_EXPORT_RETENTION_DAYS = 30;
const RETENTION_MS = LEGAL_EXPORT_RETENTION_DAYS * 24 * 60 * 60 * 1000;

export const UNFINISHED_LEGAL_EXPORT: LegalExportStatus[] = ["requested", "running"];

/** The two files of an export: the host's (the homeserver's database) and the Worker's (account, billing, usage, audit). */
export const LEGAL_EXPORT_FILES = ["homeserver", "worker"] as const;
export type LegalExportFile = (typeof LEGAL_EXPORT_FILES)[number];

/**
 * Where every audit entry about an export goes. Notice given: the server, so the customer's audit log
 * and data export show it. Notice barred: the export itself, which no customer's view reads.
 */
function auditTarget(row: LegalExport): string {
  return row.notice === "barred" ? `legal-export:${row.id}` : row.serverId;
}

function auditExport(ctx: WorkContext, row: LegalExport, actor: Actor, action: string, detail: Record<string, unknown> = {}) {
  return audit(ctx.db, ctx.now, actor, action, auditTarget(row), { exportId: row.id, serverId: row.serverId, ...detail });
}

/**
 * Records a legal request's export of one homeserver, makes the Worker's file and sends the job for
 * the host's file to the server's host. Audited with who, when, the reference and the scope. The
 * customer's audit log and data export show the entry unless notice is barred: then it names only
 * the export, and a second entry records that notice was barred and why.
 */
export async function requestLegalExport(ctx: WorkContext, operatorId: string, serverId: string, request: LegalExportRequest): Promise<LegalExport> {
  const [server] = await ctx.db.select().from(servers).where(eq(servers.id, serverId));
  if (!server) throw notFound("No such homeserver.");
  if (!server.hostId || server.status === "deleted") throw conflict("invalid_state", "Only a homeserver on a host can be exported.");
  const id = crypto.randomUUID();
  const { columns } = await newJobFileUpload(ctx, "legal-exports", server.id, id);
  const row: LegalExport = {
    id,
    serverId: server.id,
    hostId: server.hostId,
    operatorId,
    reference: request.reference,
    scope: request.scope,
    recipient: request.recipient,
    notice: request.noticeBarred ? "barred" : "given",
    noticeBarredReason: request.noticeBarred?.reason ?? null,
    jobId: crypto.randomUUID(),
    status: "requested",
    ...columns,
    records: null,
    workerR2Key: `legal-exports/${server.id}/${id}-worker.age`,
    workerSizeBytes: null,
    workerSha256: null,
    workerRecords: null,
    error: null,
    createdAt: ctx.now,
    finishedAt: null,
    filesDeletedAt: null,
  };
  const actor = `user:${operatorId}` as const;
  await ctx.db.batch([
    ctx.db.insert(legalExports).values(row),
    auditExport(ctx, row, actor, "legal_export.requested", { reference: row.reference, scope: row.scope }),
    ...(request.noticeBarred ? [auditExport(ctx, row, actor, "legal_export.notice_barred", { reason: request.noticeBarred.reason })] : []),
  ]);
  try {
    const { ciphertext, records } = await encryptWorkerRecords(ctx, row, server);
    await ctx.env.BACKUPS.put(row.workerR2Key, ciphertext, { httpMetadata: { contentType: "application/octet-stream" } });
    const sha256 = hex(new Uint8Array(await crypto.subtle.digest("SHA-256", ciphertext)));
    await ctx.db
      .update(legalExports)
      .set({ workerSizeBytes: ciphertext.length, workerSha256: sha256, workerRecords: records })
      .where(eq(legalExports.id, row.id));
    const payload = {
      serverId: server.id,
      exportId: row.id,
      reference: row.reference,
      scope: row.scope,
      recipient: row.recipient,
      partSize: row.partSize,
      uploadBase: agentUrl(ctx.config, `/api/agent/legal-exports/${row.id}`),
    };
    await dispatchJob(ctx.db, ctx.env, { id: row.jobId, hostId: row.hostId, kind: "homeserver.legal_export", payload }, ctx.now);
  } catch (error) {
    await failLegalExport(ctx, row, `the export could not be started: ${String(error)}`, "system");
    throw error;
  }
  return (await legalExportById(ctx.db, row.id))!;
}

export async function legalExportById(db: Database, id: string): Promise<LegalExport | undefined> {
  const [row] = await db.select().from(legalExports).where(eq(legalExports.id, id));
  return row;
}

/** Every export, or one server's, newest first. */
export async function listLegalExports(db: Database, serverId?: string): Promise<LegalExport[]> {
  return db
    .select()
    .from(legalExports)
    .where(serverId === undefined ? undefined : eq(legalExports.serverId, serverId))
    .orderBy(desc(legalExports.createdAt));
}

/**
 * Gives up an unfinished export: the host's upload is aborted, both files are deleted (an export is
 * whole or not at all: the operator asks again) and the failure is audited under the notice rule.
 */
export async function failLegalExport(ctx: WorkContext, row: LegalExport, reason: string, actor: Actor): Promise<LegalExport> {
  const [failed] = await ctx.db
    .update(legalExports)
    .set({ status: "failed", error: reason.slice(0, 1000), finishedAt: ctx.now, filesDeletedAt: ctx.now })
    .where(and(eq(legalExports.id, row.id), inArray(legalExports.status, UNFINISHED_LEGAL_EXPORT)))
    .returning();
  if (!failed) return (await legalExportById(ctx.db, row.id))!;
  await abortJobFileUpload(ctx, failed);
  await ctx.env.BACKUPS.delete([row.r2Key, row.workerR2Key]);
  await auditExport(ctx, failed, actor, "legal_export.failed", { reason: failed.error });
  return failed;
}

/**
 * After its job ended: an export whose host completed the upload the job reports (same size and
 * SHA-256) is ready, with its record counts audited (never content); anything else has failed.
 */
export async function applyLegalExportOutcome(ctx: WorkContext, job: Job): Promise<void> {
  const [row] = await ctx.db
    .select()
    .from(legalExports)
    .where(and(eq(legalExports.jobId, job.id), eq(legalExports.hostId, job.hostId)));
  const result = await settleJobFile(ctx, job, "homeserver.legal_export", row, { unfinished: UNFINISHED_LEGAL_EXPORT, fail: failLegalExport });
  if (!row || !result) return;
  const [ready] = await ctx.db
    .update(legalExports)
    .set({ status: "ready", records: result.records, finishedAt: ctx.now })
    .where(and(eq(legalExports.id, row.id), inArray(legalExports.status, UNFINISHED_LEGAL_EXPORT)))
    .returning();
  if (!ready) return;
  await auditExport(ctx, ready, `host:${job.hostId}`, "legal_export.completed", {
    records: { homeserver: ready.records, worker: ready.workerRecords },
    size: (ready.sizeBytes ?? 0) + (ready.workerSizeBytes ?? 0),
  });
}

/**
 * One of a ready export's files, for an operator to hand over: the ciphertext as stored (only the
 * operator's identity opens it). Each download is audited under the notice rule.
 */
export async function openLegalExportFile(ctx: WorkContext, operatorId: string, id: string, file: LegalExportFile): Promise<R2ObjectBody> {
  const row = await legalExportById(ctx.db, id);
  if (!row) throw notFound("No such legal export.");
  if (row.filesDeletedAt) throw conflict("files_deleted", "This export's files are gone (failed, or past retention).");
  if (row.status !== "ready") throw conflict("not_ready", `This export is ${row.status}; its files can be downloaded once it is ready.`);
  const object = await ctx.env.BACKUPS.get(file === "homeserver" ? row.r2Key : row.workerR2Key);
  if (!object) throw notFound("The export's file is missing.");
  await auditExport(ctx, row, `user:${operatorId}`, "legal_export.downloaded", { file });
  return object;
}

/**
 * Hourly: the files of exports finished LEGAL_EXPORT_RETENTION_DAYS ago are deleted from R2. The
 * row (reference, scope, notice, counts) and its audit entries stay: the record of the request.
 */
export async function pruneLegalExports(ctx: WorkContext): Promise<number> {
  const due = await ctx.db
    .select()
    .from(legalExports)
    .where(
      and(isNull(legalExports.filesDeletedAt), isNotNull(legalExports.finishedAt), lt(legalExports.finishedAt, new Date(ctx.now.getTime() - RETENTION_MS))),
    );
  for (const row of due) {
    await ctx.env.BACKUPS.delete([row.r2Key, row.workerR2Key]);
    await ctx.db.batch([
      ctx.db.update(legalExports).set({ filesDeletedAt: ctx.now }).where(eq(legalExports.id, row.id)),
      auditExport(ctx, row, "system", "legal_export.files_deleted", { retentionDays: LEGAL_EXPORT_RETENTION_DAYS }),
    ]);
  }
  return due.length;
}

const iso = (date: Date | null) => date?.toISOString() ?? null;

/** An export as operators read it: never its R2 keys or upload id. */
export function presentLegalExport(row: LegalExport) {
  return {
    id: row.id,
    serverId: row.serverId,
    operatorId: row.operatorId,
    reference: row.reference,
    scope: row.scope,
    recipient: row.recipient,
    notice: row.notice,
    noticeBarredReason: row.noticeBarredReason,
    jobId: row.jobId,
    status: row.status,
    error: row.error,
    records: { homeserver: row.records, worker: row.workerRecords },
    files: {
      homeserver: row.status === "ready" && !row.filesDeletedAt ? { size: row.sizeBytes, sha256: row.sha256 } : null,
      worker: row.status === "ready" && !row.filesDeletedAt ? { size: row.workerSizeBytes, sha256: row.workerSha256 } : null,
    },
    createdAt: row.createdAt.toISOString(),
    finishedAt: iso(row.finishedAt),
    filesDeletedAt: iso(row.filesDeletedAt),
    filesDeleteAfter: row.finishedAt && !row.filesDeletedAt ? new Date(row.finishedAt.getTime() + RETENTION_MS).toISOString() : null,
  };
}
