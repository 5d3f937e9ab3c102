import { eq } from "drizzle-orm";
import { legalExportScope } from "../../protocol/jobs";
import { BACKUP_PART_SIZE } from "../../protocol/messages";
import { z } from "zod";
import { audit } from "../audit/audit";
import { agentUrl } from "../backups/backups";
import type { WorkContext } from "../context";
import { legalExports, servers, type LegalExport } from "../db/schema";
import { conflict, notFound } from "../errors";
import { dispatchJob } from "../fleet/hosts";

/** What an operator enters for a legal request's export. */
export const legalExportRequest = z.strictObject({
  reference: z.string().trim().min(1).max(200),
  scope: legalExportScope,
  recipient: z.string().regex(/^age1[02-9ac-hj-np-z]{58}$/, "an age X25519 recipient (age1…)"),
  /** Present only when the customer may not be told: the legal ground, as the operator records it. */
  noticeBarred: z.strictObject({ reason: z.string().trim().min(3).max(500) }).optional(),
});
export type LegalExportRequest = z.output<typeof legalExportRequest>;

/**
 * Records a legal request's export of one homeserver and sends it to the server's host. Audited
 * with who, when, the reference and the scope. The customer's audit log and data export show the
 * entry (its target is the server) unless notice is barred: then it names only the export, and a
 * second entry records that notice was barred and why.
 */
export async function requestLegalExport(ctx: WorkContext, operatorId: string, serverId: string, request: LegalExportRequest): Promise<LegalExport> {
  const [server] = await ctx.db.select().from(servers).where(eq(servers.id, serverId));
  if (!server) throw notFound("No such homeserver.");
  if (!server.hostId || server.status === "deleted") throw conflict("invalid_state", "Only a homeserver on a host can be exported.");
  const row: LegalExport = {
    id: crypto.randomUUID(),
    serverId: server.id,
    hostId: server.hostId,
    operatorId,
    reference: request.reference,
    scope: request.scope,
    recipient: request.recipient,
    notice: request.noticeBarred ? "barred" : "given",
    noticeBarredReason: request.noticeBarred?.reason ?? null,
    jobId: crypto.randomUUID(),
    createdAt: ctx.now,
  };
  const actor = `user:${operatorId}` as const;
  const detail = { exportId: row.id, serverId: server.id, reference: row.reference, scope: row.scope };
  await ctx.db.batch([
    ctx.db.insert(legalExports).values(row),
    audit(ctx.db, ctx.now, actor, "legal_export.requested", request.noticeBarred ? `legal-export:${row.id}` : server.id, detail),
    ...(request.noticeBarred
      ? [
          audit(ctx.db, ctx.now, actor, "legal_export.notice_barred", `legal-export:${row.id}`, {
            exportId: row.id,
            serverId: server.id,
            reason: request.noticeBarred.reason,
          }),
        ]
      : []),
  ]);
  const payload = {
    serverId: server.id,
    exportId: row.id,
    reference: row.reference,
    scope: row.scope,
    recipient: row.recipient,
    partSize: BACKUP_PART_SIZE,
    uploadBase: agentUrl(ctx.config, `/api/agent/legal-exports/${row.id}`),
  };
  await dispatchJob(ctx.db, ctx.env, { id: row.jobId, hostId: row.hostId, kind: "homeserver.legal_export", payload }, ctx.now);
  return row;
}

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
    createdAt: row.createdAt.toISOString(),
  };
}
