// The emulator's objects have the shapes of API version 2026-10-28.endive, as
// the stripe package's type definitions describe them.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shapeErrors } from "./shapes.ts";
import { startHarness, type Harness } from "./helpers.ts";

const OBJECT_TYPES: Record<string, [file: string, name: string]> = {
  customer: ["Customers.d.ts", "Customer"],
  subscription: ["Subscriptions.d.ts", "Subscription"],
  invoice: ["Invoices.d.ts", "Invoice"],
  charge: ["Charges.d.ts", "Charge"],
  payment_method: ["PaymentMethods.d.ts", "PaymentMethod"],
  "checkout.session": ["Checkout/Sessions.d.ts", "Session"],
  "billing_portal.session": ["BillingPortal/Sessions.d.ts", "Session"],
  price: ["Prices.d.ts", "Price"],
  product: ["Products.d.ts", "Product"],
  item: ["LineItems.d.ts", "LineItem"],
  event: ["Events.d.ts", "EventBase"],
};

function expectShape(value: unknown) {
  const kind = (value as { object: string }).object;
  const type = OBJECT_TYPES[kind];
  if (!type) throw new Error(`no type for object ${kind}`);
  expect(shapeErrors(value, ...type), `${kind} ${(value as { id: string }).id}`).toEqual([]);
}

describe("the shape checker itself", () => {
  it("reports missing, unknown, wrongly typed and wrongly null fields", () => {
    const errors = shapeErrors(
      { id: "price_x", object: "price", active: "yes", created: null, currency: "usd", current_period_end: 1 },
      "Prices.d.ts",
      "Price",
    );
    expect(errors).toContain('Price.active: "yes" is not a boolean');
    expect(errors).toContain("Price.created: null, but the type is number");
    expect(errors).toContain("Price.current_period_end: not in the type");
    expect(errors).toContain("Price.unit_amount: missing");
  });

  it("accepts any string for an open string union, but nothing else", () => {
    const price = {
      id: "price_x",
      object: "price",
      recurring: { interval: "fortnight", interval_count: 1, meter: null, trial_period_days: null, usage_type: 3 },
    };
    const errors = shapeErrors(price, "Prices.d.ts", "Price");
    expect(errors.filter((error) => error.includes("recurring"))).toEqual(["Price.recurring.usage_type: 3 is not a Recurring.UsageType"]);
  });

  it("checks nested interfaces and string literals", () => {
    const errors = shapeErrors(
      {
        id: "evt_x",
        object: "charge_event",
        api_version: null,
        created: 1,
        data: { object: {} },
        livemode: false,
        pending_webhooks: 1,
        request: { id: null },
        type: "x",
      },
      "Events.d.ts",
      "EventBase",
    );
    expect(errors).toContain("EventBase.object: \"charge_event\" is not a 'event'");
    expect(errors).toContain("EventBase.request.idempotency_key: missing");
  });
});

describe("emulator objects", () => {
  let harness: Harness;
  let ids: Awaited<ReturnType<Harness["subscribe"]>>;

  beforeAll(async () => {
    harness = await startHarness();
    ids = await harness.subscribe();
    await harness.control("POST", `/_emulator/subscriptions/${ids.subscription}/fail-payment`);
  });
  afterAll(() => harness.close());

  async function api(path: string, init: RequestInit = {}): Promise<Record<string, unknown>> {
    const response = await harness.request(path, { ...init, headers: { Authorization: "Bearer sk_test_shapes", ...init.headers } });
    expect(response.status, path).toBe(200);
    return (await response.json()) as Record<string, unknown>;
  }

  it("customers, prices and products", async () => {
    expectShape(await api(`/v1/customers/${ids.customer}`));
    const prices = (await api("/v1/prices")) as { data: { id: string; product: string }[] };
    expect(prices.data.length).toBeGreaterThan(0);
    for (const price of prices.data) {
      expectShape(price);
      expectShape(await api(`/v1/products/${price.product}`));
    }
  });

  it("subscriptions with their items, and invoices with their lines", async () => {
    expectShape(await api(`/v1/subscriptions/${ids.subscription}`));
    const invoices = (await api(`/v1/invoices?customer=${ids.customer}`)) as { data: unknown[] };
    expect(invoices.data).toHaveLength(2);
    for (const invoice of invoices.data) expectShape(invoice);
  });

  it("Checkout and portal sessions, and line items", async () => {
    expectShape(await api(`/v1/checkout/sessions/${ids.session}`));
    const items = (await api(`/v1/checkout/sessions/${ids.session}/line_items`)) as { data: unknown[] };
    for (const item of items.data) expectShape(item);
    const body = new URLSearchParams({ customer: ids.customer, return_url: "http://berth.test/billing" });
    expectShape(await api("/v1/billing_portal/sessions", { method: "POST", body, headers: { "Content-Type": "application/x-www-form-urlencoded" } }));
    const open = new URLSearchParams({
      mode: "subscription",
      customer: ids.customer,
      "line_items[0][price]": "price_berth_team_monthly",
      success_url: "http://berth.test/ok",
    });
    expectShape(await api("/v1/checkout/sessions", { method: "POST", body: open, headers: { "Content-Type": "application/x-www-form-urlencoded" } }));
  });

  it("every event, and the object each carries", async () => {
    const events = await harness.control<Record<string, unknown>[]>("GET", `/_emulator/events?customer=${ids.customer}`);
    expect(events.length).toBeGreaterThanOrEqual(12);
    for (const event of events) {
      expectShape(event);
      expectShape((event.data as { object: unknown }).object);
    }
  });
});
