import { and, desc, eq, gte, inArray, lt, or, sql } from "drizzle-orm";
import type { Database } from "../db/client";
import { auditLog } from "../db/schema";

/**
 * "system": the control plane on its own (the cron, job outcomes). There is no anonymous actor:
 * a caller who proved nothing is counted (./refusals.ts), never audited, since whatever it names
 * could be a customer's id and land in that customer's audit log and export.
 */
export type Actor = `user:${string}` | `host:${string}` | "system";

/** Records one security-relevant action. Details must never carry secrets (tokens, keys, signatures). */
export function audit(db: Database, now: Date, actor: Actor, action: string, target: string | null, detail?: Record<string, unknown>) {
  return db.insert(auditLog).values({ at: now, actor, action, target, detail: detail ?? null });
}

/** Which entries to read, newest first; every filter given must hold. */
export interface AuditQuery {
  limit: number;
  /** Entries by any of these actors ("user:<id>", "host:<id>", "system"); an empty list matches nothing. */
  actors?: string[] | undefined;
  /** An action ("host.revoked"), or a family of them ("host" is every "host.…"). */
  action?: string | undefined;
  target?: string | undefined;
  /** At or after. */
  from?: Date | undefined;
  /** Before. */
  until?: Date | undefined;
  /** Only entries older than this one (by id): the next page after an entry. */
  beforeId?: number | undefined;
}

export async function readAudit(db: Database, query: AuditQuery) {
  const { action } = query;
  return db
    .select()
    .from(auditLog)
    .where(
      and(
        query.actors === undefined ? undefined : inArray(auditLog.actor, query.actors),
        // substr, not LIKE: actions hold "_", which LIKE reads as a wildcard.
        action === undefined ? undefined : or(eq(auditLog.action, action), sql`substr(${auditLog.action}, 1, ${action.length + 1}) = ${`${action}.`}`),
        query.target === undefined ? undefined : eq(auditLog.target, query.target),
        query.from === undefined ? undefined : gte(auditLog.at, query.from),
        query.until === undefined ? undefined : lt(auditLog.at, query.until),
        query.beforeId === undefined ? undefined : lt(auditLog.id, query.beforeId),
      ),
    )
    .orderBy(desc(auditLog.id))
    .limit(query.limit);
}
