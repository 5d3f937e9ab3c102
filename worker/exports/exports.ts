import { and, desc, eq, inArray, lt } from "drizzle-orm";
import { audit, type Actor } from "../audit/audit";
import { agentUrl, requireOnlineHost, throttleServerWork } from "../backups/backups";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { jobs, serverExports, servers, type Job, type ServerExport, type ServerExportStatus, type ServerStatus, type User } from "../db/schema";
import { conflict, gone, notFound } from "../errors";
import { dispatchJob } from "../fleet/hosts";
import { mailServerOwner } from "../mail/server-owner";
import { templates } from "../mail/templates";
import { ownedServer } from "../servers/servers";
import { abortJobFileUpload, newJobFileUpload, settleJobFile } from "../uploads/job-files";
import { erasePassphrase, requireStrongPassphrase, wrapPassphrase } from "./passphrase";

/** How long a ready export can be downloaded; then its file is deleted. */
export const EXPORT_DOWNLOAD_DAYS = 7;
const DOWNLOAD_MS = EXPORT_DOWNLOAD_DAYS * 24 * 60 * 60 * 1000;

export const UNFINISHED_EXPORT: ServerExportStatus[] = ["queued", "running"];
/** The agent exports from PostgreSQL alone: a stopped homeserver exports too. */
const EXPORT_FROM: ServerStatus[] = ["running", "stopped"];

/** Why an export failed before its job was sent. */
export const EXPORT_NOT_STARTED = "the export could not be started";

const exportRunning = () => conflict("export_running", "An export of this homeserver is under way; wait for it to finish.");

export async function serverExportById(db: Database, id: string): Promise<ServerExport | undefined> {
  const [row] = await db.select().from(serverExports).where(eq(serverExports.id, id));
  return row;
}

/** The export of `serverId` under way, if any: its host reads the homeserver's database and files until it ends. */
export async function unfinishedServerExport(db: Database, serverId: string): Promise<{ id: string } | undefined> {
  const [underWay] = await db
    .select({ id: serverExports.id })
    .from(serverExports)
    .where(and(eq(serverExports.serverId, serverId), inArray(serverExports.status, UNFINISHED_EXPORT)));
  return underWay;
}

/**
 * "Download your homeserver": the owner's passphrase is judged, then wrapped into the
 * `homeserver.full_export` job for the server's host, which encrypts the export to it and uploads
 * it in parts. One export per server is under way at a time (a partial unique index settles races).
 */
export async function requestServerExport(ctx: WorkContext, user: User, serverId: string, passphrase: string): Promise<ServerExport> {
  const server = await ownedServer(ctx.db, user.id, serverId);
  requireStrongPassphrase(passphrase);
  if (!EXPORT_FROM.includes(server.status)) {
    throw conflict("invalid_state", `The server is ${server.status}; it can be exported when it is ${EXPORT_FROM.join(" or ")}.`);
  }
  if (await unfinishedServerExport(ctx.db, server.id)) throw exportRunning();
  await requireOnlineHost(ctx.db, server);
  await throttleServerWork(ctx, server, "export_server");

  const id = crypto.randomUUID();
  const { upload, columns } = await newJobFileUpload(ctx, "server-exports", server.id, id);
  const row: ServerExport = {
    id,
    serverId: server.id,
    userId: user.id,
    hostId: server.hostId!,
    jobId: crypto.randomUUID(),
    status: "queued",
    ...columns,
    progressBytes: 0,
    error: null,
    createdAt: ctx.now,
    readyAt: null,
    expiresAt: null,
    finishedAt: null,
  };
  try {
    await ctx.db.batch([ctx.db.insert(serverExports).values(row), audit(ctx.db, ctx.now, `user:${user.id}`, "export.requested", server.id, { exportId: id })]);
  } catch (error) {
    await upload.abort();
    if (String(error).includes("UNIQUE")) throw exportRunning();
    throw error;
  }
  try {
    const payload = {
      serverId: server.id,
      exportId: id,
      wrappedPassphrase: await wrapPassphrase(ctx.config.backupKeyWrappingSecret, "export", id, passphrase),
      partSize: row.partSize,
      uploadBase: agentUrl(ctx.config, `/api/agent/exports/${id}`),
    };
    await dispatchJob(ctx.db, ctx.env, { id: row.jobId, hostId: row.hostId, kind: "homeserver.full_export", payload }, ctx.now);
  } catch (error) {
    await failServerExport(ctx, row, EXPORT_NOT_STARTED, "system");
    throw error;
  }
  return (await serverExportById(ctx.db, id))!;
}

/** A server's exports, newest first, each with its job (how far along an unfinished one is). */
export async function listServerExports(db: Database, userId: string, serverId: string): Promise<{ row: ServerExport; job: Job | null }[]> {
  const rows = await db
    .select({ row: serverExports, job: jobs })
    .from(serverExports)
    .leftJoin(jobs, eq(jobs.id, serverExports.jobId))
    .where(and(eq(serverExports.serverId, serverId), eq(serverExports.userId, userId)))
    .orderBy(desc(serverExports.createdAt));
  return rows;
}

/** Told when its export is ready or failed; its state is on the dashboard whether or not the mail went. */
function mailOwner(ctx: WorkContext, row: ServerExport) {
  const page = new URL(`/servers/${row.serverId}/export`, ctx.config.publicOrigin).toString();
  return mailServerOwner(
    ctx,
    row,
    ({ email, serverName }) =>
      row.status === "ready"
        ? templates.exportReady(email, { serverName, link: page, expiresAt: row.expiresAt!, sizeBytes: row.sizeBytes! })
        : templates.exportFailed(email, { serverName, link: page }),
    "export_mail_failed",
    { exportId: row.id },
  );
}

/**
 * Gives up an unfinished export: whatever R2 holds of it (the multipart upload's parts, or the
 * object its host completed) is deleted, so nothing half-made is left, and the owner is told.
 */
export async function failServerExport(ctx: WorkContext, row: ServerExport, reason: string, actor: Actor): Promise<ServerExport> {
  const [failed] = await ctx.db
    .update(serverExports)
    .set({ status: "failed", error: reason.slice(0, 1000), finishedAt: ctx.now })
    .where(and(eq(serverExports.id, row.id), inArray(serverExports.status, UNFINISHED_EXPORT)))
    .returning();
  if (!failed) return (await serverExportById(ctx.db, row.id))!;
  await abortJobFileUpload(ctx, failed);
  await ctx.env.BACKUPS.delete(row.r2Key);
  await audit(ctx.db, ctx.now, actor, "export.failed", row.serverId, { exportId: row.id, reason: failed.error });
  await mailOwner(ctx, failed);
  return failed;
}

/**
 * After its job ended (the passphrase is erased whatever happened): an export whose host completed
 * the upload the job reports (same size and SHA-256) is ready for a week; anything else has failed.
 */
export async function applyFullExportOutcome(ctx: WorkContext, job: Job): Promise<void> {
  await erasePassphrase(ctx.db, job);
  const [row] = await ctx.db
    .select()
    .from(serverExports)
    .where(and(eq(serverExports.jobId, job.id), eq(serverExports.hostId, job.hostId)));
  const result = await settleJobFile(ctx, job, "homeserver.full_export", row, { unfinished: UNFINISHED_EXPORT, fail: failServerExport });
  if (!row || !result) return;
  const [ready] = await ctx.db
    .update(serverExports)
    .set({ status: "ready", progressBytes: result.size, readyAt: ctx.now, expiresAt: new Date(ctx.now.getTime() + DOWNLOAD_MS) })
    .where(and(eq(serverExports.id, row.id), inArray(serverExports.status, UNFINISHED_EXPORT)))
    .returning();
  if (!ready) return;
  await audit(ctx.db, ctx.now, `host:${job.hostId}`, "export.ready", ready.serverId, { exportId: ready.id, size: result.size });
  await mailOwner(ctx, ready);
}

/**
 * A ready export's file for its owner (the account that asked) while it is offered, with the name
 * it is saved as (the homeserver's and the day it was made). Another account gets the same 404 as
 * for no export at all.
 */
export async function openServerExport(ctx: WorkContext, user: User, serverId: string, exportId: string): Promise<{ fileName: string; object: R2ObjectBody }> {
  const row = await serverExportById(ctx.db, exportId);
  if (!row || row.serverId !== serverId || row.userId !== user.id) throw notFound("No such export.");
  if (row.status === "expired" || (row.expiresAt && row.expiresAt <= ctx.now)) {
    throw gone("export_expired", `This export was offered for ${EXPORT_DOWNLOAD_DAYS} days and has been deleted; ask for a new one.`);
  }
  if (row.status !== "ready") throw conflict("export_not_ready", `This export is ${row.status}; it can be downloaded once it is ready.`);
  const object = await ctx.env.BACKUPS.get(row.r2Key);
  if (!object) throw notFound("The export's file is missing.");
  await audit(ctx.db, ctx.now, `user:${user.id}`, "export.downloaded", row.serverId, { exportId: row.id });
  const [server] = await ctx.db.select({ name: servers.name }).from(servers).where(eq(servers.id, row.serverId));
  // The README inside (agent/homeserver/full-export.ts) tells its reader to decrypt berth-export-*.age.
  return { fileName: `berth-export-${server!.name}-${row.createdAt.toISOString().slice(0, 10)}.age`, object };
}

/** Hourly: exports past their week are deleted from R2 and marked expired (the row stays, as a record). */
export async function expireServerExports(ctx: WorkContext): Promise<number> {
  const due = await ctx.db
    .select()
    .from(serverExports)
    .where(and(eq(serverExports.status, "ready"), lt(serverExports.expiresAt, ctx.now)));
  for (const row of due) {
    await ctx.env.BACKUPS.delete(row.r2Key);
    await ctx.db.batch([
      ctx.db
        .update(serverExports)
        .set({ status: "expired", finishedAt: ctx.now })
        .where(and(eq(serverExports.id, row.id), eq(serverExports.status, "ready"))),
      audit(ctx.db, ctx.now, "system", "export.expired", row.serverId, { exportId: row.id }),
    ]);
  }
  return due.length;
}
