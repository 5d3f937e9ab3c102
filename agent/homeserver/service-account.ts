// The host's service account on each homeserver: a Synapse admin the agent
// runs the customers' administration jobs with (users, registration tokens).
// Its access token exists only on the host, in a root-only file beside the
// server's data (not in a backup, a job, a result or a log). Made at provision
// through the shared-secret registration; a server provisioned before gets it
// on first use. It never has a password (the registration's is thrown away),
// so its token is the only way to act as it; when that token no longer works
// (a restore brought back an older database, or the customer's own admin
// changed the account), the agent takes the account back through PostgreSQL
// with Synapse stopped, giving it a new token. A restore does the same to the
// restored database before Synapse starts on it, so no token a backup holds
// works afterwards.
import { closeSync, readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { z } from "zod";
import { writeFileAtomic } from "../atomic-file.ts";
import type { Logger } from "../log.ts";
import { openOwnedFileSync } from "../owned-directories.ts";
import { SERVICE_LOCALPART, SYNAPSE_PORT } from "./config.ts";
import type { HomeserverCore, OperationContext } from "./core.ts";
import type { HomeserverNames, HomeserverPaths } from "./names.ts";
import type { HomeserverRecord } from "./records.ts";
import { POSTGRES_DB, SECRET_FILES, randomSecret, readSecretFile } from "./secrets.ts";
import { HIDDEN_USER_TYPE, SynapseAdmin, SynapseAdminError } from "./synapse-admin.ts";
import { baseUrl, registerWithSharedSecret, waitForClientApi } from "./synapse-api.ts";

/** In the server's root-owned directory, which no container mounts (not secrets/, which is the server uid's). */
const CREDENTIALS_FILE = "service-account.json";

const credentials = z.object({ userId: z.string(), accessToken: z.string().min(1) });
type Credentials = z.infer<typeof credentials>;

export function serviceAccountId(serverName: string): string {
  return `@${SERVICE_LOCALPART}:${serverName}`;
}

export function credentialsPath(paths: HomeserverPaths): string {
  return join(paths.root, CREDENTIALS_FILE);
}

function readCredentials(paths: HomeserverPaths): Credentials | undefined {
  const fd = openOwnedFileSync(credentialsPath(paths));
  if (fd === undefined) return undefined;
  try {
    const parsed = credentials.safeParse(JSON.parse(readFileSync(fd, "utf8")));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

function writeCredentials(paths: HomeserverPaths, value: Credentials): void {
  writeFileAtomic(credentialsPath(paths), `${JSON.stringify(value)}\n`, 0o600, 0);
}

/** An access token Synapse never made: it only accepts it once it is in its database (a lookup, not a format). */
function newAccessToken(): string {
  return `syt_berth_${randomBytes(32).toString("base64url")}`;
}

/** Does the token act as the service account, a Synapse admin of the hidden type? */
async function works(base: string, userId: string, token: string, signal: AbortSignal): Promise<boolean> {
  try {
    const self = await new SynapseAdmin(base, token, signal).user(userId);
    return self?.admin === true && !self.deactivated && self.user_type === HIDDEN_USER_TYPE;
  } catch (error) {
    if (error instanceof SynapseAdminError && (error.status === 401 || error.status === 403)) return false;
    throw error;
  }
}

/**
 * SQL that makes the account the agent's again in `database`: an admin of the hidden type, active,
 * without a password, with `token` as its only access token. Only while no Synapse runs on that
 * database: Synapse numbers access tokens from its in-memory counter, read at start, and caches
 * what this changes. Prints "accounts=<n>" (0: no such account there).
 */
function takeBackSql(userId: string, token: string): string {
  const q = (s: string) => `'${s.replaceAll("'", "''")}'`;
  return [
    "BEGIN;",
    `WITH u AS (UPDATE users SET admin = 1, deactivated = 0, password_hash = NULL, user_type = ${q(HIDDEN_USER_TYPE)} WHERE name = ${q(userId)} RETURNING 1) SELECT 'accounts=' || count(*) FROM u;`,
    `DELETE FROM access_tokens WHERE user_id = ${q(userId)};`,
    `DELETE FROM refresh_tokens WHERE user_id = ${q(userId)};`,
    `INSERT INTO access_tokens (id, user_id, token, last_validated) SELECT (SELECT COALESCE(MAX(id), 0) + 1 FROM access_tokens), ${q(userId)}, ${q(token)}, ${Date.now()} WHERE EXISTS (SELECT 1 FROM users WHERE name = ${q(userId)});`,
    "COMMIT;",
    "",
  ].join("\n");
}

async function takeBack(core: HomeserverCore, names: HomeserverNames, userId: string, token: string, database: string): Promise<boolean> {
  const result = await core.psql(names, takeBackSql(userId, token), 60_000, database);
  if (result.exitCode !== 0) throw new Error(`taking the service account back in PostgreSQL failed: ${result.stderr.trim().slice(0, 300)}`);
  return /^accounts=1$/m.test(result.stdout);
}

/**
 * For a restore: gives the service account in the restored database (`database`, which no
 * Synapse uses yet) a new token, dropping every token the backup held. Returns the new
 * credentials, to be kept once the restored database is the live one; nothing when the backup
 * predates the account (it is then registered on first use).
 */
export async function rotateInRestoredDatabase(
  core: HomeserverCore,
  record: HomeserverRecord,
  names: HomeserverNames,
  database: string,
): Promise<Credentials | undefined> {
  const userId = serviceAccountId(record.serverName);
  const accessToken = newAccessToken();
  return (await takeBack(core, names, userId, accessToken, database)) ? { userId, accessToken } : undefined;
}

/** Keeps rotated credentials (after the restore that made them succeeded). */
export function keepRotatedCredentials(paths: HomeserverPaths, rotated: Credentials): void {
  writeCredentials(paths, rotated);
}

/**
 * The service account's token, working: the stored one if Synapse accepts it as the account's;
 * else the account registered (shared secret) if it does not exist; else taken back through
 * PostgreSQL, with Synapse stopped for it and started again. Synapse must be running. Callers
 * hold the server's lock, so nothing starts or stops Synapse meanwhile.
 */
export async function ensureServiceAccount(
  core: HomeserverCore,
  record: HomeserverRecord,
  names: HomeserverNames,
  paths: HomeserverPaths,
  ctx: Pick<OperationContext, "signal">,
  log: Logger,
): Promise<string> {
  const userId = serviceAccountId(record.serverName);
  let base = baseUrl(await core.synapseAddress(names), SYNAPSE_PORT);
  const stored = readCredentials(paths);
  if (stored && stored.userId === userId && (await works(base, userId, stored.accessToken, ctx.signal))) return stored.accessToken;

  const registered = await registerWithSharedSecret(
    base,
    readSecretFile(join(paths.secrets, SECRET_FILES.registrationSharedSecret), record.uid),
    { localpart: SERVICE_LOCALPART, password: randomSecret(32), admin: true, serverName: record.serverName, userType: HIDDEN_USER_TYPE },
    ctx.signal,
  );
  if (registered.created) {
    writeCredentials(paths, { userId, accessToken: registered.accessToken });
    log.info("service account registered", { userId });
    return registered.accessToken;
  }

  log.warn("the service account's token does not work (an older database restored, or changed by the server's own admin): taking it back", { userId });
  const accessToken = newAccessToken();
  await core.runtime.stopContainer(names.synapse, core.timeouts.stopSeconds);
  try {
    if (!(await takeBack(core, names, userId, accessToken, POSTGRES_DB))) throw new Error(`${userId} vanished while being taken back`);
    writeCredentials(paths, { userId, accessToken });
  } finally {
    await core.runtime.startContainer(names.synapse);
    await core.waitSynapse(names, core.timeouts.synapseHealthyMs, ctx.signal);
    base = baseUrl(await core.synapseAddress(names), SYNAPSE_PORT);
    await waitForClientApi(base, core.timeouts.clientApiMs, ctx.signal);
    await core.applyProxy(core.requireRecord(record.serverId), await core.synapseAddress(names), log);
  }
  if (!(await works(base, userId, accessToken, ctx.signal))) throw new Error(`the service account ${userId} does not work after being taken back`);
  return accessToken;
}

/** What an administration job works with: the admin API as the service account, and the server. */
export interface Administration {
  admin: SynapseAdmin;
  record: HomeserverRecord;
  names: HomeserverNames;
  paths: HomeserverPaths;
  log: Logger;
  /** Synapse's address from the host, for the client API. */
  base: string;
}

/**
 * Runs `fn` against the running homeserver's admin API as the service account, under the
 * server's lock: one administration job at a time per server (so a limit checked is still the
 * limit when the user is made), and none while Synapse is being stopped, restored or upgraded.
 */
export function administer<T>(core: HomeserverCore, serverId: string, ctx: OperationContext, fn: (administration: Administration) => Promise<T>): Promise<T> {
  return core.serialised(serverId, async () => {
    const record = core.requireRecord(serverId);
    const { names, paths, log } = core.operation(serverId, ctx);
    if (record.suspended) throw new Error(`homeserver ${serverId} is suspended`);
    await core.recoverInterruptedUpgrade(record, names, log);
    if (!(await core.runtime.inspectContainer(names.synapse))?.State.Running) throw new Error(`homeserver ${serverId} is not running: start it first`);
    const token = await ensureServiceAccount(core, record, names, paths, ctx, log);
    const base = baseUrl(await core.synapseAddress(names), SYNAPSE_PORT);
    return fn({ admin: new SynapseAdmin(base, token, ctx.signal), record, names, paths, log, base });
  });
}
