// homeserver.users.*: a homeserver's users listed, created, given a password
// and changed, through Synapse's admin API as the service account
// (service-account.ts). Every user named in a job must be of this server, and
// never the service account, which is also left out of every list and count.
import type { JobPayload, JobResult } from "../../protocol/jobs.ts";
import type { HomeserverCore, OperationContext } from "./core.ts";
import type { HomeserverNames } from "./names.ts";
import type { HomeserverRecord } from "./records.ts";
import { randomSecret } from "./secrets.ts";
import { SERVICE_LOCALPART } from "./config.ts";
import { administer } from "./service-account.ts";
import type { ListedUser, SingleUser, SynapseAdmin } from "./synapse-admin.ts";
import { userUsage, writeUserLimit } from "./user-limit.ts";

export type HomeserverUser = JobResult<"homeserver.users.list">["users"][number];
type UserAction = JobPayload<"homeserver.users.update">["action"];

const LOCALPART_AND_SERVER = /^@([a-z0-9._=\-/+]+):(.+)$/;
const BCRYPT_HASH = /^\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}$/;

/** Refuses a user of another server, and the service account, before anything is done. */
export function assertChangeableUser(record: HomeserverRecord, userId: string): void {
  const match = LOCALPART_AND_SERVER.exec(userId);
  if (!match || match[2] !== record.serverName) throw new Error(`${userId} is not a user of ${record.serverName}`);
  if (match[1] === SERVICE_LOCALPART) throw new Error(`${userId} is the host's service account, which no job changes`);
}

const sqlString = (s: string) => `'${s.replaceAll("'", "''")}'`;

/**
 * Device count and local media bytes of each user, in one query: the admin API has them only one
 * user (devices) or one page of uploaders (media) at a time.
 */
async function deviceAndMediaCounts(
  core: HomeserverCore,
  names: HomeserverNames,
  userIds: string[],
): Promise<Map<string, { devices: number; mediaBytes: number }>> {
  const counts = new Map<string, { devices: number; mediaBytes: number }>();
  if (userIds.length === 0) return counts;
  const sql = [
    "SELECT u.id || '|' ||",
    "  (SELECT count(*) FROM devices d WHERE d.user_id = u.id AND NOT d.hidden) || '|' ||",
    "  (SELECT COALESCE(sum(m.media_length), 0) FROM local_media_repository m WHERE m.user_id = u.id)",
    `FROM unnest(ARRAY[${userIds.map(sqlString).join(", ")}]::text[]) AS u(id);`,
    "",
  ].join("\n");
  const result = await core.psql(names, sql);
  if (result.exitCode !== 0) throw new Error(`counting devices and media failed: ${result.stderr.trim().slice(0, 300)}`);
  for (const line of result.stdout.split("\n")) {
    const match = /^(.+)\|(\d+)\|(\d+)$/.exec(line.trim());
    if (match) counts.set(match[1]!, { devices: Number(match[2]), mediaBytes: Number(match[3]) });
  }
  return counts;
}

function listed(user: ListedUser | SingleUser, createdAt: number | null, counts: { devices: number; mediaBytes: number } | undefined): HomeserverUser {
  return {
    userId: user.name,
    displayName: user.displayname,
    admin: user.admin,
    deactivated: user.deactivated,
    createdAt,
    lastSeenAt: user.last_seen_ts,
    devices: counts?.devices ?? 0,
    mediaBytes: counts?.mediaBytes ?? 0,
  };
}

/** One user as the list shows it (the single-user answer gives its creation in seconds). */
async function userAsListed(core: HomeserverCore, names: HomeserverNames, admin: SynapseAdmin, userId: string): Promise<HomeserverUser> {
  const user = await admin.user(userId);
  if (!user) throw new Error(`${userId} does not exist`);
  const counts = await deviceAndMediaCounts(core, names, [userId]);
  return listed(user, user.creation_ts === null ? null : user.creation_ts * 1000, counts.get(userId));
}

/** A page of users by Matrix id, searched by id or display name; `from` and `nextFrom` are offsets in that order. */
export function listUsers(
  core: HomeserverCore,
  query: JobPayload<"homeserver.users.list">,
  ctx: OperationContext,
): Promise<JobResult<"homeserver.users.list">> {
  return administer(core, query.serverId, ctx, async ({ admin, names }) => {
    const page = await admin.users({ from: query.from, limit: query.limit, ...(query.search ? { search: query.search } : {}) });
    const counts = await deviceAndMediaCounts(
      core,
      names,
      page.users.map((u) => u.name),
    );
    const next = query.from + page.users.length;
    return {
      users: page.users.map((user) => listed(user, user.creation_ts, counts.get(user.name))),
      total: page.total,
      nextFrom: page.users.length > 0 && next < page.total ? next : null,
    };
  });
}

/**
 * Creates a user without a password (the owner gets a one-time link that sets one:
 * homeserver.users.set_password). Taken: the id exists, deactivated or not (Synapse never gives
 * one out again), or is the service account's. Refused at the plan's bound: the users plus what
 * the registration tokens still allow.
 */
export function createUser(
  core: HomeserverCore,
  payload: JobPayload<"homeserver.users.create">,
  ctx: OperationContext,
): Promise<JobResult<"homeserver.users.create">> {
  return administer(core, payload.serverId, ctx, async ({ admin, record, paths, log }) => {
    writeUserLimit(paths, record.uid, payload.maxUsers);
    const userId = `@${payload.localpart}:${record.serverName}`;
    if (payload.localpart === SERVICE_LOCALPART || (await admin.user(userId))) return { outcome: "taken" as const, userId };
    const usage = await userUsage(admin, payload.maxUsers);
    if (usage.users + usage.reserved >= payload.maxUsers) return { outcome: "user_limit" as const, ...usage, maxUsers: payload.maxUsers };
    await admin.createUser(userId, payload.displayName);
    log.info("user created", { userId });
    return { outcome: "created" as const, userId };
  });
}

/**
 * Writes a bcrypt hash (made by the control plane: the password never reaches the host) as the
 * user's password and ends every session of the user. Synapse's admin API takes only a password
 * in clear, so the sessions are ended by setting a random one through it (which logs out every
 * device and token, and clears Synapse's caches of them), then the hash is written over it in
 * PostgreSQL (psql's stdin: in no command line). Synapse reads a password hash from the
 * database at each log-in, so the new password works at once.
 */
export function setUserPassword(
  core: HomeserverCore,
  payload: JobPayload<"homeserver.users.set_password">,
  ctx: OperationContext,
): Promise<JobResult<"homeserver.users.set_password">> {
  const { serverId, userId, passwordHash } = payload;
  assertChangeableUser(core.requireRecord(serverId), userId);
  if (!BCRYPT_HASH.test(passwordHash)) throw new Error("the password hash is not a bcrypt hash");
  return administer(core, serverId, ctx, async ({ admin, names, log }) => {
    const user = await admin.user(userId);
    if (!user) throw new Error(`${userId} does not exist`);
    if (user.deactivated) throw new Error(`${userId} is deactivated`);
    const sessionsEnded = (await admin.deviceIds(userId)).length;
    await admin.setPasswordEndingSessions(userId, randomSecret(32));
    const sql = `WITH u AS (UPDATE users SET password_hash = ${sqlString(passwordHash)} WHERE name = ${sqlString(userId)} RETURNING 1) SELECT 'updated=' || count(*) FROM u;\n`;
    const result = await core.psql(names, sql);
    if (result.exitCode !== 0) throw new Error(`writing the password hash failed: ${result.stderr.trim().slice(0, 300)}`);
    if (!/^updated=1$/m.test(result.stdout)) throw new Error(`${userId} vanished while its password was set`);
    log.info("user's password set, sessions ended", { userId, sessionsEnded });
    return { serverId, userId, sessionsEnded };
  });
}

/** Makes or unmakes an admin, deactivates (erasing or not), or logs out of every device; reports the user as listed after. */
export function updateUser(
  core: HomeserverCore,
  payload: JobPayload<"homeserver.users.update">,
  ctx: OperationContext,
): Promise<JobResult<"homeserver.users.update">> {
  const { serverId, userId, action } = payload;
  assertChangeableUser(core.requireRecord(serverId), userId);
  return administer(core, serverId, ctx, async ({ admin, names, log }) => {
    if (!(await admin.user(userId))) throw new Error(`${userId} does not exist`);
    const devicesLoggedOut = await apply(admin, userId, action);
    log.info("user updated", { userId, action, devicesLoggedOut });
    return { serverId, user: await userAsListed(core, names, admin, userId), devicesLoggedOut };
  });
}

/** Runs the action; returns how many devices it logged out. */
async function apply(admin: SynapseAdmin, userId: string, action: UserAction): Promise<number> {
  switch (action) {
    case "make_admin":
    case "unmake_admin":
      await admin.setAdmin(userId, action === "make_admin");
      return 0;
    case "deactivate":
    case "deactivate_and_erase": {
      const devices = await admin.deviceIds(userId);
      await admin.deactivate(userId, action === "deactivate_and_erase");
      return devices.length;
    }
    case "log_out": {
      const devices = await admin.deviceIds(userId);
      await admin.deleteDevices(userId, devices);
      return devices.length;
    }
  }
}
