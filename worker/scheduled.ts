import { purgeDeletedAccounts } from "./account/deletion";
import { mailCheckFailureDigest } from "./checks/alerts";
import { pruneRefusalCounts } from "./audit/refusals";
import { rotateSigningKeys } from "./auth/keyring";
import { lapseAwaitingDelegations, recheckAwaitingDelegations } from "./checks/delegation";
import { pruneCheckResults } from "./checks/results";
import { scheduleDailyChecks } from "./checks/runs";
import { alertOverdueBackups, failAbandonedBackups, pruneBackups, scheduleDailyBackups } from "./backups/maintenance";
import { pruneRateLimitWindows } from "./auth/rate-limit";
import { pruneExpiredSessions } from "./auth/sessions";
import { pruneTokens } from "./auth/tokens";
import { expireEntitlements } from "./billing/entitlement";
import { scheduleWeeklyRestoreVerifications } from "./checks/restore-verification";
import { workContext } from "./context";
import { reconcileDns, writePendingDns } from "./dns/records";
import type { WorkerEnv } from "./env";
import { continueDrains } from "./fleet/drains";
import { markStaleHostsOffline } from "./fleet/hosts";
import { failExpiredJobs, pruneJobs } from "./fleet/jobs";
import { refreshMeasuredMemory, rollUpUsage } from "./fleet/usage";
import { reviewAllHosts } from "./fleet/tight-hosts";
import { resumeStalledDeletions, startDueDeletions } from "./servers/deletion";
import { enforceEntitlements, handleEntitlementEvents } from "./servers/entitlement-jobs";
import { applyPlanChanges } from "./servers/plan-changes";
import { checkStorageAlerts } from "./servers/storage-alerts";
import { recoverMigrations } from "./servers/migration";
import { applyJobOutcome } from "./servers/outcomes";
import { pruneUpkeepRuns, scheduleDailyUpkeep } from "./servers/upkeep";
import { pruneLegalExports } from "./legal/exports";
import { expireServerExports } from "./exports/exports";

/** wrangler.toml's crons: fleet liveness every minute, the rest hourly. */
export const EVERY_MINUTE = "* * * * *";

/**
 * The cron job. Every run: the fleet backstops (hosts whose Durable Object lost
 * its connection without noticing, jobs of hosts that never came back), storage
 * quota alerts and homeservers' DNS records pending. Hourly
 * (any other schedule): key rotation, entitlement deadlines, usage roll-ups,
 * pruning what has expired, backups (the daily ones, retention, abandoned
 * uploads, alerts for overdue ones, deletions due or stalled), migrations whose
 * step was lost and drains that can go on, the daily
 * database and media upkeep, the daily promise checks, their results past 30 days and the
 * daily digest of failing ones, legal exports' files past retention, full exports past their week, and homeservers' DNS records
 * brought in line (missing, wrong or left over).
 */
export async function runScheduledMaintenance(env: WorkerEnv, now: Date, cron: string) {
  const ctx = workContext(env, now);
  const { db, config } = ctx;
  for (const expired of await failExpiredJobs(db, null, now)) await applyJobOutcome(ctx, expired);
  const report: Record<string, unknown> = {
    event: "scheduled_maintenance",
    cron,
    hostsMarkedOffline: await markStaleHostsOffline(db, now),
    // Every minute: a quota can go from 95 % to full in well under an hour.
    storageAlertMails: await checkStorageAlerts(ctx),
    // Every minute: records a request left to write in the background, and those of hosts whose address changed.
    dnsPendingWritten: await writePendingDns(ctx),
  };
  if (cron !== EVERY_MINUTE) {
    const keys = await rotateSigningKeys(db, config.sessionKeyringSecret, now);
    Object.assign(report, {
      keyRotated: keys.rotated,
      keysDeleted: keys.deleted,
      sessionsPruned: await pruneExpiredSessions(db, now),
      tokensPruned: await pruneTokens(db, now),
      rateLimitWindowsPruned: await pruneRateLimitWindows(db, now),
      refusalCountsPruned: await pruneRefusalCounts(db, now),
      jobsPruned: await pruneJobs(db, now),
      entitlementsExpired: await expireEntitlements(db, now, config.entitlement),
    });
    await rollUpUsage(db, now);
    // Before the moves below: a host whose homeservers' peaks fell may take them again.
    await refreshMeasuredMemory(db, now);
    await reviewAllHosts(db, now);
    Object.assign(report, {
      abandonedBackupsFailed: await failAbandonedBackups(ctx),
      stalledDeletionsResumed: await resumeStalledDeletions(ctx),
      migrationsRecovered: await recoverMigrations(ctx),
      drainsContinued: await continueDrains(ctx),
      backupsPruned: await pruneBackups(ctx),
      legalExportFilesDeleted: await pruneLegalExports(ctx),
      serverExportsExpired: await expireServerExports(ctx),
      dueDeletionsStarted: await startDueDeletions(ctx),
      dailyBackupsStarted: await scheduleDailyBackups(ctx),
      overdueBackupAlerts: await alertOverdueBackups(ctx),
      restoreVerificationsSent: await scheduleWeeklyRestoreVerifications(ctx),
      dailyUpkeepSent: await scheduleDailyUpkeep(ctx),
      upkeepRecordsPruned: await pruneUpkeepRuns(db, now),
      dailyChecksStarted: await scheduleDailyChecks(ctx),
      awaitingDelegationsLapsed: await lapseAwaitingDelegations(ctx),
      awaitingDelegationsChecked: await recheckAwaitingDelegations(ctx),
      checkResultsPruned: await pruneCheckResults(db, now),
      checkDigestMails: await mailCheckFailureDigest(ctx),
      // After retention: an account goes once its servers' backups are gone.
      deletedAccountsPurged: await purgeDeletedAccounts(ctx),
    });
  }
  // Last: the hourly work above may have moved entitlements along.
  report.entitlementEventsHandled = await handleEntitlementEvents(ctx);
  if (cron !== EVERY_MINUTE) {
    Object.assign(report, {
      serversBroughtInLineWithBilling: await enforceEntitlements(ctx),
      planChangesApplied: await applyPlanChanges(ctx),
      // Last: deletions and placements above changed which records should exist.
      dns: await reconcileDns(ctx),
    });
  }
  console.log(JSON.stringify(report));
  return report;
}
