import { and, eq, inArray, lte, sql } from "drizzle-orm";
import type { Database } from "../db/client";
import { entitlementEvents, entitlements, subscriptions, type Entitlement, type EntitlementState, type Subscription } from "../db/schema";

export interface EntitlementPolicy {
  /** How long a past-due account keeps running. */
  graceMs: number;
  /** How long a suspended account is kept before deletion is due. */
  deletionWindowMs: number;
}

export interface EntitlementView {
  state: EntitlementState;
  since: Date;
  until: Date | null;
}

export interface Transition {
  /** The stored entitlement this starts from; null when the account has none yet. */
  current: EntitlementView | null;
  from: EntitlementState;
  to: EntitlementView;
  reason: string;
}

/** True when the state lets the account's homeservers run. */
export function mayRun(state: EntitlementState): boolean {
  return state === "active" || state === "grace";
}

// When an account has several subscriptions (a cancelled one and its successor), the liveliest counts.
const STATUS_PRIORITY = ["active", "trialing", "past_due", "unpaid", "paused", "canceled", "incomplete_expired", "incomplete"];

export function effectiveSubscription(subscriptions: Subscription[]): Subscription | undefined {
  const rank = (status: string) => {
    const index = STATUS_PRIORITY.indexOf(status);
    return index === -1 ? STATUS_PRIORITY.length : index;
  };
  return [...subscriptions].sort((a, b) => rank(a.status) - rank(b.status) || b.createdAt.getTime() - a.createdAt.getTime())[0];
}

/**
 * The one function that decides what an account may run:
 *   active or trialing → active;
 *   past_due → grace for the grace period, then suspended;
 *   canceled, unpaid, paused, incomplete_expired → suspended;
 *   suspended past the deletion window → deletion_due;
 *   no subscription, or one whose first payment is pending → none.
 * Returns the transition from `current`, or null when nothing changes.
 */
export function decideEntitlement(current: EntitlementView | null, subscriptionStatus: string | null, now: Date, policy: EntitlementPolicy): Transition | null {
  const from = current?.state ?? "none";
  const at = (state: EntitlementState, since: Date, until: Date | null, reason: string): Transition | null =>
    state === from && current?.since.getTime() === since.getTime() && (current?.until?.getTime() ?? null) === (until?.getTime() ?? null)
      ? null
      : { current, from, to: { state, since, until }, reason };
  const after = (since: Date, ms: number) => new Date(since.getTime() + ms);
  const suspend = (since: Date, reason: string) => {
    const deleteAt = after(since, policy.deletionWindowMs);
    return deleteAt <= now ? at("deletion_due", deleteAt, null, "the deletion window ended") : at("suspended", since, deleteAt, reason);
  };

  switch (subscriptionStatus) {
    case "active":
    case "trialing":
      return at("active", from === "active" ? current!.since : now, null, `subscription ${subscriptionStatus}`);
    case "past_due": {
      if (from === "suspended" || from === "deletion_due") return suspend(current!.since, "payment past due");
      const since = from === "grace" ? current!.since : now;
      const graceEnds = after(since, policy.graceMs);
      if (graceEnds <= now) return suspend(graceEnds, "the grace period ended");
      return at("grace", since, graceEnds, "payment past due");
    }
    case "canceled":
    case "unpaid":
    case "paused":
    case "incomplete_expired": {
      const since = from === "suspended" || from === "deletion_due" ? current!.since : now;
      return suspend(since, `subscription ${subscriptionStatus}`);
    }
    default:
      // No subscription, or one still waiting for its first payment: nothing changes.
      return null;
  }
}

function view(row: Entitlement | undefined): EntitlementView | null {
  return row ? { state: row.state, since: row.since, until: row.until } : null;
}

/** The stored entitlement, or null for an account that never had one. */
export async function storedEntitlement(db: Database, userId: string): Promise<EntitlementView | null> {
  const [row] = await db.select().from(entitlements).where(eq(entitlements.userId, userId));
  return view(row);
}

export async function currentEntitlement(db: Database, userId: string): Promise<EntitlementView> {
  return (await storedEntitlement(db, userId)) ?? { state: "none", since: new Date(0), until: null };
}

/**
 * The statements that store a transition and record it as a domain event (for
 * one D1 batch). The write is a compare-and-set on the state it was decided
 * from, and the event row is written only if that write changed a row
 * (SQLite's changes()): two deliveries racing on one account record it once.
 */
export function transitionStatements(db: Database, userId: string, transition: Transition, now: Date) {
  const { state, since, until } = transition.to;
  const { current } = transition;
  const write = current
    ? db
        .update(entitlements)
        .set({ state, since, until, updatedAt: now })
        .where(and(eq(entitlements.userId, userId), eq(entitlements.state, current.state), eq(entitlements.since, current.since)))
    : db.insert(entitlements).values({ userId, state, since, until, updatedAt: now }).onConflictDoNothing();
  if (transition.from === state) return [write];
  return [
    write,
    // Columns in table order: id, user_id, from_state, to_state, reason, created_at, handled_at.
    db
      .insert(entitlementEvents)
      .select(sql`SELECT NULL, ${userId}, ${transition.from}, ${state}, ${transition.reason}, ${now.getTime()}, NULL WHERE changes() = 1`),
  ];
}

/** The status of the subscription that counts for an account, or null without one. */
export async function effectiveStatus(db: Database, userId: string): Promise<string | null> {
  const rows = await db.select().from(subscriptions).where(eq(subscriptions.userId, userId));
  return effectiveSubscription(rows)?.status ?? null;
}

/**
 * Run by the scheduled handler: moves accounts whose grace period or deletion
 * window has run out along (grace → suspended → deletion_due).
 */
export async function expireEntitlements(db: Database, now: Date, policy: EntitlementPolicy): Promise<number> {
  const due = await db
    .select()
    .from(entitlements)
    .where(and(inArray(entitlements.state, ["grace", "suspended"]), lte(entitlements.until, now)));
  let moved = 0;
  for (const row of due) {
    const transition = decideEntitlement(view(row), await effectiveStatus(db, row.userId), now, policy);
    if (!transition) continue;
    const [first, ...rest] = transitionStatements(db, row.userId, transition, now);
    await db.batch([first!, ...rest]);
    moved++;
  }
  return moved;
}
