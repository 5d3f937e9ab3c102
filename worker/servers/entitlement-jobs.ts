import { and, asc, eq, inArray, isNull } from "drizzle-orm";
import type { Database } from "../db/client";
import { entitlementEvents, servers, type ServerStatus } from "../db/schema";
import type { Env } from "../env";
import { dispatchJob } from "../fleet/hosts";
import { startDueDeletions } from "./deletion";
import type { HomeserverJobKind } from "../../protocol/messages";
import { LIFECYCLE_TIMEOUT_MS } from "./servers";

/**
 * Turns billing's entitlement transitions into lifecycle jobs: suspension stops
 * an account's homeservers (data kept), paying again resumes them, and a due
 * deletion deletes them, each after a final backup (startDueDeletions).
 */
export async function handleEntitlementEvents(db: Database, env: Env, now: Date): Promise<number> {
  const events = await db
    .select()
    .from(entitlementEvents)
    .where(isNull(entitlementEvents.handledAt))
    .orderBy(asc(entitlementEvents.id))
    .limit(100);
  for (const event of events) {
    const plan = planFor(event.toState);
    if (plan) {
      const affected = await db
        .select()
        .from(servers)
        .where(and(eq(servers.userId, event.userId), inArray(servers.status, plan.from)));
      for (const server of affected) {
        if (!server.hostId) continue;
        await db.update(servers).set({ status: plan.during, updatedAt: now }).where(eq(servers.id, server.id));
        await dispatchJob(db, env, { hostId: server.hostId, kind: plan.kind, payload: { serverId: server.id }, timeoutMs: LIFECYCLE_TIMEOUT_MS }, now);
      }
    } else if (event.toState === "deletion_due") {
      await startDueDeletions({ db, env, now }, event.userId);
    }
    await db.update(entitlementEvents).set({ handledAt: now }).where(eq(entitlementEvents.id, event.id));
  }
  return events.length;
}

function planFor(toState: string): { from: ServerStatus[]; during: ServerStatus; kind: HomeserverJobKind } | null {
  if (toState === "suspended") return { from: ["running", "stopped", "starting", "stopping"], during: "suspended", kind: "homeserver.suspend" };
  if (toState === "active") return { from: ["suspended"], during: "starting", kind: "homeserver.resume" };
  return null;
}
