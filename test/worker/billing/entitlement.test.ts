import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { decideEntitlement, type EntitlementView } from "../../../worker/billing/entitlement";
import { workerConfig } from "../../../worker/config";
import { DAY, advance, logIn, mailbox, runCron } from "../helpers";
import { deliverAll, emulatorControl, signedNow, subscriber, subscriptionOf, takeDeliveries } from "./stripe-helpers";

afterEach(() => vi.useRealTimers());

const policy = { graceMs: 7 * DAY, deletionWindowMs: 30 * DAY };
const now = new Date("2026-06-01T00:00:00Z");
const daysAgo = (days: number) => new Date(now.getTime() - days * DAY);
const state = (s: EntitlementView["state"], since: Date, until: Date | null = null): EntitlementView => ({ state: s, since, until });

describe("the entitlement decision", () => {
  it.each([
    ["nothing, no subscription", null, null, null],
    ["nothing, first payment pending", null, "incomplete", null],
    ["active when paid", null, "active", "active"],
    ["active when trialing", null, "trialing", "active"],
    ["grace when a payment fails", state("active", daysAgo(40)), "past_due", "grace"],
    ["suspended when canceled", state("active", daysAgo(40)), "canceled", "suspended"],
    ["suspended when unpaid", state("grace", daysAgo(3), daysAgo(-4)), "unpaid", "suspended"],
    ["suspended when paused", state("active", daysAgo(3)), "paused", "suspended"],
    ["active again when a suspended account pays", state("suspended", daysAgo(5), daysAgo(-25)), "active", "active"],
  ] as const)("%s", (_label, current, status, expected) => {
    const transition = decideEntitlement(current, status, now, policy);
    expect(transition?.to.state ?? null).toBe(expected);
  });

  it("grace lasts the grace period, then suspends from the moment it ended", () => {
    const grace = decideEntitlement(state("active", daysAgo(40)), "past_due", now, policy)!;
    expect(grace.to).toEqual({ state: "grace", since: now, until: new Date(now.getTime() + 7 * DAY) });
    const later = new Date(now.getTime() + 8 * DAY);
    const suspended = decideEntitlement(grace.to, "past_due", later, policy)!;
    expect(suspended.to.state).toBe("suspended");
    expect(suspended.to.since).toEqual(grace.to.until);
    expect(suspended.to.until).toEqual(new Date(grace.to.until!.getTime() + 30 * DAY));
  });

  it("deletion is due once suspended longer than the deletion window", () => {
    const suspended = state("suspended", daysAgo(31), daysAgo(1));
    expect(decideEntitlement(suspended, "canceled", now, policy)!.to.state).toBe("deletion_due");
    expect(decideEntitlement(state("suspended", daysAgo(29), daysAgo(-1)), "canceled", now, policy)).toBeNull();
  });

  it("a repeated status changes nothing", () => {
    const active = decideEntitlement(null, "active", now, policy)!.to;
    expect(decideEntitlement(active, "active", new Date(now.getTime() + DAY), policy)).toBeNull();
  });
});

const entitlementEvents = async (email: string) =>
  (
    await env.DB.prepare("SELECT e.from_state, e.to_state FROM entitlement_events e JOIN users u ON u.id = e.user_id WHERE u.email = ? ORDER BY e.id")
      .bind(email)
      .all<{ from_state: string; to_state: string }>()
  ).results.map((row) => `${row.from_state}→${row.to_state}`);

describe("entitlement over time", () => {
  it("payment failure → past_due (grace, still running, customer emailed) → suspended after 7 days → deletion due 30 days later", async () => {
    const { email, cookie, customerId, subscriptionId } = await subscriber();
    await emulatorControl(`/_emulator/subscriptions/${subscriptionId}/fail-payment`);
    await deliverAll(await takeDeliveries(customerId));

    const grace = await subscriptionOf(cookie);
    expect(grace.status).toBe("past_due");
    expect(grace.entitlement).toMatchObject({ state: "grace", mayRun: true });
    const [mail] = await mailbox(email);
    expect(mail!.subject).toBe("Your Berth payment failed");
    expect(mail!.links[0]).toMatch(/\/billing$/);

    advance(6 * DAY);
    await runCron();
    expect((await subscriptionOf(await logIn(email))).entitlement.state).toBe("grace");

    advance(1 * DAY + 1000);
    await runCron();
    expect((await subscriptionOf(await logIn(email))).entitlement).toMatchObject({ state: "suspended", mayRun: false });

    advance(30 * DAY);
    await runCron();
    expect((await subscriptionOf(await logIn(email))).entitlement.state).toBe("deletion_due");
    expect(await entitlementEvents(email)).toEqual(["none→active", "active→grace", "grace→suspended", "suspended→deletion_due"]);
  });

  it("a suspended account that pays is resumed", async () => {
    const { email, customerId, subscriptionId } = await subscriber();
    await emulatorControl(`/_emulator/subscriptions/${subscriptionId}/fail-payment`);
    await deliverAll(await takeDeliveries(customerId));
    advance(8 * DAY);
    await runCron();
    await emulatorControl(`/_emulator/subscriptions/${subscriptionId}/renew`);
    await deliverAll(await signedNow(await takeDeliveries(customerId)));
    expect((await subscriptionOf(await logIn(email))).entitlement).toMatchObject({ state: "active", mayRun: true });
    expect(await entitlementEvents(email)).toEqual(["none→active", "active→grace", "grace→suspended", "suspended→active"]);
  });

  it("the grace period is configurable", async () => {
    const custom = workerConfig({ ...env, GRACE_PERIOD_DAYS: "3", DELETION_WINDOW_DAYS: "10" }).entitlement;
    expect(custom).toEqual({ graceMs: 3 * DAY, deletionWindowMs: 10 * DAY });
    expect(decideEntitlement(null, "past_due", now, custom)!.to.until).toEqual(new Date(now.getTime() + 3 * DAY));
  });
});
