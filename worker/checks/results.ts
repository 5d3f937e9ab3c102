import { and, asc, desc, eq, gte, isNull, lt, or } from "drizzle-orm";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { checkResults, type CheckResultRow, type Server } from "../db/schema";
import { noteCheckFailures } from "./alerts";
import { checkEvidenceSchema } from "../../protocol/checks";
import { PROMISE_CHECKS, type CheckEvidence, type CheckId, type CheckResultKind, type PromiseCheck } from "./registry";

// The promise checks' results: recorded as each check reaches a verdict, shown to the customer
// (latest and 30 days of history), and deleted after 30 days.

const DAY = 24 * 60 * 60_000;
/** Results are kept this long: the customer's history of each check. */
export const CHECK_RESULT_RETENTION_MS = 30 * DAY;

export interface NewCheckResult {
  userId: string;
  /** Null for a check of the account (card-data). */
  serverId: string | null;
  checkId: CheckId;
  result: CheckResultKind;
  evidence: CheckEvidence;
  /** The host job that decided it, when a host did. */
  jobId?: string;
}

/** Records verdicts as of ctx.now; evidence that is not in the shared shape is refused (it is shown to customers as it is). */
export async function recordCheckResults(ctx: WorkContext, results: NewCheckResult[]): Promise<CheckResultRow[]> {
  if (results.length === 0) return [];
  const rows = results.map((result) => {
    const evidence = checkEvidenceSchema.parse(result.evidence);
    return {
      id: crypto.randomUUID(),
      userId: result.userId,
      serverId: result.serverId,
      checkId: result.checkId,
      result: result.result,
      summary: evidence.summary,
      facts: JSON.stringify(evidence.facts),
      checkedAt: ctx.now,
      jobId: result.jobId ?? null,
    };
  });
  const inserted = await ctx.db.insert(checkResults).values(rows).returning();
  await noteCheckFailures(ctx, inserted);
  return inserted;
}

/** The rows about one homeserver: its own checks, and its owner's account checks. */
const aboutServer = (server: Server) => or(eq(checkResults.serverId, server.id), and(eq(checkResults.userId, server.userId), isNull(checkResults.serverId)));

/** A recorded result as the API, the pages and the export show it. */
export function presentCheckResult(row: CheckResultRow) {
  return {
    result: row.result as CheckResultKind,
    summary: row.summary,
    facts: JSON.parse(row.facts) as CheckEvidence["facts"],
    checkedAt: row.checkedAt.toISOString(),
  };
}

export type CheckResultView = ReturnType<typeof presentCheckResult>;

export interface ServerCheckView extends Pick<PromiseCheck, "id" | "promise" | "covers" | "subject" | "every"> {
  latest: CheckResultView | null;
  /** The last 30 days, newest first (the latest included). */
  history: CheckResultView[];
}

/** Every check that applies to the server, in registry order, each with its latest result (null before it first ran) and its 30 days of history. */
export async function serverChecks(db: Database, server: Server, now: Date): Promise<ServerCheckView[]> {
  const rows = await db
    .select()
    .from(checkResults)
    .where(and(aboutServer(server), gte(checkResults.checkedAt, new Date(now.getTime() - CHECK_RESULT_RETENTION_MS))))
    .orderBy(desc(checkResults.checkedAt));
  const applies = PROMISE_CHECKS.filter((check) => !check.customServerNamesOnly || server.serverName !== null);
  return applies.map(({ id, promise, covers, subject, every }) => {
    const history = rows.filter((row) => row.checkId === id).map(presentCheckResult);
    return { id, promise, covers, subject, every, latest: history[0] ?? null, history };
  });
}

/** Every result kept about a customer (the data export): each homeserver's and the account's, oldest first. */
export async function checkResultsOf(db: Database, userId: string): Promise<CheckResultRow[]> {
  return db.select().from(checkResults).where(eq(checkResults.userId, userId)).orderBy(asc(checkResults.checkedAt));
}

/** The hourly cron's pruning: results older than 30 days. */
export async function pruneCheckResults(db: Database, now: Date): Promise<number> {
  const pruned = await db
    .delete(checkResults)
    .where(lt(checkResults.checkedAt, new Date(now.getTime() - CHECK_RESULT_RETENTION_MS)))
    .returning({ id: checkResults.id });
  return pruned.length;
}
