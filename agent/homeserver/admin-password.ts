// homeserver.set_admin_password: the admin's password hash written into
// Synapse's database, and that user's sessions ended.
import { SYNAPSE_PORT } from "./config.ts";
import type { HomeserverCore, OperationContext } from "./core.ts";
import { baseUrl, waitForClientApi } from "./synapse-api.ts";

const BCRYPT_HASH = /^\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}$/;
const USER_ID = /^@[a-z0-9._=\-/+]+:[A-Za-z0-9.-]+(:\d+)?$/;

/**
 * Writes a bcrypt hash (made by the control plane) as the admin's password,
 * straight into Synapse's database, and ends all of that user's sessions.
 * The SQL goes to psql on stdin, so the hash is in no command line. Synapse
 * caches access tokens in memory; when sessions existed, it is restarted so
 * that the deleted tokens stop working at once.
 */
export function setAdminPassword(
  core: HomeserverCore,
  serverId: string,
  adminUserId: string,
  passwordHash: string,
  ctx: OperationContext,
): Promise<{ serverId: string; adminUserId: string; sessionsEnded: number }> {
  return core.serialised(serverId, async () => {
    const record = core.requireRecord(serverId);
    const { names, log, step } = core.operation(serverId, ctx);
    if (!BCRYPT_HASH.test(passwordHash)) throw new Error("the password hash is not a bcrypt hash");
    if (!USER_ID.test(adminUserId) || !adminUserId.endsWith(`:${record.serverName}`)) {
      throw new Error(`${adminUserId} is not a user of ${record.serverName}`);
    }
    if (record.adminUserId && record.adminUserId !== adminUserId) {
      throw new Error(`${adminUserId} is not this homeserver's admin account (${record.adminUserId})`);
    }
    step(0.1, "making sure PostgreSQL runs");
    const sessionsEnded = await core.withPostgres(names, ctx, async () => {
      step(0.3, "writing the password hash");
      const q = (s: string) => `'${s.replaceAll("'", "''")}'`;
      const sql = [
        "BEGIN;",
        `WITH u AS (UPDATE users SET password_hash = ${q(passwordHash)} WHERE name = ${q(adminUserId)} RETURNING 1) SELECT 'updated=' || count(*) FROM u;`,
        `WITH t AS (DELETE FROM access_tokens WHERE user_id = ${q(adminUserId)} RETURNING 1) SELECT 'tokens=' || count(*) FROM t;`,
        `WITH r AS (DELETE FROM refresh_tokens WHERE user_id = ${q(adminUserId)} RETURNING 1) SELECT 'refresh=' || count(*) FROM r;`,
        "COMMIT;",
        "",
      ].join("\n");
      const result = await core.psql(names, sql);
      if (result.exitCode !== 0) throw new Error(`updating the password in PostgreSQL failed: ${result.stderr.trim().slice(0, 500)}`);
      const counts = Object.fromEntries(
        result.stdout
          .split("\n")
          .map((line) => /^(\w+)=(\d+)$/.exec(line.trim()))
          .filter((m): m is RegExpExecArray => m !== null)
          .map((m) => [m[1]!, Number(m[2])]),
      );
      if (counts.updated !== 1) throw new Error(`${adminUserId} does not exist on ${record.serverName}`);
      const tokensDeleted = (counts.tokens ?? 0) + (counts.refresh ?? 0);
      if (tokensDeleted > 0 && (await core.runtime.inspectContainer(names.synapse))?.State.Running) {
        step(0.6, "restarting Synapse to forget the ended sessions");
        await core.runtime.restartContainer(names.synapse, core.timeouts.stopSeconds);
        await core.waitSynapse(names, core.timeouts.synapseHealthyMs, ctx.signal);
        const ip = await core.synapseAddress(names);
        await waitForClientApi(baseUrl(ip, SYNAPSE_PORT), core.timeouts.clientApiMs, ctx.signal);
        await core.applyProxy(core.requireRecord(serverId), ip, log);
      }
      return counts.tokens ?? 0;
    });
    step(1, "admin password set");
    return { serverId, adminUserId, sessionsEnded };
  });
}
