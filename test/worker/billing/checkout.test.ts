import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { PLANS } from "../../../worker/billing/plans";
import { call, expectError, logIn, post, signUp, verifiedUser } from "../helpers";
import { customerIdOf, deliverAll, pay, startCheckout, stripeGet, subscriber, subscriptionOf, takeDeliveries } from "./stripe-helpers";

describe("plans", () => {
  it("are listed with price, resources and users, from the one plan list", async () => {
    const response = await call("/api/billing/plans");
    expect(response.status).toBe(200);
    const { plans } = (await response.json()) as { plans: { id: string; monthlyPrice: number; resources: object; maxUsers: number }[] };
    expect(plans.map((plan) => plan.id)).toEqual(PLANS.map((plan) => plan.id));
    expect(plans.map((plan) => [plan.id, plan.maxUsers])).toEqual([
      ["starter", 25],
      ["team", 250],
    ]);
    for (const plan of plans) {
      expect(plan).toMatchObject({ currency: "usd", resources: { memoryMiB: expect.any(Number), cpus: expect.any(Number), storageGiB: expect.any(Number) } });
      expect(plan.monthlyPrice).toBeGreaterThan(0);
    }
  });
});

describe("checkout", () => {
  it("needs a session", async () => {
    await expectError(await post("/api/billing/checkout", { plan: "starter" }), 401, "unauthorized");
  });

  it("refuses an unverified account, server-side, and creates nothing at Stripe", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    const response = await post("/api/billing/checkout", { plan: "starter" }, { cookie });
    await expectError(response, 403, "email_unverified");
    const row = await env.DB.prepare("SELECT count(*) AS n FROM billing_customers c JOIN users u ON u.id = c.user_id WHERE u.email = ?")
      .bind(email)
      .first<{ n: number }>();
    expect(row!.n).toBe(0);
  });

  it("the billing page explains an unverified account and offers to resend the link", async () => {
    const { email } = await signUp();
    const html = await (await call("/billing", { cookie: await logIn(email) })).text();
    expect(html).toContain("Verify your email address before subscribing.");
    expect(html).toContain('action="/account/resend-verification"');
  });

  it("refuses an unknown plan", async () => {
    const { cookie } = await subscriber();
    await expectError(await post("/api/billing/checkout", { plan: "platinum" }, { cookie }), 400, "validation_failed");
  });

  it("returns the URL of a subscription-mode Checkout Session for this account and plan", async () => {
    const { email } = await verifiedUser();
    const cookie = await logIn(email);
    const { url, sessionId } = await startCheckout(cookie, "team");
    expect(url.startsWith(env.STRIPE_API_URL!)).toBe(true);
    const me = (await (await call("/api/me", { cookie })).json()) as { id: string };
    const session = await stripeGet<Record<string, unknown>>(`/v1/checkout/sessions/${sessionId}`);
    expect(session).toMatchObject({ mode: "subscription", client_reference_id: me.id, customer: await customerIdOf(email) });
    expect(session.success_url).toMatch(/\/billing\/success\?session_id=\{CHECKOUT_SESSION_ID\}$/);
  });

  it("creates the Stripe customer once per account", async () => {
    const { email } = await verifiedUser();
    const cookie = await logIn(email);
    await startCheckout(cookie);
    const first = await customerIdOf(email);
    await startCheckout(cookie, "team");
    expect(await customerIdOf(email)).toBe(first);
  });

  it("end to end: checkout → webhooks → an active subscription and its first invoice", async () => {
    const { cookie, subscriptionId } = await subscriber("team");
    const subscription = await subscriptionOf(cookie);
    expect(subscription).toMatchObject({ status: "active", plan: "team", cancelAtPeriodEnd: false });
    expect(subscription.entitlement).toMatchObject({ state: "active", mayRun: true });
    const periodEnd = new Date(subscription.currentPeriodEnd!).getTime();
    expect(periodEnd - Date.now()).toBeGreaterThan(27 * 24 * 3600 * 1000);

    const { invoices } = (await (await call("/api/billing/invoices", { cookie })).json()) as {
      invoices: {
        status: string;
        amountPaid: number;
        currency: string;
        hostedInvoiceUrl: string;
        invoicePdf: string;
        number: string;
        periodStart: string;
        periodEnd: string;
      }[];
    };
    expect(invoices).toHaveLength(1);
    expect(invoices[0]).toMatchObject({ status: "paid", amountPaid: 2900, currency: "usd" });
    expect(invoices[0]!.hostedInvoiceUrl).toMatch(/^http/);
    expect(invoices[0]!.invoicePdf).toMatch(/^http/);
    expect(invoices[0]!.number).toBeTruthy();
    // The invoice covers the first month of service.
    const period = new Date(invoices[0]!.periodEnd).getTime() - new Date(invoices[0]!.periodStart).getTime();
    expect(period).toBeGreaterThan(27 * 24 * 3600 * 1000);
    expect(subscriptionId).toMatch(/^sub_/);
  });

  it("allows one live subscription per account", async () => {
    const { cookie } = await subscriber();
    await expectError(await post("/api/billing/checkout", { plan: "team" }, { cookie }), 409, "already_subscribed");
  });

  it("a declined card creates no subscription", async () => {
    const { email } = await verifiedUser();
    const cookie = await logIn(email);
    const { sessionId } = await startCheckout(cookie);
    expect((await pay(sessionId, "4000000000000341")).status).toBe(402);
    await deliverAll(await takeDeliveries(await customerIdOf(email)));
    expect((await subscriptionOf(cookie)).status).toBe("none");
  });
});

describe("the customer portal", () => {
  it("opens for a customer, and is refused before there is one", async () => {
    const { cookie } = await subscriber();
    const response = await post("/api/billing/portal", undefined, { cookie });
    expect(response.status).toBe(200);
    const { url } = (await response.json()) as { url: string };
    expect(url.startsWith(env.STRIPE_API_URL!)).toBe(true);

    const fresh = await logIn((await verifiedUser()).email);
    await expectError(await post("/api/billing/portal", undefined, { cookie: fresh }), 409, "no_billing_account");
  });

  it("cancel at period end keeps the plan running until then", async () => {
    const { cookie, customerId, subscriptionId } = await subscriber();
    const response = await stripePost(`/v1/subscriptions/${subscriptionId}`, "cancel_at_period_end=true");
    expect(response.status).toBe(200);
    await deliverAll(await takeDeliveries(customerId));
    const subscription = await subscriptionOf(cookie);
    expect(subscription).toMatchObject({ status: "active", cancelAtPeriodEnd: true });
    expect(subscription.entitlement.state).toBe("active");
    expect(await (await call("/billing", { cookie })).text()).toContain("Ends on");
  });

  it("a plan change is mirrored", async () => {
    const { cookie, customerId, subscriptionId } = await subscriber("starter");
    const current = await stripeGet<{ items: { data: { id: string }[] } }>(`/v1/subscriptions/${subscriptionId}`);
    const team = PLANS.find((plan) => plan.id === "team")!;
    const body = `items[0][id]=${current.items.data[0]!.id}&items[0][price]=${team.stripePriceId}`;
    expect((await stripePost(`/v1/subscriptions/${subscriptionId}`, body)).status).toBe(200);
    await deliverAll(await takeDeliveries(customerId));
    expect((await subscriptionOf(cookie)).plan).toBe("team");
  });

  it("an immediate cancellation suspends the account", async () => {
    const { cookie, customerId, subscriptionId } = await subscriber();
    const response = await fetch(new URL(`/v1/subscriptions/${subscriptionId}`, env.STRIPE_API_URL), {
      method: "DELETE",
      headers: { authorization: "Bearer sk_test_berth_tests" },
    });
    expect(response.status).toBe(200);
    await deliverAll(await takeDeliveries(customerId));
    const subscription = await subscriptionOf(cookie);
    expect(subscription.status).toBe("canceled");
    expect(subscription.entitlement).toMatchObject({ state: "suspended", mayRun: false });
  });
});

/** POSTs a form-encoded body to the emulator's Stripe API, as the SDK would. */
function stripePost(path: string, body: string) {
  return fetch(new URL(path, env.STRIPE_API_URL), {
    method: "POST",
    headers: { authorization: "Bearer sk_test_berth_tests", "content-type": "application/x-www-form-urlencoded" },
    body,
  });
}
