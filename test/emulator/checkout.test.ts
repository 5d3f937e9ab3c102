// The hosted Checkout page: what a customer's browser sees and submits.
import type Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHECKOUT_EVENTS, STARTER, payForm, startHarness, type Harness } from "./helpers.ts";

type Event = { id: string; type: string; data: { object: Record<string, any>; previous_attributes?: Record<string, any> } };

let harness: Harness;

beforeAll(async () => {
  harness = await startHarness();
});
afterAll(() => harness.close());

async function openSession(email = "pay@example.com") {
  const customer = await harness.stripe.customers.create({ email });
  const session = await harness.stripe.checkout.sessions.create({
    mode: "subscription",
    customer: customer.id,
    line_items: [{ price: STARTER, quantity: 1 }],
    success_url: "http://berth.test/billing/success?session={CHECKOUT_SESSION_ID}",
    cancel_url: "http://berth.test/billing/cancel",
    subscription_data: { metadata: { user_id: "u_9", plan: "starter" } },
  });
  return { customer: customer.id, session };
}

const events = (customer: string) => harness.control<Event[]>("GET", `/_emulator/events?customer=${customer}`);

describe("the Checkout page", () => {
  it("shows the plan, its monthly price, the customer's email and labelled card fields", async () => {
    const { session } = await openSession("show@example.com");
    const response = await harness.request(`/c/pay/${session.id}`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/text\/html/);
    const page = await response.text();
    expect(page).toContain("Starter");
    expect(page).toContain("$9.00");
    expect(page).toMatch(/per month/);
    expect(page).toContain("show@example.com");
    for (const [id, label] of [
      ["cardNumber", "Card number"],
      ["expiry", "Expiration (MM / YY)"],
      ["cvc", "CVC"],
      ["name", "Cardholder name"],
    ]) {
      expect(page).toContain(`<label for="${id}">${label}</label>`);
      expect(page).toMatch(new RegExp(`<input id="${id}" name="${id}"`));
    }
    expect(page).toMatch(/<button type="submit">Subscribe<\/button>/);
    expect(page).toContain('<a href="http://berth.test/billing/cancel">Back</a>');
    expect(page).not.toMatch(/<script/i);
  });

  it("answers an unknown session with 404", async () => {
    expect((await harness.request("/c/pay/cs_test_nope")).status).toBe(404);
  });
});

describe("paying with 4242 4242 4242 4242", () => {
  let customer: string;
  let session: Stripe.Checkout.Session;
  let response: Response;
  let emitted: Event[];
  const before = Math.floor(Date.now() / 1000);

  beforeAll(async () => {
    ({ customer, session } = await openSession("ada@example.com"));
    response = await harness.request(`/c/pay/${session.id}`, payForm({ cardNumber: "4242 4242 4242 4242", expiry: "12 / 34", cvc: "123" }));
    emitted = await events(customer);
  });

  it("redirects (303) to success_url with the session id filled in", () => {
    expect(response.status).toBe(303);
    expect(response.headers.get("location")).toBe(`http://berth.test/billing/success?session=${session.id}`);
  });

  it("emits the events Stripe does, in order", () => {
    expect(emitted.map((event) => event.type)).toEqual(CHECKOUT_EVENTS);
    const created = emitted[1]!;
    expect(created.data.object.status).toBe("incomplete");
    const updated = emitted[6]!;
    expect(updated.data.object.status).toBe("active");
    expect(updated.data.previous_attributes).toEqual({ status: "incomplete" });
    for (const event of emitted) {
      expect(event.id).toMatch(/^evt_/);
      expect(event).toMatchObject({
        object: "event",
        api_version: "2026-10-28.endive",
        livemode: false,
        pending_webhooks: 1,
        request: { id: null, idempotency_key: null },
      });
    }
  });

  it("reports the card as Stripe does: brand, last 4, expiry, fingerprint — never the number", () => {
    const paymentMethod = emitted[0]!.data.object;
    expect(paymentMethod.id).toMatch(/^pm_/);
    expect(paymentMethod.customer).toBe(customer);
    expect(paymentMethod.card).toMatchObject({ brand: "visa", last4: "4242", exp_month: 12, exp_year: 2034, funding: "credit", country: "US" });
    expect(paymentMethod.card.fingerprint).toMatch(/^[A-Za-z0-9]{16}$/);
    const charge = emitted[4]!.data.object;
    expect(charge).toMatchObject({ status: "succeeded", paid: true, amount: 900, currency: "usd", customer, payment_method: paymentMethod.id });
    expect(charge.payment_method_details.card).toMatchObject({
      brand: "visa",
      last4: "4242",
      exp_month: 12,
      exp_year: 2034,
      fingerprint: paymentMethod.card.fingerprint,
    });
  });

  it("creates an active subscription whose item's period runs a month from now", async () => {
    const subscription = await harness.stripe.subscriptions.retrieve(emitted[1]!.data.object.id);
    expect(subscription.id).toMatch(/^sub_/);
    expect(subscription).toMatchObject({
      status: "active",
      customer,
      metadata: { user_id: "u_9", plan: "starter" },
      default_payment_method: emitted[0]!.data.object.id,
    });
    const item = subscription.items.data[0]!;
    expect(item.id).toMatch(/^si_/);
    expect(item.price.id).toBe(STARTER);
    expect(item.current_period_start).toBeGreaterThanOrEqual(before);
    const days = (item.current_period_end - item.current_period_start) / 86400;
    expect(days).toBeGreaterThanOrEqual(28);
    expect(days).toBeLessThanOrEqual(31);
  });

  it("creates a paid invoice with a hosted page and a PDF", async () => {
    const subscription = await harness.stripe.subscriptions.retrieve(emitted[1]!.data.object.id);
    const invoice = await harness.stripe.invoices.retrieve(subscription.latest_invoice as string);
    expect(invoice).toMatchObject({
      status: "paid",
      billing_reason: "subscription_create",
      amount_due: 900,
      amount_paid: 900,
      amount_remaining: 0,
      currency: "usd",
      customer,
      customer_email: "ada@example.com",
    });
    expect(invoice.number).toMatch(/^BERTH-\d{4}$/);
    expect(invoice.parent?.subscription_details?.subscription).toBe(subscription.id);
    expect(invoice.status_transitions.paid_at).toEqual(expect.any(Number));
    expect(invoice.lines.data[0]!.period).toEqual({
      start: subscription.items.data[0]!.current_period_start,
      end: subscription.items.data[0]!.current_period_end,
    });
    expect(invoice.hosted_invoice_url).toBe(`${harness.emulator.url}/i/${invoice.id}`);
    expect(invoice.invoice_pdf).toBe(`${harness.emulator.url}/i/${invoice.id}/pdf`);

    const hosted = await fetch(invoice.hosted_invoice_url!);
    expect(hosted.status).toBe(200);
    expect(await hosted.text()).toContain(invoice.number!);
    const pdf = await fetch(invoice.invoice_pdf!);
    expect(pdf.headers.get("content-type")).toBe("application/pdf");
    const bytes = Buffer.from(await pdf.arrayBuffer()).toString("latin1");
    expect(bytes.startsWith("%PDF-")).toBe(true);
    expect(bytes).toContain(invoice.number!);
    expect(bytes.trimEnd().endsWith("%%EOF")).toBe(true);
  });

  it("completes the session, which can't be paid again", async () => {
    const completed = await harness.stripe.checkout.sessions.retrieve(session.id);
    expect(completed).toMatchObject({ status: "complete", payment_status: "paid", customer, subscription: emitted[1]!.data.object.id, url: null });
    const page = await (await harness.request(`/c/pay/${session.id}`)).text();
    expect(page).toMatch(/complete/);
    const again = await harness.request(`/c/pay/${session.id}`, payForm({ cardNumber: "4242424242424242" }));
    expect(again.status).toBe(400);
    expect(await events(customer)).toHaveLength(CHECKOUT_EVENTS.length);
  });
});

describe("cards that don't go through", () => {
  it("declines 4000 0000 0000 0341 with 402 and creates nothing; the session stays open", async () => {
    const { customer, session } = await openSession("declined@example.com");
    const response = await harness.request(`/c/pay/${session.id}`, payForm({ cardNumber: "4000 0000 0000 0341" }));
    expect(response.status).toBe(402);
    const page = await response.text();
    expect(page).toContain("Your card was declined.");
    expect(page).toContain('role="alert"');
    // The number typed in is not echoed back into the page.
    expect(page).not.toMatch(/<input id="cardNumber"[^>]*value=/);
    expect(page).not.toContain("4000000000000341");
    expect(await events(customer)).toEqual([]);
    expect((await harness.stripe.subscriptions.list({ customer, status: "all" })).data).toEqual([]);
    expect((await harness.stripe.invoices.list({ customer })).data).toEqual([]);
    expect((await harness.stripe.checkout.sessions.retrieve(session.id)).status).toBe("open");

    const retry = await harness.request(`/c/pay/${session.id}`, payForm({ cardNumber: "4242-4242-4242-4242" }));
    expect(retry.status).toBe(303);
  });

  it.each([
    [{ cardNumber: "4000 0000 0000 0002" }, "Your card number is invalid."],
    [{ cardNumber: "4242 4242 4242 424" }, "Your card number is invalid."],
    [{ cardNumber: "4242424242424242", expiry: "01 / 20" }, "Your card's expiration date is in the past."],
    [{ cardNumber: "4242424242424242", expiry: "13 / 40" }, "Your card's expiration month is invalid."],
    [{ cardNumber: "4242424242424242", expiry: "soon" }, "Your card's expiration date is incomplete."],
    [{ cardNumber: "4242424242424242", cvc: "12" }, "Your card's security code is invalid."],
    [{ cardNumber: "4242424242424242", name: " " }, "Enter the cardholder name."],
  ])("answers %o with 400 and a clear message", async (fields, message) => {
    const { customer, session } = await openSession();
    const response = await harness.request(`/c/pay/${session.id}`, payForm(fields));
    expect(response.status).toBe(400);
    expect(await response.text()).toContain(message.replaceAll("'", "&#39;"));
    expect(await events(customer)).toEqual([]);
  });

  it("shows an expired session as expired and won't take payment", async () => {
    const { customer, session } = await openSession();
    await harness.control("POST", `/_emulator/checkout/sessions/${session.id}/expire`);
    expect(await (await harness.request(`/c/pay/${session.id}`)).text()).toMatch(/expired/);
    expect((await harness.request(`/c/pay/${session.id}`, payForm({ cardNumber: "4242424242424242" }))).status).toBe(400);
    expect((await events(customer)).map((event) => event.type)).toEqual(["checkout.session.expired"]);
  });
});

describe("card data", () => {
  it("never appears in the emulator's log, its events or its API answers", async () => {
    const { customer, session } = await openSession("secret@example.com");
    await harness.request(`/c/pay/${session.id}`, payForm({ cardNumber: "4000000000000341", cvc: "9731" }));
    await harness.request(`/c/pay/${session.id}`, payForm({ cardNumber: "4242 4242 4242 4242", cvc: "9731" }));
    const emitted = await events(customer);
    const paymentMethod = await harness.stripe.paymentMethods.retrieve(emitted[0]!.data.object.id);
    const everything = [harness.logs.join("\n"), JSON.stringify(emitted), JSON.stringify(paymentMethod)].join("\n");
    for (const secret of ["4242424242424242", "4242 4242 4242 4242", "4000000000000341", "9731"]) {
      expect(everything).not.toContain(secret);
    }
    for (const card of [paymentMethod.card, emitted[4]!.data.object.payment_method_details.card]) {
      expect(Object.keys(card!)).not.toContain("number");
      expect(Object.keys(card!)).not.toContain("cvc");
    }
    expect(harness.logs.some((line) => line.startsWith(`POST /c/pay/${session.id} 303`))).toBe(true);
  });
});
