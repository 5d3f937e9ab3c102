// The restore-verified promise check: a homeserver's latest backup restored by its host into a
// throwaway sandbox (homeserver.restore_verify) and the restored counts compared with the manifest
// the host counted at backup time. Weekly per running homeserver (its own hour and day), after each
// successful upgrade, and when its first backup completes.
import { and, desc, eq } from "drizzle-orm";
import type { CheckResultKind } from "../../protocol/checks";
import type { BackupCounts } from "../../protocol/jobs";
import { audit } from "../audit/audit";
import { agentUrl } from "../backups/backups";
import { serverSpread } from "../backups/maintenance";
import type { WorkContext } from "../context";
import { backups, servers, type Backup, type Job, type Server } from "../db/schema";
import { dispatchJob } from "../fleet/hosts";
import { resultOf, unfinishedJobsOfKind } from "../fleet/jobs";
import { logError } from "../logging";
import { recordCheckResults } from "./results";

const HOURS_IN_WEEK = 7 * 24;
const VERIFICATION_HOURS_AFTER_BACKUP = 3;

/**
 * The hour of the week (0 = Sunday 00:00 UTC) a server's weekly verification is sent: spread by its id,
 * three hours after that day's backup started, so it verifies that backup and never runs beside it.
 */
export function weeklyVerificationHour(serverId: string): number {
  return (serverSpread(serverId) + VERIFICATION_HOURS_AFTER_BACKUP) % HOURS_IN_WEEK;
}

/** Sends `homeserver.restore_verify` for the server's latest successful backup; none while one is under way or it has no backup. */
export async function requestRestoreVerification(ctx: WorkContext, server: Server): Promise<Job | undefined> {
  if (!server.hostId || server.status !== "running") return undefined;
  const [backup] = await ctx.db
    .select()
    .from(backups)
    .where(and(eq(backups.serverId, server.id), eq(backups.status, "succeeded")))
    .orderBy(desc(backups.completedAt))
    .limit(1);
  if (!backup) return undefined;
  const underWay = await unfinishedJobsOfKind(ctx.db, server.hostId, ["homeserver.restore_verify"]);
  if (underWay.some((job) => job.serverId === server.id)) return undefined;
  // Built from D1 alone: a host can only ever be sent its own server's backup.
  const payload = { serverId: server.id, backupId: backup.id, downloadUrl: agentUrl(ctx.config, `/api/agent/backups/${backup.id}/object`) };
  return dispatchJob(ctx.db, ctx.env, { hostId: server.hostId, kind: "homeserver.restore_verify", payload }, ctx.now);
}

/** The hourly cron: each running homeserver whose hour of the week this is. */
export async function scheduleWeeklyRestoreVerifications(ctx: WorkContext): Promise<number> {
  const hourOfWeek = ctx.now.getUTCDay() * 24 + ctx.now.getUTCHours();
  const running = await ctx.db.select().from(servers).where(eq(servers.status, "running"));
  let sent = 0;
  for (const server of running.filter((candidate) => weeklyVerificationHour(candidate.id) === hourOfWeek)) {
    try {
      if (await requestRestoreVerification(ctx, server)) sent++;
    } catch (error) {
      // One server's trouble must not cost the others their verification.
      logError("restore_verification_failed", error, { serverId: server.id });
    }
  }
  return sent;
}

/** A server's first successful backup is verified at once, so that a new homeserver shows "restore verified" within minutes. */
export async function verifyFirstBackup(ctx: WorkContext, backup: Backup): Promise<void> {
  if (backup.status !== "succeeded") return;
  const succeeded = await ctx.db
    .select({ id: backups.id })
    .from(backups)
    .where(and(eq(backups.serverId, backup.serverId), eq(backups.status, "succeeded")))
    .limit(2);
  if (succeeded.length !== 1) return;
  const [server] = await ctx.db.select().from(servers).where(eq(servers.id, backup.serverId));
  if (server) await requestRestoreVerification(ctx, server);
}

const COUNT_NAMES: Record<keyof BackupCounts, string> = { users: "users", rooms: "rooms", events: "events", mediaFiles: "media files" };

function manifestOf(backup: Backup): BackupCounts | undefined {
  const { userCount: users, roomCount: rooms, eventCount: events, mediaFileCount: mediaFiles } = backup;
  if (users === null || rooms === null || events === null || mediaFiles === null) return undefined;
  return { users, rooms, events, mediaFiles };
}

interface Verdict {
  result: CheckResultKind;
  summary: string;
  facts: Array<{ label: string; value: string }>;
}

/** What the finished job says about the promise, in the customer's words (the agent's own error stays in the job). */
export function restoreVerdict(job: Job, backup: Backup): Verdict {
  const backupFact = { label: "Backup", value: `taken ${(backup.completedAt ?? backup.createdAt).toISOString()}` };
  const restored = resultOf(job, "homeserver.restore_verify");
  // An agent older than the kind answers it as unknown (agent/jobs.ts): that says nothing about the backup.
  if (!restored && job.error?.startsWith("unknown job kind")) {
    return { result: "could_not_check", summary: "The host does not run restore verifications yet; this backup was not checked.", facts: [backupFact] };
  }
  if (!restored) {
    return {
      result: "fails",
      summary: `The backup could not be restored: ${job.status === "failed" ? "restoring it in a sandbox on the host failed" : "its verification did not finish"}.`,
      facts: [backupFact],
    };
  }
  const manifest = manifestOf(backup);
  const keys = Object.keys(COUNT_NAMES) as Array<keyof BackupCounts>;
  const facts = [
    backupFact,
    ...keys.map((key) => ({ label: `Restored ${COUNT_NAMES[key]}`, value: `${restored.counts[key]}${manifest ? ` (backed up: ${manifest[key]})` : ""}` })),
  ];
  const differing = manifest ? keys.filter((key) => manifest[key] !== restored.counts[key]) : [];
  if (differing.length > 0) {
    const named = differing.map((key) => `${COUNT_NAMES[key]} (${restored.counts[key]} restored, ${manifest![key]} backed up)`).join(", ");
    return { result: "fails", summary: `The restored backup does not match what was backed up: ${named}.`, facts };
  }
  return {
    result: "holds",
    summary: manifest
      ? "The latest backup was restored in a throwaway sandbox, Synapse started on it, and it holds everything that was backed up."
      : "The latest backup was restored in a throwaway sandbox and Synapse started on it (the backup predates the counts it could be compared with).",
    facts,
  };
}

/**
 * Records a finished verification: only for the backup the job was sent for, of a server the
 * reporting host runs (a host's result about another host's server changes nothing).
 */
export async function applyRestoreVerifyOutcome(ctx: WorkContext, job: Job): Promise<void> {
  if (!job.serverId || !job.backupId) return;
  const [row] = await ctx.db
    .select({ server: servers, backup: backups })
    .from(backups)
    .innerJoin(servers, eq(servers.id, backups.serverId))
    .where(and(eq(backups.id, job.backupId), eq(backups.serverId, job.serverId), eq(servers.hostId, job.hostId)));
  if (!row) return;
  const verdict = restoreVerdict(job, row.backup);
  await recordCheckResults(ctx, [
    {
      userId: row.server.userId,
      serverId: row.server.id,
      checkId: "restore-verified",
      result: verdict.result,
      evidence: { summary: verdict.summary, facts: verdict.facts },
      jobId: job.id,
    },
  ]);
  await audit(ctx.db, ctx.now, "system", "check.restore_verified", row.server.id, { result: verdict.result, backupId: row.backup.id, jobId: job.id });
}
