import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { MINUTE, advance, call, expectError, mailbox } from "../helpers";
import { deliver, deliverAll, emulatorControl, paidButUndelivered, signStripe, subscriber, subscriptionOf, takeDeliveries } from "./stripe-helpers";

afterEach(() => vi.useRealTimers());

const countEvents = async (id: string) => (await env.DB.prepare("SELECT count(*) AS n FROM stripe_events WHERE id = ?").bind(id).first<{ n: number }>())!.n;

describe("Stripe webhooks", () => {
  describe("refuse with 400, changing nothing, a delivery that is", () => {
    const cases: [string, (payload: string, signature: string) => Promise<Record<string, string>>][] = [
      ["unsigned", async () => ({})],
      ["signed with a malformed header", async () => ({ "stripe-signature": "garbage" })],
      ["signed with another secret", async (payload) => ({ "stripe-signature": await signStripe(payload, Math.floor(Date.now() / 1000), "whsec_not_ours") })],
      ["tampered with after signing", async (_payload, signature) => ({ "stripe-signature": signature, tamper: "1" })],
    ];
    it.each(cases)("%s", async (_label, headersFor) => {
      const paid = await paidButUndelivered();
      for (const delivery of paid.deliveries) {
        const headers = await headersFor(delivery.payload, delivery.signature);
        const payload = headers.tamper ? JSON.stringify({ ...JSON.parse(delivery.payload), livemode: true }) : delivery.payload;
        delete headers.tamper;
        const response = await fetchWebhook(payload, headers);
        await expectError(response, 400, "invalid_signature");
        expect(await countEvents(delivery.id)).toBe(0);
      }
      expect((await subscriptionOf(paid.cookie)).status).toBe("none");
    });

    it("stale: signed more than five minutes before it arrived (a replay)", async () => {
      const paid = await paidButUndelivered();
      advance(6 * MINUTE);
      for (const delivery of paid.deliveries) await expectError(await deliver(delivery), 400, "invalid_signature");
      expect((await subscriptionOf(paid.cookie)).status).toBe("none");
    });
  });

  it("apply a duplicate once: acknowledged, recorded once, no second email", async () => {
    const paid = await paidButUndelivered();
    await deliverAll(paid.deliveries);
    await emulatorControl(`/_emulator/subscriptions/${paid.subscriptionId}/fail-payment`);
    const failure = await takeDeliveries(paid.customerId);
    expect(await deliverAll(failure)).not.toContain("duplicate");
    expect(await deliverAll(failure)).toEqual(failure.map(() => "duplicate"));
    for (const delivery of failure) expect(await countEvents(delivery.id)).toBe(1);
    expect((await mailbox(paid.email)).filter((mail) => mail.subject === "Your Berth payment failed")).toHaveLength(1);
  });

  it("record an entitlement change once when deliveries race", async () => {
    const paid = await paidButUndelivered();
    await deliverAll(paid.deliveries);
    await emulatorControl(`/_emulator/subscriptions/${paid.subscriptionId}/fail-payment`);
    const failure = await takeDeliveries(paid.customerId);
    // Every event of the failure, each delivered twice, all at once.
    const responses = await Promise.all([...failure, ...failure].map((delivery) => deliver(delivery)));
    expect(responses.map((response) => response.status)).toEqual(responses.map(() => 200));
    const events = await env.DB.prepare("SELECT e.to_state FROM entitlement_events e JOIN users u ON u.id = e.user_id WHERE u.email = ? ORDER BY e.id")
      .bind(paid.email)
      .all<{ to_state: string }>();
    expect(events.results.map((row) => row.to_state)).toEqual(["active", "grace"]);
    expect((await mailbox(paid.email)).filter((mail) => mail.subject === "Your Berth payment failed")).toHaveLength(1);
  });

  it("do not depend on arrival order: the whole checkout delivered backwards ends active", async () => {
    const paid = await paidButUndelivered();
    await deliverAll([...paid.deliveries].reverse());
    expect(await subscriptionOf(paid.cookie)).toMatchObject({ status: "active", plan: "starter" });
  });

  it("never let an older subscription.updated overwrite newer state", async () => {
    const paid = await paidButUndelivered();
    await deliverAll(paid.deliveries);
    await emulatorControl(`/_emulator/subscriptions/${paid.subscriptionId}/fail-payment`);
    const failed = await takeDeliveries(paid.customerId);
    await emulatorControl(`/_emulator/subscriptions/${paid.subscriptionId}/renew`);
    const renewed = await takeDeliveries(paid.customerId);
    // The recovery arrives first, the failure (past_due) after it.
    await deliverAll(renewed);
    await deliverAll(failed);
    expect((await subscriptionOf(paid.cookie)).status).toBe("active");
    expect((await subscriptionOf(paid.cookie)).entitlement.state).toBe("active");
  });

  it("acknowledge and ignore event types we do not handle", async () => {
    const payload = JSON.stringify({
      id: `evt_test_${crypto.randomUUID().replace(/-/g, "")}`,
      object: "event",
      api_version: "2026-10-28.endive",
      created: Math.floor(Date.now() / 1000),
      data: { object: { id: "cus_unrelated", object: "customer" } },
      livemode: false,
      pending_webhooks: 1,
      request: { id: null, idempotency_key: null },
      type: "customer.created",
    });
    const response = await fetchWebhook(payload, { "stripe-signature": await signStripe(payload, Math.floor(Date.now() / 1000)) });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ received: true, outcome: "ignored" });
  });

  it("a subscriber's events all verify and apply", async () => {
    const { cookie } = await subscriber();
    expect((await subscriptionOf(cookie)).status).toBe("active");
  });
});

function fetchWebhook(payload: string, headers: Record<string, string>) {
  return call("/webhooks/stripe", {
    method: "POST",
    rawBody: payload,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}
