// The Stripe API subset under /v1: authentication, Stripe's form encoding,
// idempotency keys, `expand`, and errors in Stripe's shape.
import {
  cancelSubscription,
  createCheckoutSession,
  createCustomer,
  createPortalSession,
  expireCheckoutSession,
  getCheckoutRecord,
  getCustomer,
  getInvoice,
  getSubscription,
  refreshCheckoutSession,
  updateCustomer,
  updateSubscription,
  type Context,
  type SubscriptionChanges,
} from "./billing.ts";
import { invalidRequest, noSuch, StripeError } from "./errors.ts";
import { act, type Env } from "./env.ts";
import {
  applyMetadata,
  optionalArray,
  optionalBoolean,
  optionalInteger,
  optionalObject,
  optionalString,
  parseStripeForm,
  requiredString,
  type FormObject,
  type FormValue,
} from "./forms.ts";
import { findRoute, header, json, type Incoming, type Outgoing, type Route } from "./http.ts";
import { newId } from "./ids.ts";
import { API_VERSION, formatAmount, list, snapshot } from "./objects.ts";
import type { Store } from "./store.ts";

type Handler = (ctx: Context, form: FormObject, params: Record<string, string>) => object;

// Lists: newest first, `limit` (default 10) and `starting_after` as in Stripe.
function paginate<T extends { id: string }>(items: T[], form: FormObject, url: string) {
  const limit = optionalInteger(form, "limit") ?? 10;
  if (limit < 1 || limit > 100) throw invalidRequest("This value must be between 1 and 100.", "limit");
  let newestFirst = [...items].reverse();
  const after = optionalString(form, "starting_after");
  if (after) {
    const index = newestFirst.findIndex((item) => item.id === after);
    if (index === -1) throw invalidRequest(`starting_after: no object with id '${after}' in this list.`, "starting_after");
    newestFirst = newestFirst.slice(index + 1);
  }
  return list(newestFirst.slice(0, limit), url, newestFirst.length > limit);
}

function customerInput(form: FormObject, existing: Record<string, string>) {
  return {
    email: optionalString(form, "email"),
    name: optionalString(form, "name"),
    description: optionalString(form, "description"),
    phone: optionalString(form, "phone"),
    metadata: applyMetadata(existing, form),
  };
}

function lineItems(form: FormObject) {
  const items = optionalArray(form, "line_items");
  if (!items || items.length === 0) throw invalidRequest("Missing required param: line_items.", "line_items", "parameter_missing");
  return items.map((item: FormValue, index) => {
    const param = `line_items[${index}]`;
    if (typeof item !== "object" || Array.isArray(item)) throw invalidRequest(`Invalid hash: ${param} must be a hash.`, param);
    return {
      price: requiredString(item, "price", `${param}[price]`),
      quantity: optionalInteger(item, "quantity", `${param}[quantity]`) ?? 1,
    };
  });
}

function subscriptionChanges(form: FormObject, existingMetadata: Record<string, string>): SubscriptionChanges {
  const changes: SubscriptionChanges = {};
  const cancelAtPeriodEnd = optionalBoolean(form, "cancel_at_period_end");
  if (cancelAtPeriodEnd !== undefined) changes.cancelAtPeriodEnd = cancelAtPeriodEnd;
  const items = optionalArray(form, "items");
  if (items) {
    const [first, ...rest] = items;
    if (rest.length > 0 || typeof first !== "object" || Array.isArray(first)) {
      throw invalidRequest("The emulator supports changing exactly one item: items[0][id] with items[0][price].", "items");
    }
    changes.itemPrice = { item: requiredString(first, "id", "items[0][id]"), price: requiredString(first, "price", "items[0][price]") };
  }
  if (form.metadata !== undefined) changes.metadata = applyMetadata(existingMetadata, form);
  return changes;
}

const routes: Route<Handler>[] = [
  { method: "POST", pattern: "/v1/customers", handle: (ctx, form) => createCustomer(ctx, customerInput(form, {})) },
  { method: "GET", pattern: "/v1/customers/:id", handle: (ctx, _form, { id }) => getCustomer(ctx.store, id!) },
  {
    method: "POST",
    pattern: "/v1/customers/:id",
    handle: (ctx, form, { id }) => updateCustomer(ctx, id!, customerInput(form, getCustomer(ctx.store, id!).metadata)),
  },
  {
    method: "POST",
    pattern: "/v1/checkout/sessions",
    handle: (ctx, form) => {
      const subscriptionData = optionalObject(form, "subscription_data") ?? {};
      const items = lineItems(form);
      return createCheckoutSession(ctx, {
        mode: requiredString(form, "mode"),
        customer: optionalString(form, "customer") || undefined,
        customerEmail: optionalString(form, "customer_email") || undefined,
        clientReferenceId: optionalString(form, "client_reference_id") || undefined,
        lineItems: items,
        successUrl: requiredString(form, "success_url"),
        cancelUrl: optionalString(form, "cancel_url") || undefined,
        metadata: applyMetadata({}, form),
        subscriptionMetadata: applyMetadata({}, subscriptionData, "metadata", "subscription_data[metadata]"),
      });
    },
  },
  {
    method: "GET",
    pattern: "/v1/checkout/sessions/:id",
    handle: (ctx, _form, { id }) => refreshCheckoutSession(ctx, getCheckoutRecord(ctx.store, id!)),
  },
  { method: "POST", pattern: "/v1/checkout/sessions/:id/expire", handle: (ctx, _form, { id }) => expireCheckoutSession(ctx, id!) },
  {
    method: "GET",
    pattern: "/v1/checkout/sessions/:id/line_items",
    handle: (ctx, _form, { id }) => lineItemList(ctx.store, id!),
  },
  {
    method: "POST",
    pattern: "/v1/billing_portal/sessions",
    handle: (ctx, form) => createPortalSession(ctx, { customer: requiredString(form, "customer"), returnUrl: optionalString(form, "return_url") || undefined }),
  },
  {
    method: "GET",
    pattern: "/v1/subscriptions",
    handle: (ctx, form) => {
      const customer = optionalString(form, "customer");
      const price = optionalString(form, "price");
      const status = optionalString(form, "status");
      // As in Stripe, canceled subscriptions are listed only when asked for.
      const matches = [...ctx.store.subscriptions.values()].filter(
        (subscription) =>
          (!customer || subscription.customer === customer) &&
          (!price || subscription.items.data.some((item) => item.price.id === price)) &&
          (status === "all" ? true : status ? subscription.status === status : subscription.status !== "canceled"),
      );
      return paginate(matches, form, "/v1/subscriptions");
    },
  },
  { method: "GET", pattern: "/v1/subscriptions/:id", handle: (ctx, _form, { id }) => getSubscription(ctx.store, id!) },
  {
    method: "POST",
    pattern: "/v1/subscriptions/:id",
    handle: (ctx, form, { id }) => updateSubscription(ctx, id!, subscriptionChanges(form, getSubscription(ctx.store, id!).metadata)),
  },
  { method: "DELETE", pattern: "/v1/subscriptions/:id", handle: (ctx, _form, { id }) => cancelSubscription(ctx, id!) },
  {
    method: "GET",
    pattern: "/v1/invoices",
    handle: (ctx, form) => {
      const customer = optionalString(form, "customer");
      const subscription = optionalString(form, "subscription");
      const status = optionalString(form, "status");
      const matches = [...ctx.store.invoices.values()].filter(
        (invoice) =>
          (!customer || invoice.customer === customer) &&
          (!subscription || invoice.parent.subscription_details.subscription === subscription) &&
          (!status || invoice.status === status),
      );
      return paginate(matches, form, "/v1/invoices");
    },
  },
  { method: "GET", pattern: "/v1/invoices/:id", handle: (ctx, _form, { id }) => getInvoice(ctx.store, id!) },
  {
    method: "GET",
    pattern: "/v1/prices",
    handle: (ctx, form) => {
      const active = optionalBoolean(form, "active");
      const product = optionalString(form, "product");
      const matches = [...ctx.store.prices.values()].filter(
        (price) => (active === undefined || price.active === active) && (!product || price.product === product),
      );
      // Seeded prices are listed in plan order, not newest first.
      return paginate(matches.reverse(), form, "/v1/prices");
    },
  },
  {
    method: "GET",
    pattern: "/v1/prices/:id",
    handle: (ctx, _form, { id }) => ctx.store.prices.get(id!) ?? fail(noSuch("price", id!)),
  },
  {
    method: "GET",
    pattern: "/v1/products/:id",
    handle: (ctx, _form, { id }) => ctx.store.products.get(id!) ?? fail(noSuch("product", id!)),
  },
  {
    method: "GET",
    pattern: "/v1/payment_methods/:id",
    handle: (ctx, _form, { id }) => ctx.store.paymentMethods.get(id!) ?? fail(noSuch("payment_method", id!)),
  },
  {
    method: "GET",
    pattern: "/v1/events",
    handle: (ctx, form) => {
      const type = optionalString(form, "type");
      const events = ctx.store.events.map((stored) => stored.event).filter((event) => !type || event.type === type);
      return paginate(events, form, "/v1/events");
    },
  },
  {
    method: "GET",
    pattern: "/v1/events/:id",
    handle: (ctx, _form, { id }) => ctx.store.events.find((stored) => stored.event.id === id)?.event ?? fail(noSuch("event", id!)),
  },
];

function fail(error: StripeError): never {
  throw error;
}

function lineItemList(store: Store, sessionId: string) {
  const record = getCheckoutRecord(store, sessionId);
  const items = record.lineItems.map((line) => {
    const price = store.prices.get(line.price)!;
    const amount = price.unit_amount * line.quantity;
    return {
      id: line.id,
      object: "item" as const,
      adjustable_quantity: null,
      amount_discount: 0,
      amount_subtotal: amount,
      amount_tax: 0,
      amount_total: amount,
      currency: price.currency,
      description: `${price.nickname ?? price.id} (${formatAmount(price.unit_amount, price.currency)} / month)`,
      metadata: {},
      price,
      quantity: line.quantity,
    };
  });
  return list(items, `/v1/checkout/sessions/${sessionId}/line_items`);
}

/** Replaces id references named by `expand` paths (`latest_invoice`, `data.customer`, …) with the objects. */
function expand(value: object, paths: string[], store: Store): object {
  const copy = snapshot(value) as Record<string, unknown>;
  const walk = (node: unknown, segments: string[]): void => {
    if (node === null || typeof node !== "object" || segments.length === 0) return;
    const [head, ...rest] = segments as [string, ...string[]];
    const record = node as Record<string, unknown>;
    let target = record[head];
    if (head === "data" && Array.isArray(target)) {
      for (const element of target) walk(element, rest);
      return;
    }
    if (head === "line_items" && record.object === "checkout.session" && typeof record.id === "string") {
      target = lineItemList(store, record.id);
    } else if (typeof target === "string") {
      const found = store.find(target);
      if (found) target = snapshot(found);
    }
    record[head] = target;
    walk(target, rest);
  };
  for (const path of paths) walk(copy, path.split("."));
  return copy;
}

function expandPaths(form: FormObject): string[] {
  const value = form.expand;
  if (value === undefined) return [];
  const values = Array.isArray(value) ? value : [value];
  return values.filter((path): path is string => typeof path === "string" && path.length > 0);
}

function authenticate(request: Incoming): void {
  const authorization = header(request, "authorization") ?? "";
  let key = "";
  if (authorization.startsWith("Bearer ")) key = authorization.slice("Bearer ".length).trim();
  else if (authorization.startsWith("Basic ")) key = Buffer.from(authorization.slice("Basic ".length), "base64").toString().split(":")[0] ?? "";
  if (key === "") {
    throw new StripeError({
      status: 401,
      type: "invalid_request_error",
      message:
        "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
    });
  }
  if (!key.startsWith("sk_test_")) {
    throw new StripeError({
      status: 401,
      type: "invalid_request_error",
      message: `Invalid API Key provided: ${key.slice(0, 8)}${"*".repeat(Math.max(0, Math.min(key.length - 12, 20)))}${key.length > 12 ? key.slice(-4) : ""}. The emulator accepts any key starting sk_test_.`,
    });
  }
}

export function handleApi(request: Incoming, env: Env): Outgoing {
  const requestId = newId("req");
  const headers = { "Request-Id": requestId, "Stripe-Version": API_VERSION };
  try {
    authenticate(request);
    const idempotencyKey = request.method === "POST" ? header(request, "idempotency-key") : undefined;
    if (idempotencyKey !== undefined) {
      const cached = env.store.idempotency.get(idempotencyKey);
      if (cached) {
        if (cached.method !== request.method || cached.path !== request.path || cached.body !== request.body) {
          throw new StripeError({
            status: 400,
            type: "idempotency_error",
            message: `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${idempotencyKey}' if you meant to execute a different request.`,
          });
        }
        return {
          status: cached.status,
          headers: { ...headers, "Content-Type": "application/json; charset=utf-8", "Idempotent-Replayed": "true" },
          body: cached.response,
        };
      }
    }
    const found = findRoute(routes, request);
    if (!found) {
      throw new StripeError({
        status: 404,
        type: "invalid_request_error",
        message: `Unrecognized request URL (${request.method}: ${request.path}). The emulator implements only the part of the API Berth uses.`,
      });
    }
    const form = parseStripeForm(request.method === "POST" ? request.body : request.query);
    const result = act(env, { id: requestId, idempotency_key: idempotencyKey ?? null }, (ctx) => found.handle(ctx, form, found.params));
    const paths = expandPaths(form);
    const response = json(200, paths.length > 0 ? expand(result, paths, env.store) : result, headers);
    if (idempotencyKey !== undefined) {
      env.store.idempotency.set(idempotencyKey, {
        method: request.method,
        path: request.path,
        body: request.body,
        status: response.status,
        response: response.body as string,
      });
    }
    return response;
  } catch (error) {
    if (error instanceof StripeError) return json(error.status, error.toJSON(), headers);
    return json(500, { error: { type: "api_error", message: `The emulator failed: ${error instanceof Error ? error.message : String(error)}` } }, headers);
  }
}
