// Shared set-up for the emulator tests: an emulator in-process on a free port,
// the official SDK pointed at it, a webhook receiver, and small HTTP helpers.
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import Stripe from "stripe";
import { startStripeEmulator, type StripeEmulator, type StripeEmulatorOptions } from "../../emulator/stripe/server.ts";

export const SECRET = "whsec_emulator_test_secret";
export const STARTER = "price_berth_starter_monthly";
export const TEAM = "price_berth_team_monthly";

/** The events a successful Checkout emits, in order. */
export const CHECKOUT_EVENTS = [
  "payment_method.attached",
  "customer.subscription.created",
  "invoice.created",
  "invoice.finalized",
  "charge.succeeded",
  "invoice.paid",
  "customer.subscription.updated",
  "checkout.session.completed",
];

export interface Harness {
  emulator: StripeEmulator;
  stripe: Stripe;
  logs: string[];
  /** JSON from the control API; throws on a non-2xx answer. */
  control: <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => Promise<T>;
  /** Raw fetch against the emulator. */
  request: (path: string, init?: RequestInit) => Promise<Response>;
  /** A customer with a paid Starter subscription, bought through Checkout. */
  subscribe: (email?: string) => Promise<{ customer: string; session: string; subscription: string; invoice: string }>;
  close: () => Promise<void>;
}

export function sdkFor(port: number, key = "sk_test_emulator"): Stripe {
  return new Stripe(key, {
    host: "127.0.0.1",
    port,
    protocol: "http",
    httpClient: Stripe.createFetchHttpClient(),
    maxNetworkRetries: 0,
  });
}

export async function startHarness(options: Partial<StripeEmulatorOptions> = {}): Promise<Harness> {
  const logs: string[] = [];
  const emulator = await startStripeEmulator({ webhookSecret: SECRET, log: (line) => logs.push(line), ...options });
  const stripe = sdkFor(emulator.port);
  const request = (path: string, init?: RequestInit) => fetch(`${emulator.url}${path}`, { redirect: "manual", ...init });
  const control = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const response = await request(path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return JSON.parse(text) as T;
  };
  const subscribe = async (email = "ada@example.com") => {
    const customer = await stripe.customers.create({ email, metadata: { user_id: "u_1" } });
    const session = await stripe.checkout.sessions.create({
      mode: "subscription",
      customer: customer.id,
      client_reference_id: "u_1",
      line_items: [{ price: STARTER, quantity: 1 }],
      success_url: "http://berth.test/billing/success?session={CHECKOUT_SESSION_ID}",
      cancel_url: "http://berth.test/billing",
      subscription_data: { metadata: { user_id: "u_1", plan: "starter" } },
    });
    const result = await control<{ subscription: { id: string }; invoice: { id: string } }>("POST", `/_emulator/checkout/sessions/${session.id}/complete`, {
      card: "4242424242424242",
    });
    return { customer: customer.id, session: session.id, subscription: result.subscription.id, invoice: result.invoice.id };
  };
  return { emulator, stripe, logs, control, request, subscribe, close: () => emulator.close() };
}

export interface HeldDelivery {
  id: string;
  type: string;
  payload: string;
  signature: string;
}

/** Posts a hosted Checkout form as a browser would. */
export function payForm(fields: { cardNumber: string; expiry?: string; cvc?: string; name?: string }): RequestInit {
  return {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ expiry: "12 / 34", cvc: "123", name: "Ada Lovelace", ...fields }).toString(),
  };
}

export interface Received {
  body: string;
  headers: IncomingHttpHeaders;
}

/** A webhook endpoint; `status(n)` answers the n-th request (0-based). */
export async function startReceiver(status: (index: number) => number = () => 200, port = 0) {
  const received: Received[] = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const index = received.length;
      received.push({ body: Buffer.concat(chunks).toString("utf8"), headers: request.headers });
      response.writeHead(status(index)).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  const bound = (server.address() as AddressInfo).port;
  return {
    port: bound,
    url: `http://127.0.0.1:${bound}/webhooks/stripe`,
    received,
    types: () => received.map((entry) => (JSON.parse(entry.body) as { type: string }).type),
    ids: () => received.map((entry) => (JSON.parse(entry.body) as { id: string }).id),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
