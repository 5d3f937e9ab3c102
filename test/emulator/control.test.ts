// The test-control API: renewals that fail or succeed, unpaid, paying without a browser.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHECKOUT_EVENTS, STARTER, startHarness, type Harness } from "./helpers.ts";

type Event = { type: string; data: { object: Record<string, any>; previous_attributes?: Record<string, any> } };
type Billing = { subscription: Record<string, any>; invoice: Record<string, any> | null };

let harness: Harness;

beforeAll(async () => {
  harness = await startHarness();
});
afterAll(() => harness.close());

async function newEvents(customer: string, run: () => Promise<unknown>): Promise<Event[]> {
  const before = (await harness.control<Event[]>("GET", `/_emulator/events?customer=${customer}`)).length;
  await run();
  return (await harness.control<Event[]>("GET", `/_emulator/events?customer=${customer}`)).slice(before);
}

describe("fail-payment", () => {
  it("opens a renewal invoice that fails and makes the subscription past_due", async () => {
    const { customer, subscription } = await harness.subscribe();
    const before = await harness.stripe.subscriptions.retrieve(subscription);
    let result!: Billing;
    const events = await newEvents(customer, async () => {
      result = await harness.control<Billing>("POST", `/_emulator/subscriptions/${subscription}/fail-payment`);
    });
    expect(events.map((event) => event.type)).toEqual(["invoice.created", "invoice.finalized", "invoice.payment_failed", "customer.subscription.updated"]);
    expect(events[3]!.data.object.status).toBe("past_due");
    expect(events[3]!.data.previous_attributes).toMatchObject({ status: "active" });

    const invoice = await harness.stripe.invoices.retrieve(result.invoice!.id);
    expect(invoice).toMatchObject({
      status: "open",
      billing_reason: "subscription_cycle",
      attempt_count: 1,
      attempted: true,
      amount_paid: 0,
      amount_remaining: 900,
    });
    expect(invoice.next_payment_attempt).toBeGreaterThan(Date.now() / 1000);
    expect(invoice.parent?.subscription_details?.subscription).toBe(subscription);

    const after = await harness.stripe.subscriptions.retrieve(subscription);
    expect(after.status).toBe("past_due");
    expect(after.latest_invoice).toBe(invoice.id);
    expect(after.items.data[0]!.current_period_start).toBe(before.items.data[0]!.current_period_end);

    // A second failure is another attempt on the same invoice.
    const retry = await newEvents(customer, () => harness.control("POST", `/_emulator/subscriptions/${subscription}/fail-payment`));
    expect(retry.map((event) => event.type)).toEqual(["invoice.payment_failed"]);
    expect(retry[0]!.data.object).toMatchObject({ id: invoice.id, attempt_count: 2 });

    // Renewing now pays the open invoice and recovers the subscription.
    const recovered = await newEvents(customer, () => harness.control("POST", `/_emulator/subscriptions/${subscription}/renew`));
    expect(recovered.map((event) => event.type)).toEqual(["invoice.paid", "customer.subscription.updated"]);
    expect(recovered[1]!.data.object.status).toBe("active");
    expect((await harness.stripe.invoices.retrieve(invoice.id)).status).toBe("paid");
  });
});

describe("renew", () => {
  it("moves the period on a month with a paid invoice", async () => {
    const { customer, subscription } = await harness.subscribe();
    const before = (await harness.stripe.subscriptions.retrieve(subscription)).items.data[0]!;
    const events = await newEvents(customer, () => harness.control("POST", `/_emulator/subscriptions/${subscription}/renew`));
    expect(events.map((event) => event.type)).toEqual(["invoice.created", "invoice.finalized", "invoice.paid", "customer.subscription.updated"]);
    const item = (await harness.stripe.subscriptions.retrieve(subscription)).items.data[0]!;
    expect(item.current_period_start).toBe(before.current_period_end);
    const days = (item.current_period_end - item.current_period_start) / 86400;
    expect(days).toBeGreaterThanOrEqual(28);
    expect(days).toBeLessThanOrEqual(31);
    expect(events[3]!.data.previous_attributes).toHaveProperty("items");
    const paid = events[2]!.data.object;
    expect(paid).toMatchObject({ status: "paid", billing_reason: "subscription_cycle", amount_paid: 900 });
    expect(paid.lines.data[0].period).toEqual({ start: item.current_period_start, end: item.current_period_end });
  });

  it("ends a subscription set to cancel at period end", async () => {
    const { customer, subscription } = await harness.subscribe();
    await harness.stripe.subscriptions.update(subscription, { cancel_at_period_end: true });
    const events = await newEvents(customer, () => harness.control("POST", `/_emulator/subscriptions/${subscription}/renew`));
    expect(events.map((event) => event.type)).toEqual(["customer.subscription.deleted"]);
    expect(events[0]!.data.object.status).toBe("canceled");
  });
});

describe("mark-unpaid", () => {
  it("turns the subscription unpaid", async () => {
    const { customer, subscription } = await harness.subscribe();
    const events = await newEvents(customer, () => harness.control("POST", `/_emulator/subscriptions/${subscription}/mark-unpaid`));
    expect(events.map((event) => event.type)).toEqual(["customer.subscription.updated"]);
    expect(events[0]!.data.previous_attributes).toEqual({ status: "active" });
    expect((await harness.stripe.subscriptions.retrieve(subscription)).status).toBe("unpaid");
  });

  it("answers an unknown subscription with 404", async () => {
    const response = await harness.request("/_emulator/subscriptions/sub_nope/mark-unpaid", { method: "POST" });
    expect(response.status).toBe(404);
    expect(((await response.json()) as { error: { message: string } }).error.message).toBe("No such subscription: 'sub_nope'");
  });
});

describe("checkout completion without a browser", () => {
  async function session() {
    const customer = await harness.stripe.customers.create({ email: "api@example.com" });
    const created = await harness.stripe.checkout.sessions.create({
      mode: "subscription",
      customer: customer.id,
      line_items: [{ price: STARTER, quantity: 1 }],
      success_url: "http://berth.test/ok?session={CHECKOUT_SESSION_ID}",
    });
    return { customer: customer.id, id: created.id };
  }

  it("pays like the form, emitting the same events", async () => {
    const { customer, id } = await session();
    const result = await harness.control<{ session: { status: string }; subscription: { status: string }; redirect_url: string }>(
      "POST",
      `/_emulator/checkout/sessions/${id}/complete`,
      { card: "4242424242424242" },
    );
    expect(result.session.status).toBe("complete");
    expect(result.subscription.status).toBe("active");
    expect(result.redirect_url).toBe(`http://berth.test/ok?session=${id}`);
    const events = await harness.control<Event[]>("GET", `/_emulator/events?customer=${customer}`);
    expect(events.map((event) => event.type)).toEqual(CHECKOUT_EVENTS);
  });

  it("answers a declined card with 402 and Stripe's card error", async () => {
    const { customer, id } = await session();
    const response = await harness.request(`/_emulator/checkout/sessions/${id}/complete`, {
      method: "POST",
      body: JSON.stringify({ card: "4000000000000341" }),
    });
    expect(response.status).toBe(402);
    expect(await response.json()).toMatchObject({ error: { type: "card_error", code: "card_declined", message: "Your card was declined." } });
    expect(await harness.control<Event[]>("GET", `/_emulator/events?customer=${customer}`)).toEqual([]);
  });
});
