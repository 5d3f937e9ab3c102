import { and, eq, gt, gte, inArray, isNotNull, isNull, ne, notExists, notInArray, or, sql, type SQL } from "drizzle-orm";
import { alias, type AnySQLiteColumn } from "drizzle-orm/sqlite-core";
import type { CheckId } from "../../protocol/checks";
import { audit } from "../audit/audit";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { auditLog, checkResults, servers, users, type CheckResultRow } from "../db/schema";
import { logError } from "../logging";
import { mailerFor } from "../mail/mailer";
import { templates } from "../mail/templates";
import { matrixServerNameOf } from "../servers/servers";

// Operators hear about promise checks that fail: an audit entry and a log line per failing run, the
// console's front page lists what fails now, and a daily digest mails what failed in the last day.

export const CHECK_FAILED_ACTION = "check.failed";
export const CHECK_DIGEST_ACTION = "check.digest_sent";
/** The UTC hour the hourly cron mails the digest: early morning in the US regions. */
export const CHECK_DIGEST_HOUR = 12;
const DAY_MS = 24 * 60 * 60 * 1000;
/**
 * Checks whose failure is the customer's to fix, not ours: the delegation check judges the documents
 * they publish on their own domain, and its evidence quotes them. Their owner is told
 * (checks/delegation.ts); operators are not alerted, and none of it enters an operator's log line,
 * console or mail.
 */
export const CUSTOMERS_OWN_CHECKS: readonly string[] = ["delegation"] satisfies CheckId[];

/**
 * For each failing result just recorded: an audit entry (by "system", about the server, or the
 * account for an account check) and one warning log line naming the check, server and host. Only
 * our own words go in (check id, ids, the evidence's summary). A row already audited is skipped, so
 * a repeated call with the same rows alerts once.
 */
export async function noteCheckFailures(ctx: WorkContext, rows: CheckResultRow[]): Promise<number> {
  const failing = rows.filter((row) => row.result === "fails" && !CUSTOMERS_OWN_CHECKS.includes(row.checkId));
  if (failing.length === 0) return 0;
  const ids = failing.map((row) => row.id);
  // A row is noted after it was checked: the index on the log's time keeps this to recent entries.
  const earliest = new Date(Math.min(...failing.map((row) => row.checkedAt.getTime())));
  const alreadyNoted = await ctx.db
    .select({ resultId: sql<string>`json_extract(${auditLog.detail}, '$.resultId')` })
    .from(auditLog)
    .where(and(gte(auditLog.at, earliest), eq(auditLog.action, CHECK_FAILED_ACTION), inArray(sql`json_extract(${auditLog.detail}, '$.resultId')`, ids)));
  const noted = new Set(alreadyNoted.map((entry) => entry.resultId));
  const serverIds = [...new Set(failing.flatMap((row) => (row.serverId ? [row.serverId] : [])))];
  const hosts =
    serverIds.length === 0
      ? new Map<string, string | null>()
      : new Map(
          (await ctx.db.select({ id: servers.id, hostId: servers.hostId }).from(servers).where(inArray(servers.id, serverIds))).map((server) => [
            server.id,
            server.hostId,
          ]),
        );
  let alerted = 0;
  for (const row of failing.filter((candidate) => !noted.has(candidate.id))) {
    const detail = { resultId: row.id, checkId: row.checkId, serverId: row.serverId, hostId: row.serverId ? (hosts.get(row.serverId) ?? null) : null };
    console.warn(JSON.stringify({ event: "check_failed", ...detail }));
    await audit(ctx.db, ctx.now, "system", CHECK_FAILED_ACTION, row.serverId ?? row.userId, { ...detail, summary: row.summary });
    alerted++;
  }
  return alerted;
}

/** Results of the same subject (the server, or the account for an account check) and check as `checkResults`. */
function sameSubject(other: Record<"checkId" | "userId" | "serverId", AnySQLiteColumn>): SQL {
  return and(
    eq(other.checkId, checkResults.checkId),
    eq(other.userId, checkResults.userId),
    or(eq(other.serverId, checkResults.serverId), and(isNull(other.serverId), isNull(checkResults.serverId))),
  )!;
}

/** What operators see of a failing result: ids and our own finding, never a customer's email. */
const FAILURE_COLUMNS = {
  checkId: checkResults.checkId,
  summary: checkResults.summary,
  checkedAt: checkResults.checkedAt,
  userId: checkResults.userId,
  /** Null for an account check, and so are the server's name and host. */
  serverId: checkResults.serverId,
  serverName: servers.name,
  customServerName: servers.serverName,
  hostId: servers.hostId,
};

export interface CheckFailure {
  checkId: string;
  summary: string;
  checkedAt: Date;
  userId: string;
  serverId: string | null;
  serverName: string | null;
  hostId: string | null;
}

export interface FailingCheck extends CheckFailure {
  /** The first failure of the run of failures that is still going on. */
  failingSince: Date;
}

export interface FleetCheckStatus {
  failing: FailingCheck[];
  /** Subjects and checks whose latest result is "could not check". */
  couldNotCheck: number;
}

/**
 * Across the fleet, each check whose latest result (per server, or per account) fails, the longest
 * failing first, and how many could not be checked: one query. Deleted servers are left out.
 */
export async function fleetCheckStatus(db: Database): Promise<FleetCheckStatus> {
  const newer = alias(checkResults, "newer");
  const earlier = alias(checkResults, "earlier");
  const held = alias(checkResults, "held");
  const lastHeld = db
    .select({ at: sql`coalesce(max(${held.checkedAt}), 0)` })
    .from(held)
    .where(and(sameSubject(held), ne(held.result, "fails")));
  const rows = await db
    .select({
      ...FAILURE_COLUMNS,
      result: checkResults.result,
      failingSince: sql<number>`(${db
        .select({ at: sql`min(${earlier.checkedAt})` })
        .from(earlier)
        .where(and(sameSubject(earlier), gt(earlier.checkedAt, sql`(${lastHeld})`)))})`,
    })
    .from(checkResults)
    .leftJoin(servers, eq(servers.id, checkResults.serverId))
    .where(
      and(
        inArray(checkResults.result, ["fails", "could_not_check"]),
        notInArray(checkResults.checkId, [...CUSTOMERS_OWN_CHECKS]),
        or(isNull(checkResults.serverId), ne(servers.status, "deleted")),
        notExists(
          db
            .select({ id: newer.id })
            .from(newer)
            .where(and(sameSubject(newer), gt(newer.checkedAt, checkResults.checkedAt))),
        ),
      ),
    );
  const failing = rows
    .filter((row) => row.result === "fails")
    .map(({ result: _, failingSince, ...row }) => ({ ...row, failingSince: new Date(failingSince) }))
    .sort((a, b) => a.failingSince.getTime() - b.failingSince.getTime());
  return { failing, couldNotCheck: rows.length - failing.length };
}

/**
 * The daily digest (the hourly cron, in CHECK_DIGEST_HOUR): when any check failed in the last 24
 * hours, one mail to each operator listing every failure. The audit log records it was sent, so a
 * second run in that hour sends nothing. Returns the number of mails sent.
 */
export async function mailCheckFailureDigest(ctx: WorkContext): Promise<number> {
  const { db, now } = ctx;
  if (now.getUTCHours() !== CHECK_DIGEST_HOUR) return 0;
  const hourStart = new Date(Math.floor(now.getTime() / (DAY_MS / 24)) * (DAY_MS / 24));
  const [sent] = await db
    .select({ id: auditLog.id })
    .from(auditLog)
    .where(and(eq(auditLog.action, CHECK_DIGEST_ACTION), gte(auditLog.at, hourStart)))
    .limit(1);
  if (sent) return 0;
  const failures = await db
    .select(FAILURE_COLUMNS)
    .from(checkResults)
    .leftJoin(servers, eq(servers.id, checkResults.serverId))
    .where(
      and(
        eq(checkResults.result, "fails"),
        notInArray(checkResults.checkId, [...CUSTOMERS_OWN_CHECKS]),
        gt(checkResults.checkedAt, new Date(now.getTime() - DAY_MS)),
      ),
    )
    .orderBy(checkResults.checkedAt);
  if (failures.length === 0) return 0;
  const operators = await db
    .select({ email: users.email })
    .from(users)
    .where(and(eq(users.role, "operator"), isNotNull(users.emailVerifiedAt), isNull(users.deletedAt)));
  const lines = failures.map(({ customServerName, ...failure }) => ({
    ...failure,
    serverName: failure.serverName === null ? null : matrixServerNameOf(ctx.config, { name: failure.serverName, serverName: customServerName }),
  }));
  const mailer = mailerFor(ctx);
  let mailed = 0;
  for (const operator of operators) {
    try {
      await mailer.send(templates.checkFailureDigest(operator.email, lines, new URL("/operator", ctx.config.publicOrigin).toString()));
      mailed++;
    } catch (error) {
      logError("check_digest_mail_failed", error);
    }
  }
  await audit(db, now, "system", CHECK_DIGEST_ACTION, null, { failures: failures.length, mailed });
  return mailed;
}
