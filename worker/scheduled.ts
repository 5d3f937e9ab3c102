import { rotateSigningKeys } from "./auth/keyring";
import { pruneRateLimitWindows } from "./auth/rate-limit";
import { pruneExpiredSessions } from "./auth/sessions";
import { pruneTokens } from "./auth/tokens";
import { entitlementPolicy, expireEntitlements } from "./billing/entitlement";
import { database } from "./db/client";
import type { Env } from "./env";
import { markStaleHostsOffline } from "./fleet/hosts";
import { failExpiredJobs } from "./fleet/jobs";
import { rollUpUsage } from "./fleet/usage";
import { handleEntitlementEvents } from "./servers/entitlement-jobs";
import { applyJobOutcome } from "./servers/outcomes";

/** wrangler.toml's crons: fleet liveness every minute, the rest hourly. */
export const EVERY_MINUTE = "* * * * *";

/**
 * The cron job. Every run: the fleet backstops (hosts whose Durable Object lost
 * its connection without noticing, jobs of hosts that never came back). Hourly
 * (any other schedule): key rotation, entitlement deadlines, usage roll-ups and
 * pruning what has expired.
 */
export async function runScheduledMaintenance(env: Env, now: Date, cron: string) {
  const db = database(env.DB);
  for (const expired of await failExpiredJobs(db, null, now)) await applyJobOutcome(db, expired, now);
  const report: Record<string, unknown> = {
    event: "scheduled_maintenance",
    cron,
    hostsMarkedOffline: await markStaleHostsOffline(db, now),

  };
  if (cron !== EVERY_MINUTE) {
    const keys = await rotateSigningKeys(db, env.SESSION_KEYRING_SECRET, now);
    Object.assign(report, {
      keyRotated: keys.rotated,
      keysDeleted: keys.deleted,
      sessionsPruned: await pruneExpiredSessions(db, now),
      tokensPruned: await pruneTokens(db, now),
      rateLimitWindowsPruned: await pruneRateLimitWindows(db, now),
      entitlementsExpired: await expireEntitlements(db, now, entitlementPolicy(env)),
    });
    await rollUpUsage(db, now);
  }
  // Last: the hourly work above may have moved entitlements along.
  report.entitlementEventsHandled = await handleEntitlementEvents(db, env, now);
  console.log(JSON.stringify(report));
  return report;
}
