import { desc } from "drizzle-orm";
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

export async function readAudit(db: Database, limit: number) {
  return db.select().from(auditLog).orderBy(desc(auditLog.id)).limit(limit);
}
