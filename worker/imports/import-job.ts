import { and, eq, sql } from "drizzle-orm";
import type { JobPayload } from "../../protocol/jobs";
import { importRefusalText } from "../../protocol/import-refusals";
import { audit, type Actor } from "../audit/audit";
import { agentUrl } from "../backups/backups";
import type { WorkContext } from "../context";
import { insertWhere } from "../db/conditional-insert";
import { serverImports, servers, workloads, type Job, type Server, type ServerImport } from "../db/schema";
import { forbidden, notFound } from "../errors";
import { erasePassphrase } from "../exports/passphrase";
import { dispatchJob } from "../fleet/hosts";
import type { Mail } from "../mail/mailer";
import { mailServerOwner } from "../mail/server-owner";
import { templates } from "../mail/templates";
import { payloadOf, resultOf, unfinishedJobsOfKind } from "../fleet/jobs";
import { enforceEntitlement } from "../servers/entitlement-jobs";
import { moveAwaitingServer } from "../servers/servers";
import type { AgentUploadContext } from "../uploads/parts";
import { failServerImport, serverImportById } from "./imports";

/** What a homeserver being made from its archive says while it is. */
export const IMPORTING_REASON = "being made from the uploaded archive";
/** What the owner reads when the host's reason is not one of the refusals we wrote (a host's own words stay in its job, for operators). */
export const IMPORT_FAILED = "the import failed on its host";

/**
 * The delegation of a waiting homeserver held and its archive is uploaded: the server moves to
 * provisioning and the import to importing in one batch, conditional on the server still waiting,
 * so concurrent callers start it once; the wrapped passphrase moves from the import's row into the
 * job. The workload is written only when the job succeeded (applyImportOutcome): until then there
 * is nothing for reconciliation to provision. Null when it did not start.
 */
export async function startImportJob(
  ctx: WorkContext,
  server: Server & { hostId: string },
  row: ServerImport,
  spec: JobPayload<"homeserver.provision">,
  actor: Actor,
  detail: Record<string, unknown>,
): Promise<Server | null> {
  const jobId = crypto.randomUUID();
  const moved = await moveAwaitingServer(ctx, server, jobId, IMPORTING_REASON, (movedSql) =>
    ctx.db
      .update(serverImports)
      .set({ status: "importing", jobId, wrappedPassphrase: null })
      .where(and(eq(serverImports.id, row.id), eq(serverImports.status, "uploaded"), movedSql)),
  );
  if (!moved) return null;
  await audit(ctx.db, ctx.now, actor, "server.import_started", server.id, { ...detail, importId: row.id });
  const payload = {
    importId: row.id,
    spec,
    downloadUrl: agentUrl(ctx.config, `/api/agent/imports/${row.id}/archive`),
    wrappedPassphrase: row.wrappedPassphrase,
  };
  await dispatchJob(ctx.db, ctx.env, { id: jobId, hostId: server.hostId, kind: "homeserver.import", payload }, ctx.now);
  return moved;
}

/** The archive, for the host whose import job for it runs; any other host is refused. */
export async function openImportArchive(ctx: AgentUploadContext, importId: string): Promise<R2ObjectBody> {
  const row = await serverImportById(ctx.db, importId);
  if (row?.status !== "importing") throw notFound("No such import under way.");
  const importing = (await unfinishedJobsOfKind(ctx.db, ctx.host.id, ["homeserver.import"])).some((job) => job.id === row.jobId);
  if (!importing) throw forbidden("not_importing", "Only the host whose import job runs may download its archive.");
  const object = await ctx.env.BACKUPS.get(row.r2Key);
  if (!object) throw notFound("The archive is missing.");
  return object;
}

/** The host's reason as its owner may read it: one of the refusals we wrote, else our own words. */
export function importFailureText(error: string | null): string {
  return (error && importRefusalText(error)) ?? IMPORT_FAILED;
}

/**
 * After the job ended (its passphrase erased, the archive deleted whatever happened): a homeserver
 * made from it runs, with its workload written so reconciliation keeps it; otherwise the host left
 * nothing, and the server waits again with the reason, for its owner to upload again.
 */
export async function applyImportOutcome(ctx: WorkContext, job: Job): Promise<void> {
  await erasePassphrase(ctx.db, job);
  const stored = payloadOf(job, "homeserver.import");
  const row = stored && (await serverImportById(ctx.db, stored.importId));
  if (!stored || !row || row.jobId !== job.id || row.status !== "importing") return;
  const result = resultOf(job, "homeserver.import");
  const owned = and(eq(servers.id, stored.spec.serverId), eq(servers.hostId, job.hostId), eq(servers.lifecycleJobId, job.id));
  if (!result) {
    const reason = importFailureText(job.error);
    await failServerImport(ctx, row, reason);
    await ctx.db
      .update(servers)
      .set({ status: "awaiting_delegation", statusReason: `the import failed: ${reason}`, lifecycleJobId: null, updatedAt: ctx.now })
      .where(owned);
    await audit(ctx.db, ctx.now, `host:${job.hostId}`, "import.failed", row.serverId, { importId: row.id, reason });
    await mailOwner(ctx, row, ({ email, serverName }) =>
      templates.importFailed(email, { serverName, reason, link: new URL(`/servers/${row.serverId}/import`, ctx.config.publicOrigin).toString() }),
    );
    return;
  }
  const [moved] = await ctx.db
    .update(servers)
    .set({
      status: "running",
      statusReason: null,
      synapseVersion: result.synapseVersion,
      adminUserId: result.adminUserId,
      ...(stored.spec.planId ? { appliedPlanId: stored.spec.planId } : {}),
      updatedAt: ctx.now,
    })
    .where(owned)
    .returning();
  await ctx.db.batch([
    ctx.db
      .update(serverImports)
      .set({ status: "imported", counts: result.counts, finishedAt: ctx.now })
      .where(and(eq(serverImports.id, row.id), eq(serverImports.status, "importing"))),
    insertWhere(
      ctx.db,
      workloads,
      { id: row.serverId, hostId: job.hostId, kind: "homeserver", spec: stored.spec, desired: "present", createdAt: ctx.now, updatedAt: ctx.now },
      sql`NOT EXISTS (SELECT 1 FROM ${workloads} WHERE ${workloads.id} = ${row.serverId})`,
    ),
    audit(ctx.db, ctx.now, `host:${job.hostId}`, "import.imported", row.serverId, { importId: row.id, ...result.counts, schema: result.schema }),
  ]);
  await ctx.env.BACKUPS.delete(row.r2Key);
  if (moved) await enforceEntitlement(ctx, moved);
  await mailOwner(ctx, row, ({ email, serverName }) =>
    templates.importDone(email, { serverName, counts: result.counts, link: new URL(`/servers/${row.serverId}`, ctx.config.publicOrigin).toString() }),
  );
}

/** Told how its import ended; the outcome is on the import's page whether or not the mail went. */
function mailOwner(ctx: WorkContext, row: ServerImport, compose: (owner: { email: string; serverName: string }) => Mail) {
  return mailServerOwner(ctx, row, compose, "import_mail_failed", { importId: row.id });
}
