// The official SDK (the one the Worker uses), pointed at the emulator with its
// host/port/protocol settings, can do everything Berth needs.
import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SECRET, STARTER, TEAM, sdkFor, startHarness, type Harness, type HeldDelivery } from "./helpers.ts";

let harness: Harness;
let stripe: Stripe;

beforeAll(async () => {
  harness = await startHarness();
  stripe = harness.stripe;
});
afterAll(() => harness.close());

describe("customers", () => {
  it("creates one, and the same idempotency key returns the same customer", async () => {
    const params = { email: "grace@example.com", name: "Grace", metadata: { user_id: "u_42" } };
    const first = await stripe.customers.create(params, { idempotencyKey: "signup-u_42" });
    const again = await stripe.customers.create(params, { idempotencyKey: "signup-u_42" });
    const other = await stripe.customers.create(params);
    expect(again.id).toBe(first.id);
    expect(other.id).not.toBe(first.id);
    expect(first.id).toMatch(/^cus_[A-Za-z0-9]{14}$/);
    expect(first).toMatchObject({ object: "customer", email: "grace@example.com", name: "Grace", metadata: { user_id: "u_42" }, livemode: false });
    expect((await stripe.customers.retrieve(first.id)).id).toBe(first.id);
  });

  it("refuses a reused idempotency key with different parameters", async () => {
    await stripe.customers.create({ email: "a@example.com" }, { idempotencyKey: "key-reuse" });
    const error = await stripe.customers.create({ email: "b@example.com" }, { idempotencyKey: "key-reuse" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
  });

  it("answers a missing customer with Stripe's 404", async () => {
    const error = await stripe.customers.retrieve("cus_missing").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(error).toMatchObject({ statusCode: 404, code: "resource_missing", message: "No such customer: 'cus_missing'" });
  });
});

describe("authentication", () => {
  it("requires a secret test key", async () => {
    const error = await sdkFor(harness.emulator.port, "sk_live_nope")
      .customers.create({})
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Stripe.errors.StripeAuthenticationError);
    const response = await harness.request("/v1/prices");
    expect(response.status).toBe(401);
    const body = (await response.json()) as { error: { type: string; message: string } };
    expect(body.error.type).toBe("invalid_request_error");
    expect(body.error.message).toMatch(/did not provide an API key/);
  });
});

describe("Checkout and the portal", () => {
  it("creates a Checkout Session whose URL is the emulator's hosted page", async () => {
    const customer = await stripe.customers.create({ email: "c@example.com" });
    const session = await stripe.checkout.sessions.create({
      mode: "subscription",
      customer: customer.id,
      client_reference_id: "u_7",
      line_items: [{ price: STARTER, quantity: 1 }],
      success_url: "http://berth.test/ok?session={CHECKOUT_SESSION_ID}",
      cancel_url: "http://berth.test/billing",
      metadata: { user_id: "u_7" },
      subscription_data: { metadata: { plan: "starter" } },
      expand: ["customer"],
    });
    expect(session.id).toMatch(/^cs_test_/);
    expect(session.url).toBe(`${harness.emulator.url}/c/pay/${session.id}`);
    expect(session).toMatchObject({
      status: "open",
      payment_status: "unpaid",
      mode: "subscription",
      client_reference_id: "u_7",
      amount_total: 900,
      currency: "usd",
    });
    expect(session.expires_at - session.created).toBe(24 * 60 * 60);
    expect((session.customer as Stripe.Customer).email).toBe("c@example.com"); // expanded
    const retrieved = await stripe.checkout.sessions.retrieve(session.id);
    expect(retrieved.customer).toBe(customer.id);
    const items = await stripe.checkout.sessions.listLineItems(session.id);
    expect(items.data[0]).toMatchObject({ quantity: 1, amount_total: 900, price: { id: STARTER } });
  });

  it("refuses an unknown price with a 400 naming the parameter", async () => {
    const error = await stripe.checkout.sessions
      .create({ mode: "subscription", line_items: [{ price: "price_nope", quantity: 1 }], success_url: "http://berth.test/ok" })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(error).toMatchObject({ statusCode: 400, param: "line_items[0][price]", code: "resource_missing" });
  });

  it("creates a portal session whose URL is the emulator's portal", async () => {
    const customer = await stripe.customers.create({ email: "d@example.com" });
    const session = await stripe.billingPortal.sessions.create({ customer: customer.id, return_url: "http://berth.test/billing" });
    expect(session.id).toMatch(/^bps_/);
    expect(session).toMatchObject({ object: "billing_portal.session", customer: customer.id, return_url: "http://berth.test/billing" });
    expect(session.url).toBe(`${harness.emulator.url}/p/session/${session.id}`);
  });
});

describe("subscriptions and invoices", () => {
  it("retrieves, lists, updates and cancels a subscription", async () => {
    const { customer, subscription: id } = await harness.subscribe("sub@example.com");
    const subscription = await stripe.subscriptions.retrieve(id, { expand: ["latest_invoice"] });
    expect(subscription).toMatchObject({ status: "active", customer, cancel_at_period_end: false, metadata: { plan: "starter" } });
    expect((subscription.latest_invoice as Stripe.Invoice).status).toBe("paid");
    const item = subscription.items.data[0]!;
    expect(item.price.id).toBe(STARTER);
    expect(item.current_period_end).toBeGreaterThan(item.current_period_start);

    expect((await stripe.subscriptions.list({ customer })).data.map((s) => s.id)).toEqual([id]);

    const canceling = await stripe.subscriptions.update(id, { cancel_at_period_end: true });
    expect(canceling).toMatchObject({ cancel_at_period_end: true, cancel_at: item.current_period_end, status: "active" });
    const resumed = await stripe.subscriptions.update(id, { cancel_at_period_end: false });
    expect(resumed).toMatchObject({ cancel_at_period_end: false, cancel_at: null, canceled_at: null });

    const upgraded = await stripe.subscriptions.update(id, { items: [{ id: item.id, price: TEAM }], proration_behavior: "create_prorations" });
    expect(upgraded.items.data[0]).toMatchObject({ id: item.id, price: { id: TEAM, unit_amount: 2900 }, current_period_end: item.current_period_end });

    const canceled = await stripe.subscriptions.cancel(id);
    expect(canceled.status).toBe("canceled");
    expect(canceled.ended_at).toEqual(expect.any(Number));
    expect((await stripe.subscriptions.list({ customer })).data).toEqual([]);
    expect((await stripe.subscriptions.list({ customer, status: "all" })).data.map((s) => s.id)).toEqual([id]);
    const again = await stripe.subscriptions.update(id, { cancel_at_period_end: true }).catch((e: unknown) => e);
    expect(again).toMatchObject({ statusCode: 400 });
  });

  it("retrieves and lists invoices by customer and subscription", async () => {
    const { customer, subscription, invoice: invoiceId } = await harness.subscribe("inv@example.com");
    const invoice = await stripe.invoices.retrieve(invoiceId);
    expect(invoice).toMatchObject({ status: "paid", customer, amount_paid: 900, billing_reason: "subscription_create" });
    expect(invoice.parent?.subscription_details?.subscription).toBe(subscription);
    const listed = await stripe.invoices.list({ customer, subscription });
    expect(listed.object).toBe("list");
    expect(listed.has_more).toBe(false);
    expect(listed.data.map((i) => i.id)).toEqual([invoiceId]);
    expect((await stripe.invoices.list({ customer: "cus_other" })).data).toEqual([]);
  });

  it("lists the plans' prices", async () => {
    const prices = await stripe.prices.list();
    expect(prices.data.map((p) => [p.id, p.unit_amount, p.recurring?.interval])).toEqual([
      [STARTER, 900, "month"],
      [TEAM, 2900, "month"],
    ]);
    const price = await stripe.prices.retrieve(TEAM, { expand: ["product"] });
    expect((price.product as Stripe.Product).name).toBe("Berth Team");
  });
});

describe("webhook signatures", () => {
  it("are accepted by constructEventAsync with the secret and rejected with another", async () => {
    const { customer } = await harness.subscribe("sig@example.com");
    const deliveries = await harness.control<HeldDelivery[]>("GET", `/_emulator/deliveries?customer=${customer}`);
    expect(deliveries.length).toBeGreaterThan(0);
    for (const delivery of deliveries) {
      const event = await stripe.webhooks.constructEventAsync(delivery.payload, delivery.signature, SECRET);
      expect(event.id).toBe(delivery.id);
      expect(event.type).toBe(delivery.type);
      await expect(stripe.webhooks.constructEventAsync(delivery.payload, delivery.signature, "whsec_someone_else")).rejects.toBeInstanceOf(
        Stripe.errors.StripeSignatureVerificationError,
      );
      await expect(
        stripe.webhooks.constructEventAsync(delivery.payload.replace('"livemode": false', '"livemode": true'), delivery.signature, SECRET),
      ).rejects.toThrow();
    }
  });
});
