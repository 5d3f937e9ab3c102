// Webhook delivery: pushed to a URL (in order, retried, and the configurable
// misbehaviour), or held for the tests to collect.
import Stripe from "stripe";
import { afterEach, describe, expect, it } from "vitest";
import { reservePort } from "../ports.ts";
import { CHECKOUT_EVENTS, SECRET, startHarness, startReceiver, type Harness, type HeldDelivery } from "./helpers.ts";

const verifier = new Stripe("sk_test_verifier");
const cleanup: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const close of cleanup.splice(0).reverse()) await close();
});

async function pushSetup(status?: (index: number) => number) {
  const receiver = await startReceiver(status);
  cleanup.push(receiver.close);
  const harness = await startHarness({ webhookUrl: receiver.url });
  cleanup.push(harness.close);
  return { receiver, harness };
}

/** The delivery attempts the emulator logged for one event, in order. */
function attemptsOf(harness: Harness, eventId: string): string[] {
  const prefix = new RegExp(`^webhook ${eventId} \\S+ `);
  return harness.logs.filter((line) => prefix.test(line)).map((line) => line.replace(prefix, ""));
}

async function verify(body: string, signature: string | string[] | undefined) {
  return verifier.webhooks.constructEventAsync(body, String(signature), SECRET);
}

describe("push delivery", () => {
  it("POSTs each event, signed, one at a time in emission order", async () => {
    const { receiver, harness } = await pushSetup();
    await harness.subscribe();
    await harness.control("POST", "/_emulator/deliveries/flush");
    expect(receiver.types()).toEqual(CHECKOUT_EVENTS);
    for (const entry of receiver.received) {
      expect(entry.headers["content-type"]).toBe("application/json; charset=utf-8");
      expect(String(entry.headers["stripe-signature"])).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
      const event = await verify(entry.body, entry.headers["stripe-signature"]);
      expect(event.object).toBe("event");
      await expect(verifier.webhooks.constructEventAsync(entry.body, String(entry.headers["stripe-signature"]), "whsec_wrong")).rejects.toThrow();
    }
  });

  it("retries an event answered with 500, keeping the order", async () => {
    const { receiver, harness } = await pushSetup((index) => (index === 0 ? 500 : 200));
    await harness.subscribe();
    await harness.emulator.flushDeliveries();
    expect(receiver.types()).toEqual([CHECKOUT_EVENTS[0], ...CHECKOUT_EVENTS]);
    expect(receiver.ids()[0]).toBe(receiver.ids()[1]);
    await verify(receiver.received[1]!.body, receiver.received[1]!.headers["stripe-signature"]);
    expect(attemptsOf(harness, receiver.ids()[0]!)).toEqual(["attempt 1: failed (HTTP 500); next attempt in 250 ms", "attempt 2: delivered (HTTP 200)"]);
  });

  it("retries when the endpoint can't be reached, until it can", async () => {
    // A reserved port: the endpoint comes back on it.
    const gone = await startReceiver(undefined, await reservePort());
    await gone.close();
    const harness = await startHarness({ webhookUrl: gone.url });
    cleanup.push(harness.close);
    const { subscription } = await harness.subscribe();
    await expect.poll(() => harness.logs.some((line) => line.includes("attempt 2: failed")), { timeout: 10_000 }).toBe(true);
    const back = await startReceiver(undefined, gone.port);
    cleanup.push(back.close);
    await harness.control("POST", `/_emulator/subscriptions/${subscription}/mark-unpaid`);
    await harness.control("POST", "/_emulator/deliveries/flush");
    expect(back.types()).toEqual([...CHECKOUT_EVENTS, "customer.subscription.updated"]);
  });

  it("delivers every event twice with duplicates on", async () => {
    const { receiver, harness } = await pushSetup();
    expect(await harness.control("POST", "/_emulator/config", { duplicates: true })).toEqual({ duplicates: true, reverse: false, failFirstAttempts: 0 });
    await harness.subscribe();
    await harness.control("POST", "/_emulator/deliveries/flush");
    expect(receiver.types()).toEqual([...CHECKOUT_EVENTS, ...CHECKOUT_EVENTS]);
    const ids = receiver.ids();
    expect(ids.slice(8)).toEqual(ids.slice(0, 8));
  });

  it("delivers an action's events in reverse with reverse on", async () => {
    const { receiver, harness } = await pushSetup();
    await harness.control("POST", "/_emulator/config", { reverse: true });
    expect(await harness.control("GET", "/_emulator/config")).toEqual({ duplicates: false, reverse: true, failFirstAttempts: 0 });
    const { subscription } = await harness.subscribe();
    await harness.control("POST", `/_emulator/subscriptions/${subscription}/fail-payment`);
    await harness.control("POST", "/_emulator/deliveries/flush");
    expect(receiver.types()).toEqual([
      ...[...CHECKOUT_EVENTS].reverse(),
      ...["invoice.created", "invoice.finalized", "invoice.payment_failed", "customer.subscription.updated"].reverse(),
    ]);
  });

  it("holds back the first attempts of each event with failFirstAttempts", async () => {
    const { receiver, harness } = await pushSetup();
    const { subscription } = await harness.subscribe();
    await harness.emulator.flushDeliveries();
    await harness.control("POST", "/_emulator/config", { failFirstAttempts: 2 });
    await harness.control("POST", `/_emulator/subscriptions/${subscription}/mark-unpaid`);
    await harness.control("POST", "/_emulator/config", { failFirstAttempts: 0 });
    await harness.control("POST", `/_emulator/subscriptions/${subscription}/renew`);
    await harness.control("POST", "/_emulator/deliveries/flush");
    expect(receiver.types()).toEqual([
      ...CHECKOUT_EVENTS,
      "customer.subscription.updated",
      "invoice.created",
      "invoice.finalized",
      "invoice.paid",
      "customer.subscription.updated",
    ]);
    // Two attempts not sent, each followed by its backoff, then sent.
    expect(attemptsOf(harness, receiver.ids()[8]!)).toEqual([
      "attempt 1: failed (held back by failFirstAttempts); next attempt in 250 ms",
      "attempt 2: failed (held back by failFirstAttempts); next attempt in 500 ms",
      "attempt 3: delivered (HTTP 200)",
    ]);
    expect(harness.logs.filter((line) => line.includes("held back by failFirstAttempts"))).toHaveLength(2);
    await verify(receiver.received[8]!.body, receiver.received[8]!.headers["stripe-signature"]);
  });

  it("refuses a bad setting", async () => {
    const { harness } = await pushSetup();
    const response = await harness.request("/_emulator/config", { method: "POST", body: JSON.stringify({ failFirstAttempts: -1 }) });
    expect(response.status).toBe(400);
    expect((await harness.request("/_emulator/config", { method: "POST", body: JSON.stringify({ shuffle: true }) })).status).toBe(400);
  });
});

describe("hold delivery", () => {
  let harness: Harness;

  it("keeps events until they are taken, per customer, each only once", async () => {
    harness = await startHarness();
    cleanup.push(harness.close);
    const ada = await harness.subscribe("ada@example.com");
    const bob = await harness.subscribe("bob@example.com");
    const before = Math.floor(Date.now() / 1000);

    const adas = await harness.control<HeldDelivery[]>("GET", `/_emulator/deliveries?customer=${ada.customer}`);
    expect(adas.map((delivery) => delivery.type)).toEqual(CHECKOUT_EVENTS);
    for (const delivery of adas) {
      const event = await verify(delivery.payload, delivery.signature);
      expect(event.id).toBe(delivery.id);
      expect(JSON.parse(delivery.payload)).toEqual(event);
      expect(Number(/^t=(\d+),/.exec(delivery.signature)![1])).toBeGreaterThanOrEqual(before);
    }
    expect(await harness.control("GET", `/_emulator/deliveries?customer=${ada.customer}`)).toEqual([]);

    const rest = await harness.control<HeldDelivery[]>("GET", "/_emulator/deliveries");
    expect(rest.map((delivery) => JSON.parse(delivery.payload).data.object.customer ?? JSON.parse(delivery.payload).data.object.id)).toEqual(
      CHECKOUT_EVENTS.map(() => bob.customer),
    );
    expect(await harness.control("GET", "/_emulator/deliveries")).toEqual([]);

    // The event log keeps everything.
    expect(await harness.control<unknown[]>("GET", "/_emulator/events")).toHaveLength(2 * CHECKOUT_EVENTS.length);
    expect(await harness.control<unknown[]>("GET", `/_emulator/events?customer=${ada.customer}`)).toHaveLength(CHECKOUT_EVENTS.length);
  });
});
