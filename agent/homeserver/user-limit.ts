// The plan's bound on a homeserver's users, as the agent applies it where it
// adds users or the means to add them: the users who can use the server, plus
// the registrations its registration tokens still allow.
import { join } from "node:path";
import { USER_LIMIT_FILE } from "./config.ts";
import type { HomeserverPaths } from "./names.ts";
import { writeOwnedFile } from "./secrets.ts";
import type { SynapseAdmin, SynapseRegistrationToken } from "./synapse-admin.ts";

export interface UserUsage {
  /** Users neither deactivated nor hidden (the service account is not one). */
  users: number;
  /** Registrations the tokens still allow. */
  reserved: number;
}

/**
 * What a token still allows: the uses left of one that has not expired (those pending too:
 * they complete), the pending ones of one that has (Synapse lets a registration that passed the
 * token step finish). A token without a bound (only an admin calling Synapse's API directly can
 * make one) could fill the whole plan: it reserves all of it.
 */
export function tokenReserves(token: SynapseRegistrationToken, maxUsers: number, now: number): number {
  if (token.expiry_time !== null && token.expiry_time <= now) return token.pending;
  if (token.uses_allowed === null) return maxUsers;
  return Math.max(0, token.uses_allowed - token.completed);
}

export async function userUsage(admin: SynapseAdmin, maxUsers: number, now = Date.now()): Promise<UserUsage> {
  const [users, tokens] = await Promise.all([admin.activeUsers(), admin.registrationTokens()]);
  return { users, reserved: tokens.reduce((sum, token) => sum + tokenReserves(token, maxUsers, now), 0) };
}

/**
 * Hands the plan's bound to Synapse's own check (config.ts userLimitModule), which reads it at
 * each registration: every job carrying maxUsers writes it, so a plan's new bound applies from
 * the next one, without a restart.
 */
export function writeUserLimit(paths: HomeserverPaths, uid: number, maxUsers: number): void {
  writeOwnedFile(join(paths.synapse, USER_LIMIT_FILE), `${maxUsers}\n`, uid);
}
