import { and, eq } from "drizzle-orm";
import { checkDeliveredJobPayload } from "../../protocol/jobs";
import { audit } from "../audit/audit";
import type { WorkContext } from "../context";
import { backups, type Job, type Server, type ServerStatus, type User } from "../db/schema";
import { conflict, notFound } from "../errors";
import { deliveredPassphrasePayload } from "../exports/passphrase";
import { payloadOf } from "../fleet/jobs";
import { ownedServer, requireMayRun, startLifecycleJob } from "../servers/servers";
import { agentUrl, backupById, requireOnlineHost, throttleServerWork, unfinishedBackup } from "./backups";
import { backupIdentity } from "./keys";

const RESTORE_FROM: ServerStatus[] = ["running", "stopped", "failed"];

/**
 * Restores a successful backup of this homeserver onto its host, as a
 * `homeserver.restore` job. The server is `restoring` until the job's outcome
 * moves it to running, or back to where it was if the restore fails (the
 * agent restores into a fresh database and leaves the running one untouched).
 */
export async function requestRestore(ctx: WorkContext, user: User, serverId: string, backupId: string): Promise<Server> {
  const server = await ownedServer(ctx.db, user.id, serverId);
  const [backup] = await ctx.db
    .select()
    .from(backups)
    .where(and(eq(backups.id, backupId), eq(backups.serverId, server.id)));
  if (!backup) throw notFound("No such backup.");
  if (backup.status !== "succeeded")
    throw conflict(
      "backup_not_restorable",
      `This backup ${backup.status === "failed" ? "failed" : "is not finished"}; only a successful backup can be restored.`,
    );
  if (!RESTORE_FROM.includes(server.status)) {
    throw conflict("invalid_state", `The server is ${server.status}; it can be restored when it is ${RESTORE_FROM.join(", ")}.`);
  }
  await requireMayRun(ctx.db, user.id);
  await requireOnlineHost(ctx.db, server);
  if (await unfinishedBackup(ctx.db, server.id)) throw conflict("backup_running", "A backup of this homeserver is under way; restore when it has finished.");
  // Fail here, not on the host, if the identity cannot be unwrapped (a misconfigured secret).
  await backupIdentity(ctx.db, ctx.config.backupKeyWrappingSecret, backup.serverId);
  await throttleServerWork(ctx, server, "restore_server");

  // Stored without the identity, which is added only as the job is sent (payloadForDelivery).
  const payload = { serverId: server.id, backupId: backup.id, downloadUrl: agentUrl(ctx.config, `/api/agent/backups/${backup.id}/object`) };
  const restoring = await startLifecycleJob(
    ctx,
    server,
    { from: [server.status], to: "restoring", previousStatus: server.status },
    { kind: "homeserver.restore", payload },
  );
  if (!restoring) throw conflict("invalid_state", "The server changed state meanwhile; try again.");
  await audit(ctx.db, ctx.now, `user:${user.id}`, "server.restore_requested", server.id, { backupId: backup.id });
  return restoring;
}

/**
 * The payload a job is sent with: the catalogue's delivered payload. A restore
 * or restore verification job gets its backup's identity here, unwrapped as it goes onto the host's
 * authenticated connection, so the private key is never stored in clear in D1
 * nor shown in any job listing; a full export or an import gets its passphrase the same way.
 */
export async function payloadForDelivery(ctx: WorkContext, job: Job): Promise<unknown> {
  if (job.kind === "homeserver.full_export" || job.kind === "homeserver.import") return deliveredPassphrasePayload(ctx, job);
  const { db, config } = ctx;
  const kind = job.kind === "homeserver.restore" || job.kind === "homeserver.restore_verify" ? job.kind : undefined;
  const stored = kind && payloadOf(job, kind);
  if (!kind || !stored) return job.payload;
  const backup = await backupById(db, stored.backupId);
  // Gone meanwhile: the agent refuses a payload without an identity, and the job fails saying so.
  if (!backup) return stored;
  const identity = await backupIdentity(db, config.backupKeyWrappingSecret, backup.serverId);
  return checkDeliveredJobPayload(kind, { ...stored, identity });
}
