import { env } from "cloudflare:workers";
import { expect } from "vitest";
import { call, logIn, post, verifiedUser } from "../helpers";

// Drives the local Stripe emulator (hold mode) and hands its signed webhook deliveries to the Worker.

export interface Delivery {
  id: string;
  type: string;
  payload: string;
  signature: string;
}

export async function emulator(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(new URL(path, env.STRIPE_API_URL), init);
}

/** Stripe's API as the emulator serves it, for reading state the way Stripe has it. */
export async function stripeGet<T>(path: string): Promise<T> {
  const response = await emulator(path, { headers: { authorization: "Bearer sk_test_berth_tests" } });
  expect(response.status).toBe(200);
  return response.json() as Promise<T>;
}

export async function emulatorControl(path: string, body: unknown = {}): Promise<Response> {
  return emulator(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

/** Takes (and so removes) the queued deliveries for one customer, in emission order. */
export async function takeDeliveries(customerId: string): Promise<Delivery[]> {
  const response = await emulator(`/_emulator/deliveries?customer=${encodeURIComponent(customerId)}`);
  expect(response.status).toBe(200);
  return response.json();
}

export function deliver(delivery: Pick<Delivery, "payload" | "signature">): Promise<Response> {
  return call("/webhooks/stripe", {
    method: "POST",
    rawBody: delivery.payload,
    headers: { "content-type": "application/json; charset=utf-8", "stripe-signature": delivery.signature },
  });
}

/** Delivers each in the given order and expects every one to be acknowledged. */
export async function deliverAll(deliveries: Delivery[]): Promise<string[]> {
  const outcomes: string[] = [];
  for (const delivery of deliveries) {
    const response = await deliver(delivery);
    expect(response.status, `${delivery.type}: ${await response.clone().text()}`).toBe(200);
    outcomes.push(((await response.json()) as { outcome: string }).outcome);
  }
  return outcomes;
}

/** Signs a payload as Stripe does: t=<seconds>,v1=<hex HMAC-SHA256(secret, "t.payload")>. */
export async function signStripe(payload: string, timestamp: number, secret = env.STRIPE_WEBHOOK_SECRET!): Promise<string> {
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${timestamp}.${payload}`)));
  return `t=${timestamp},v1=${Array.from(mac, (byte) => byte.toString(16).padStart(2, "0")).join("")}`;
}

/** The same deliveries re-signed at the test's (possibly advanced) clock, as if Stripe sent them now. */
export async function signedNow(deliveries: Delivery[]): Promise<Delivery[]> {
  const now = Math.floor(Date.now() / 1000);
  return Promise.all(deliveries.map(async (delivery) => ({ ...delivery, signature: await signStripe(delivery.payload, now) })));
}

export async function customerIdOf(email: string): Promise<string> {
  const row = await env.DB.prepare("SELECT c.stripe_customer_id AS id FROM billing_customers c JOIN users u ON u.id = c.user_id WHERE u.email = ?")
    .bind(email)
    .first<{ id: string }>();
  expect(row).not.toBeNull();
  return row!.id;
}

export async function startCheckout(cookie: string, plan = "starter") {
  const response = await post("/api/billing/checkout", { plan }, { cookie });
  expect(response.status, await response.clone().text()).toBe(200);
  const { url } = (await response.json()) as { url: string };
  const sessionId = new URL(url).pathname.split("/").pop()!;
  return { url, sessionId };
}

export async function pay(sessionId: string, card = "4242424242424242"): Promise<Response> {
  return emulatorControl(`/_emulator/checkout/sessions/${sessionId}/complete`, { card });
}

export interface Subscriber {
  email: string;
  cookie: string;
  customerId: string;
  subscriptionId: string;
  deliveries: Delivery[];
}

/** A verified account that went through Checkout; its webhooks are NOT yet delivered. */
export async function paidButUndelivered(plan = "starter"): Promise<Subscriber> {
  const { email } = await verifiedUser();
  const cookie = await logIn(email);
  const { sessionId } = await startCheckout(cookie, plan);
  expect((await pay(sessionId)).status).toBe(200);
  const customerId = await customerIdOf(email);
  const session = await stripeGet<{ subscription: string }>(`/v1/checkout/sessions/${sessionId}`);
  return { email, cookie, customerId, subscriptionId: session.subscription, deliveries: await takeDeliveries(customerId) };
}

/** A verified account with an active subscription, all of its webhooks delivered. */
export async function subscriber(plan = "starter"): Promise<Subscriber> {
  const paid = await paidButUndelivered(plan);
  await deliverAll(paid.deliveries);
  return paid;
}

export interface SubscriptionBody {
  status: string;
  plan: string | null;
  currentPeriodEnd: string | null;
  cancelAtPeriodEnd: boolean;
  entitlement: { state: string; mayRun: boolean; since: string | null; until: string | null };
}

export async function subscriptionOf(cookie: string): Promise<SubscriptionBody> {
  const response = await call("/api/billing/subscription", { cookie });
  expect(response.status).toBe(200);
  return response.json();
}
