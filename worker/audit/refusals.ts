import { desc, gte, lt, sql } from "drizzle-orm";
import { consumeRateLimits, requireUnderRateLimit } from "../auth/rate-limit";
import type { RequestContext } from "../context";
import type { Database } from "../db/client";
import { refusalCounts } from "../db/schema";
import { ApiError } from "../errors";

const HOUR = 3_600_000;

/** Callers refused before they proved who they are. */
export const REFUSAL_KINDS = {
  /** A signed agent HTTP request whose token (or body) proves nothing. */
  "agent.request_refused": [
    "missing or malformed token",
    "unknown host",
    "revoked host",
    "bad signature",
    "expired or not yet valid",
    "token for another request",
    "replayed token",
    "body does not match its signed digest",
    "rate limited",
  ],
  /** An agent WebSocket that did not authenticate. */
  "agent.auth_refused": [
    "invalid message",
    "no hello",
    "timeout",
    "unknown host",
    "revoked host",
    "hello names another host",
    "replayed or stale challenge",
    "bad signature",
    "rate limited",
  ],
  "host.enroll_refused": ["invalid join token"],
} as const;

export type RefusalKind = keyof typeof REFUSAL_KINDS;
export type RefusalReason<K extends RefusalKind> = (typeof REFUSAL_KINDS)[K][number];

/** What a caller claimed (a host id, a name), as a log line may carry it: a few plain characters, never a whole id. */
export function loggableClaim(value: string): string {
  return value.slice(0, 12).replace(/[^A-Za-z0-9-]/g, "?");
}

/**
 * Records the refusal of a caller who proved nothing: a warning log line and
 * one more in its hour's count (GET /api/admin/refusals). Never an audit
 * entry: whatever such a caller claims (a host id, a name) could name a
 * customer's account or homeserver, and so land in that customer's audit
 * log and export. Reasons are ours, from REFUSAL_KINDS; claims are truncated.
 */
export async function recordRefusal<K extends RefusalKind>(db: Database, now: Date, kind: K, reason: RefusalReason<K>, claims: Record<string, string> = {}) {
  const claimed = Object.fromEntries(Object.entries(claims).map(([name, value]) => [name, loggableClaim(value)]));
  console.warn(JSON.stringify({ event: kind, reason, ...claimed }));
  const hourStart = new Date(Math.floor(now.getTime() / HOUR) * HOUR);
  await db
    .insert(refusalCounts)
    .values({ kind, reason, hourStart, count: 1 })
    .onConflictDoUpdate({ target: [refusalCounts.kind, refusalCounts.reason, refusalCounts.hourStart], set: { count: sql`${refusalCounts.count} + 1` } });
}

/** Where a refused caller comes from (`client`): its refusals count against its client's limit (`agent_refusals_ip`). */
export type RefusalContext = Pick<RequestContext, "db" | "now" | "config" | "client">;

/** Turns a client already over its limit of refusals away (429) before any other work, counting that too. */
export async function turnAwayRefusedClient<K extends RefusalKind>(ctx: RefusalContext, kind: K, reason: RefusalReason<K>, claims: Record<string, string>) {
  try {
    await requireUnderRateLimit(ctx.db, ctx.config.rateLimits, { name: "agent_refusals_ip", subject: ctx.client }, ctx.now);
  } catch (error) {
    await recordRefusal(ctx.db, ctx.now, kind, reason, claims);
    throw error;
  }
}

/** Counts one refusal against its client's limit: the 429 to answer with once over it, else nothing. */
export async function countAgainstRefusalLimit(ctx: RefusalContext): Promise<ApiError | undefined> {
  try {
    await consumeRateLimits(ctx.db, ctx.config.rateLimits, [{ name: "agent_refusals_ip", subject: ctx.client }], ctx.now);
    return undefined;
  } catch (error) {
    if (error instanceof ApiError) return error;
    throw error;
  }
}

/** The hourly counts since `since`, newest hour first. */
export async function refusalsSince(db: Database, since: Date) {
  return db
    .select()
    .from(refusalCounts)
    .where(gte(refusalCounts.hourStart, since))
    .orderBy(desc(refusalCounts.hourStart), refusalCounts.kind, refusalCounts.reason);
}

/** Counts older than 90 days go (hourly cron). */
export async function pruneRefusalCounts(db: Database, now: Date): Promise<number> {
  const removed = await db
    .delete(refusalCounts)
    .where(lt(refusalCounts.hourStart, new Date(now.getTime() - 90 * 24 * HOUR)))
    .returning({ kind: refusalCounts.kind });
  return removed.length;
}
