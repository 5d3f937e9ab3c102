// The test-control API under /_emulator/ (JSON, no auth): move subscriptions
// through time, pay Checkout without a browser, steer and inspect delivery.
import { completeCheckout, expireCheckoutSession, failPayment, markUnpaid, renew } from "./billing.ts";
import { invalidRequest, StripeError } from "./errors.ts";
import { act, type Env } from "./env.ts";
import { NO_REQUEST } from "./events.ts";
import { findRoute, json, type Incoming, type Outgoing, type Route } from "./http.ts";
import { MAX_ATTEMPTS, type DeliveryConfig } from "./webhooks.ts";

type Handler = (env: Env, request: Incoming, params: Record<string, string>) => Outgoing | Promise<Outgoing>;

function jsonBody(request: Incoming): Record<string, unknown> {
  if (request.body.trim() === "") return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(request.body);
  } catch {
    throw invalidRequest("The request body must be JSON.");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw invalidRequest("The request body must be a JSON object.");
  return parsed as Record<string, unknown>;
}

function configChanges(body: Record<string, unknown>): Partial<DeliveryConfig> {
  const changes: Partial<DeliveryConfig> = {};
  for (const [key, value] of Object.entries(body)) {
    if (key === "duplicates" || key === "reverse") {
      if (typeof value !== "boolean") throw invalidRequest(`${key} must be a boolean.`, key);
      changes[key] = value;
    } else if (key === "failFirstAttempts") {
      if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > MAX_ATTEMPTS) {
        throw invalidRequest(`failFirstAttempts must be an integer from 0 to ${MAX_ATTEMPTS} (${MAX_ATTEMPTS} means never delivered).`, key);
      }
      changes.failFirstAttempts = value;
    } else {
      throw invalidRequest(`Unknown setting: ${key}. Known: duplicates, reverse, failFirstAttempts.`, key);
    }
  }
  return changes;
}

function optionalText(body: Record<string, unknown>, key: string): string | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw invalidRequest(`${key} must be a string.`, key);
  return value;
}

function customerFilter(request: Incoming): string | undefined {
  return new URLSearchParams(request.query).get("customer") || undefined;
}

const routes: Route<Handler>[] = [
  { method: "GET", pattern: "/_emulator/config", handle: (env) => json(200, env.deliveries.getConfig()) },
  {
    method: "POST",
    pattern: "/_emulator/config",
    handle: (env, request) => json(200, env.deliveries.setConfig(configChanges(jsonBody(request)))),
  },
  {
    method: "POST",
    pattern: "/_emulator/deliveries/flush",
    handle: async (env) => {
      await env.deliveries.flush();
      return json(200, { flushed: true });
    },
  },
  {
    method: "GET",
    pattern: "/_emulator/deliveries",
    handle: (env, request) => {
      if (env.deliveries.webhookUrl !== undefined) {
        throw invalidRequest("Events are pushed to the webhook URL, so none are held here. Start the emulator without --webhook-url to hold them.");
      }
      return json(200, env.deliveries.take(customerFilter(request)));
    },
  },
  {
    method: "GET",
    pattern: "/_emulator/events",
    handle: (env, request) => {
      const params = new URLSearchParams(request.query);
      const customer = params.get("customer");
      const type = params.get("type");
      const events = env.store.events
        .filter((stored) => (!customer || stored.customer === customer) && (!type || stored.event.type === type))
        .map((stored) => stored.event);
      return json(200, events);
    },
  },
  {
    method: "POST",
    pattern: "/_emulator/subscriptions/:id/fail-payment",
    handle: (env, _request, { id }) =>
      json(
        200,
        act(env, NO_REQUEST, (ctx) => failPayment(ctx, id!)),
      ),
  },
  {
    method: "POST",
    pattern: "/_emulator/subscriptions/:id/renew",
    handle: (env, _request, { id }) =>
      json(
        200,
        act(env, NO_REQUEST, (ctx) => renew(ctx, id!)),
      ),
  },
  {
    method: "POST",
    pattern: "/_emulator/subscriptions/:id/mark-unpaid",
    handle: (env, _request, { id }) => json(200, { subscription: act(env, NO_REQUEST, (ctx) => markUnpaid(ctx, id!)) }),
  },
  {
    method: "POST",
    pattern: "/_emulator/checkout/sessions/:id/complete",
    handle: (env, request, { id }) => {
      const body = jsonBody(request);
      const card = {
        number: optionalText(body, "card") ?? "4242424242424242",
        expiry: optionalText(body, "expiry") ?? `12/${(new Date().getUTCFullYear() + 3) % 100}`,
        cvc: optionalText(body, "cvc") ?? "123",
      };
      const name = optionalText(body, "name") ?? null;
      const result = act(env, NO_REQUEST, (ctx) => completeCheckout(ctx, id!, { card, name }));
      return json(200, { session: result.session, subscription: result.subscription, invoice: result.invoice, redirect_url: result.redirectUrl });
    },
  },
  {
    method: "POST",
    pattern: "/_emulator/checkout/sessions/:id/expire",
    handle: (env, _request, { id }) =>
      json(
        200,
        act(env, NO_REQUEST, (ctx) => expireCheckoutSession(ctx, id!)),
      ),
  },
];

export async function handleControl(request: Incoming, env: Env): Promise<Outgoing> {
  try {
    const found = findRoute(routes, request);
    if (!found) throw new StripeError({ status: 404, type: "invalid_request_error", message: `No control endpoint ${request.method} ${request.path}.` });
    return await found.handle(env, request, found.params);
  } catch (error) {
    if (error instanceof StripeError) return json(error.status, error.toJSON());
    throw error;
  }
}
