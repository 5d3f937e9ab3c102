import { rotateSigningKeys } from "./auth/keyring";
import { pruneRateLimitWindows } from "./auth/rate-limit";
import { pruneExpiredSessions } from "./auth/sessions";
import { pruneTokens } from "./auth/tokens";
import { entitlementPolicy, expireEntitlements } from "./billing/entitlement";
import { database } from "./db/client";
import { failExpiredJobs } from "./fleet/jobs";
import { rollUpUsage } from "./fleet/usage";
import type { Env } from "./env";

/** The cron job: key rotation, entitlement and job deadlines, usage roll-ups, and pruning what has expired. */
export async function runScheduledMaintenance(env: Env, now: Date) {
  const db = database(env.DB);
  const keys = await rotateSigningKeys(db, env.SESSION_KEYRING_SECRET, now);
  const report = {
    event: "scheduled_maintenance",
    keyRotated: keys.rotated,
    keysDeleted: keys.deleted,
    sessionsPruned: await pruneExpiredSessions(db, now),
    tokensPruned: await pruneTokens(db, now),
    rateLimitWindowsPruned: await pruneRateLimitWindows(db, now),
    entitlementsExpired: await expireEntitlements(db, now, entitlementPolicy(env)),
    // Backstop for hosts whose Durable Object has no alarm (offline long enough to be forgotten).
    jobsExpired: await failExpiredJobs(db, null, now),
  };
  await rollUpUsage(db, now);
  console.log(JSON.stringify(report));
  return report;
}
