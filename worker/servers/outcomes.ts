import { and, eq, sql } from "drizzle-orm";
import type { AdministrationJobKind, HomeserverJobKind } from "../../protocol/jobs";
import { settleBackupJob } from "../backups/backups";
import { applyDelegationOutcome } from "../checks/delegation";
import { applyChecksOutcome } from "../checks/runs";
import type { WorkContext } from "../context";
import { applyFullExportOutcome } from "../exports/exports";
import { applyRestoreVerifyOutcome, requestRestoreVerification, verifyFirstBackup } from "../checks/restore-verification";
import { servers, type Job, type ServerStatus } from "../db/schema";
import { payloadOf, resultOf } from "../fleet/jobs";
import { applyImportOutcome } from "../imports/import-job";
import { applyLegalExportOutcome } from "../legal/exports";
import { deleteAfterFinalBackup, stopDeletion } from "./deletion";
import { enforceEntitlement } from "./entitlement-jobs";
import { applyMigrationOutcome } from "./migration";
import { applyResizeOutcome } from "./plan-changes";
import { applySettingsOutcome } from "./settings";
import { applyUpkeepOutcome } from "./upkeep";

interface Outcome {
  ok: ServerStatus;
  /** "previous": back to the status the server had before the step (which leaves it as it was when it fails). */
  failed: ServerStatus | "previous";
  /**
   * What the customer reads when it failed: our own words. The agent's error
   * (host paths, container names) stays in the job for operators.
   */
  failureReason: string;
}

type LifecycleJobKind = Exclude<
  HomeserverJobKind,
  | "homeserver.backup"
  | "homeserver.checks"
  | "homeserver.delegation_check"
  | "homeserver.full_export"
  | "homeserver.import"
  | "homeserver.legal_export"
  | "homeserver.resize"
  | "homeserver.restore_verify"
  | "homeserver.set_admin_password"
  | "homeserver.upkeep"
  | AdministrationJobKind
>;

// What each finished lifecycle job means for its server's status.
const OUTCOMES: Record<LifecycleJobKind, Outcome> = {
  "homeserver.provision": { ok: "running", failed: "failed", failureReason: "setting up the homeserver failed" },
  "homeserver.stop": { ok: "stopped", failed: "running", failureReason: "stopping failed" },
  "homeserver.start": { ok: "running", failed: "stopped", failureReason: "starting failed" },
  "homeserver.suspend": { ok: "suspended", failed: "failed", failureReason: "suspending failed; we try again" },
  // Not back to suspended: the account may run again, and the hourly backstop would resume it again and again.
  "homeserver.resume": { ok: "running", failed: "failed", failureReason: "resuming failed" },
  "homeserver.delete": { ok: "deleted", failed: "failed", failureReason: "deleting failed" },
  // The agent rolls a failed upgrade back to the version that worked.
  "homeserver.upgrade": { ok: "running", failed: "running", failureReason: "the upgrade failed and was rolled back" },
  // The agent restores into a fresh database and leaves the running homeserver untouched when that fails.
  "homeserver.restore": { ok: "running", failed: "previous", failureReason: "the restore failed and the homeserver was left as it was" },
};

/**
 * Applied by the host's Durable Object (or the cron, for deadlines) when a job's
 * result is first recorded. A lifecycle job moves its server's status only
 * while it is the server's lifecycle job: an outcome that arrives after a
 * newer step (a suspension, a deletion) took over changes nothing. Then the
 * account's entitlement is enforced on the status the job left: work that
 * was under way when billing suspended the account ends in a suspension.
 */
export async function applyJobOutcome(ctx: WorkContext, job: Job): Promise<void> {
  // A move's steps are its own: the server's status follows the migration, not the job's kind.
  if (await applyMigrationOutcome(ctx, job)) return;
  if (job.kind === "homeserver.backup") return applyBackupOutcome(ctx, job);
  if (job.kind === "homeserver.restore_verify") return applyRestoreVerifyOutcome(ctx, job);
  if (job.kind === "homeserver.resize") return applyResizeOutcome(ctx, job);
  if (job.kind === "homeserver.settings.apply") return applySettingsOutcome(ctx, job);
  if (job.kind === "homeserver.upkeep") return applyUpkeepOutcome(ctx, job);
  if (job.kind === "homeserver.checks") return applyChecksOutcome(ctx, job);
  if (job.kind === "homeserver.delegation_check") return applyDelegationOutcome(ctx, job);
  if (job.kind === "homeserver.legal_export") return applyLegalExportOutcome(ctx, job);
  if (job.kind === "homeserver.full_export") return applyFullExportOutcome(ctx, job);
  if (job.kind === "homeserver.import") return applyImportOutcome(ctx, job);
  if (!isLifecycleJob(job.kind) || !job.serverId) return;
  const outcome = OUTCOMES[job.kind];
  const ok = job.status === "succeeded";
  const result = resultOf(job, job.kind);
  const synapseVersion = result && "synapseVersion" in result ? result.synapseVersion : undefined;
  const adminUserId = result && "adminUserId" in result ? result.adminUserId : undefined;
  const provisionedPlan = payloadOf(job, "homeserver.provision")?.planId;
  const failed = outcome.failed === "previous" ? sql`coalesce(${servers.previousStatus}, 'failed')` : outcome.failed;
  const [moved] = await ctx.db
    .update(servers)
    .set({
      status: ok ? outcome.ok : failed,
      statusReason: ok ? null : outcome.failureReason,
      previousStatus: null,
      ...(ok && synapseVersion ? { synapseVersion } : {}),
      ...(ok && adminUserId ? { adminUserId } : {}),
      ...(ok && provisionedPlan ? { appliedPlanId: provisionedPlan } : {}),
      updatedAt: ctx.now,
    })
    .where(and(eq(servers.id, job.serverId), eq(servers.hostId, job.hostId), eq(servers.lifecycleJobId, job.id)))
    .returning();
  // A suspension that failed is tried again by the hourly backstop, not at once (no loop of failing jobs).
  if (moved && job.kind !== "homeserver.suspend") await enforceEntitlement(ctx, moved);
  // A new Synapse must still restore the backups it will be restored from.
  if (moved?.status === "running" && ok && job.kind === "homeserver.upgrade") await requestRestoreVerification(ctx, moved);
}

function isLifecycleJob(kind: string): kind is LifecycleJobKind {
  return Object.hasOwn(OUTCOMES, kind);
}

/** A backup its job left unfinished has failed; a final backup's outcome decides whether its server is deleted. */
async function applyBackupOutcome(ctx: WorkContext, job: Job): Promise<void> {
  const backup = await settleBackupJob(ctx, job);
  if (backup) await verifyFirstBackup(ctx, backup);
  if (backup?.trigger !== "final") return;
  if (backup.status === "succeeded") await deleteAfterFinalBackup(ctx, backup);
  else await stopDeletion(ctx, backup.serverId);
}
