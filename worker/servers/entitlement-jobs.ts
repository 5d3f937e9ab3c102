import { and, asc, eq, inArray, isNull, or } from "drizzle-orm";
import { mayRun } from "../billing/entitlement";
import type { WorkContext } from "../context";
import { entitlementEvents, entitlements, servers, type EntitlementState, type Server, type ServerStatus } from "../db/schema";
import { startDueDeletions } from "./deletion";
import { startLifecycleJob } from "./servers";

/**
 * Where billing's decision reaches a server at once. A server that is being
 * provisioned, restored, upgraded or deleted is left to finish that step; the
 * step's outcome enforces the entitlement again (applyJobOutcome), so it ends
 * suspended all the same.
 */
const SUSPEND_FROM: ServerStatus[] = ["running", "stopped", "starting", "stopping", "failed"];

/**
 * Makes one server follow its account's entitlement: an account that may not
 * run has its server suspended (data kept), one that may again has it resumed,
 * and one whose deletion is due has it deleted after a final backup. Each move
 * is a compare-and-set on the status, so concurrent callers send one job.
 */
export async function enforceEntitlement(ctx: WorkContext, server: Server, state?: EntitlementState): Promise<void> {
  const current = state ?? (await ctx.db.select({ state: entitlements.state }).from(entitlements).where(eq(entitlements.userId, server.userId)))[0]?.state;
  // No entitlement recorded: billing has never decided anything about this account.
  if (!current) return;
  const payload = { serverId: server.id };
  if (current === "deletion_due") {
    await startDueDeletions(ctx, server.userId);
  } else if (!mayRun(current) && SUSPEND_FROM.includes(server.status)) {
    await startLifecycleJob(ctx, server, { from: SUSPEND_FROM, to: "suspended" }, { kind: "homeserver.suspend", payload });
  } else if (mayRun(current) && server.status === "suspended") {
    await startLifecycleJob(ctx, server, { from: ["suspended"], to: "starting" }, { kind: "homeserver.resume", payload });
  }
}

/** Turns billing's entitlement transitions into lifecycle jobs for the account's servers. */
export async function handleEntitlementEvents(ctx: WorkContext): Promise<number> {
  const { db, now } = ctx;
  const events = await db.select().from(entitlementEvents).where(isNull(entitlementEvents.handledAt)).orderBy(asc(entitlementEvents.id)).limit(100);
  for (const event of events) {
    const [entitlement] = await db.select().from(entitlements).where(eq(entitlements.userId, event.userId));
    if (entitlement) {
      const mine = await db.select().from(servers).where(eq(servers.userId, event.userId));
      for (const server of mine) await enforceEntitlement(ctx, server, entitlement.state);
    }
    await db.update(entitlementEvents).set({ handledAt: now }).where(eq(entitlementEvents.id, event.id));
  }
  return events.length;
}

/**
 * The hourly backstop: every server whose status disagrees with its account's
 * entitlement (a suspension that failed, an outcome that was never applied)
 * is moved along. Deletions due are the deletion backstop's (startDueDeletions).
 */
export async function enforceEntitlements(ctx: WorkContext): Promise<number> {
  const disagreeing = await ctx.db
    .select({ server: servers, state: entitlements.state })
    .from(servers)
    .innerJoin(entitlements, eq(entitlements.userId, servers.userId))
    .where(
      or(
        and(inArray(entitlements.state, ["suspended", "none"]), inArray(servers.status, SUSPEND_FROM)),
        and(inArray(entitlements.state, ["active", "grace"]), eq(servers.status, "suspended")),
      ),
    );
  for (const { server, state } of disagreeing) await enforceEntitlement(ctx, server, state);
  return disagreeing.length;
}
