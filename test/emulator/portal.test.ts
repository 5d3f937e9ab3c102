// The hosted Customer Portal: cancel at period end, renew, switch plan.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TEAM, startHarness, type Harness } from "./helpers.ts";

type Event = { type: string; data: { object: Record<string, any>; previous_attributes?: Record<string, any> } };

let harness: Harness;
let ids: Awaited<ReturnType<Harness["subscribe"]>>;
let portal: string;

beforeAll(async () => {
  harness = await startHarness();
  ids = await harness.subscribe("portal@example.com");
  const session = await harness.stripe.billingPortal.sessions.create({ customer: ids.customer, return_url: "http://berth.test/billing" });
  portal = new URL(session.url).pathname;
});
afterAll(() => harness.close());

async function eventsSince(count: number): Promise<Event[]> {
  const all = await harness.control<Event[]>("GET", `/_emulator/events?customer=${ids.customer}`);
  return all.slice(count);
}

async function post(action: string, fields: Record<string, string> = {}) {
  const count = (await eventsSince(0)).length;
  const response = await harness.request(`${portal}/subscriptions/${ids.subscription}/${action}`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(fields).toString(),
  });
  expect(response.status).toBe(303);
  expect(response.headers.get("location")).toBe(`${harness.emulator.url}${portal}`);
  return eventsSince(count);
}

describe("the portal", () => {
  it("shows the plan, its status and renewal date, the other plans, the invoices and the way back", async () => {
    const page = await (await harness.request(portal)).text();
    const subscription = await harness.stripe.subscriptions.retrieve(ids.subscription);
    const invoice = await harness.stripe.invoices.retrieve(ids.invoice);
    const renews = new Date(subscription.items.data[0]!.current_period_end * 1000).toLocaleDateString("en-US", {
      timeZone: "UTC",
      year: "numeric",
      month: "long",
      day: "numeric",
    });
    expect(page).toContain("<strong>Starter</strong>");
    expect(page).toContain("Status: active");
    expect(page).toContain(`Renews on ${renews}`);
    expect(page).toContain("Switch to Team");
    expect(page).not.toContain("Switch to Starter");
    expect(page).toContain(">Cancel plan</button>");
    expect(page).toContain(`<a href="${invoice.hosted_invoice_url}">${invoice.number}</a>`);
    expect(page).toContain('<a href="http://berth.test/billing">Return to Berth</a>');
  });

  it("cancels at period end, then renews, each with customer.subscription.updated", async () => {
    const canceled = await post("cancel");
    expect(canceled.map((event) => event.type)).toEqual(["customer.subscription.updated"]);
    expect(canceled[0]!.data.object).toMatchObject({ cancel_at_period_end: true, status: "active" });
    expect(canceled[0]!.data.previous_attributes).toMatchObject({ cancel_at_period_end: false, cancel_at: null });
    const page = await (await harness.request(portal)).text();
    expect(page).toContain(">Renew plan</button>");
    expect(page).toMatch(/Cancels on /);

    const renewed = await post("renew");
    expect(renewed.map((event) => event.type)).toEqual(["customer.subscription.updated"]);
    expect(renewed[0]!.data.object.cancel_at_period_end).toBe(false);
    expect(renewed[0]!.data.previous_attributes).toMatchObject({ cancel_at_period_end: true });
  });

  it("switches plan with customer.subscription.updated", async () => {
    const switched = await post("switch", { price: TEAM });
    expect(switched.map((event) => event.type)).toEqual(["customer.subscription.updated"]);
    expect(switched[0]!.data.object.items.data[0].price.id).toBe(TEAM);
    expect(switched[0]!.data.previous_attributes!.items.data[0].price.id).toBe("price_berth_starter_monthly");
    const page = await (await harness.request(portal)).text();
    expect(page).toContain("<strong>Team</strong>");
    expect(page).toContain("Switch to Starter");
  });

  it("refuses a subscription that isn't the portal customer's", async () => {
    const other = await harness.subscribe("other@example.com");
    const response = await harness.request(`${portal}/subscriptions/${other.subscription}/cancel`, { method: "POST" });
    expect(response.status).toBe(404);
    expect((await harness.stripe.subscriptions.retrieve(other.subscription)).cancel_at_period_end).toBe(false);
  });
});
