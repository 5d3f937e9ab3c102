// homeserver.set_admin_password: the first admin's password, set the one way
// any user's is (homeserver.users.set_password), once the job is known to
// name this homeserver's admin account.
import type { HomeserverCore, OperationContext } from "./core.ts";
import { assertChangeableUser, setUserPassword } from "./users.ts";

/**
 * Writes a bcrypt hash (made by the control plane) as the admin's password and ends every
 * session of the admin, as setUserPassword does for any user: only the account the homeserver
 * was provisioned with is taken here.
 */
export async function setAdminPassword(
  core: HomeserverCore,
  serverId: string,
  adminUserId: string,
  passwordHash: string,
  ctx: OperationContext,
): Promise<{ serverId: string; adminUserId: string; sessionsEnded: number }> {
  const record = core.requireRecord(serverId);
  assertChangeableUser(record, adminUserId);
  if (record.adminUserId && record.adminUserId !== adminUserId) {
    throw new Error(`${adminUserId} is not this homeserver's admin account (${record.adminUserId})`);
  }
  const { sessionsEnded } = await setUserPassword(core, { serverId, userId: adminUserId, passwordHash }, ctx);
  return { serverId, adminUserId, sessionsEnded };
}
