import { desc } from "drizzle-orm";
import type { Database } from "../db/client";
import { auditLog } from "../db/schema";

/** "system": the control plane on its own (the cron, job outcomes). */
export type Actor = `user:${string}` | `host:${string}` | "system" | "anonymous";

/** Records one security-relevant action. Details must never carry secrets (tokens, keys, signatures). */
export function audit(db: Database, now: Date, actor: Actor, action: string, target: string | null, detail?: Record<string, unknown>) {
  return db.insert(auditLog).values({ at: now, actor, action, target, detail: detail ?? null });
}

export async function readAudit(db: Database, limit: number) {
  return db.select().from(auditLog).orderBy(desc(auditLog.id)).limit(limit);
}
