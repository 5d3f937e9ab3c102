// Verified, idempotent Stripe webhook processing on the real `npm run dev`
// server: signed `invoice.paid` events for a real paid invoice, first as new
// events (signature check, event id recorded, invoice and subscription fetched
// from the local Stripe emulator, D1 batch), then the same events again as
// duplicates (signature check, one D1 lookup); against GET /api/health.
import { createHmac } from "node:crypto";
import { join } from "node:path";
import { readDotenv, startDevServer } from "./dev-server.mjs";
import { load, rate, summarize } from "./lib.mjs";
import { call, subscribedCustomer } from "./customer.mjs";

const API_VERSION = "2026-10-28.endive";
const STRIPE_KEY = "sk_test_x";

/**
 * A paying customer (bench/customer.mjs) and the invoice they paid, as the
 * emulator serves it, with the customer, subscription and session cookie.
 */
async function paidInvoice(base, stripeUrl) {
  const { cookie, sessionId } = await subscribedCustomer(base, stripeUrl, "webhooks");
  // Every pushed delivery done, so none of them runs during the measurement.
  await call(`${stripeUrl}/_emulator/deliveries/flush`, { method: "POST" });

  const auth = { headers: { authorization: `Bearer ${STRIPE_KEY}` } };
  const session = await call(`${stripeUrl}/v1/checkout/sessions/${sessionId}`, auth);
  const { data } = await call(`${stripeUrl}/v1/invoices?customer=${session.customer}`, auth);
  const paid = data.find((invoice) => invoice.status === "paid");
  if (!paid) throw new Error(`customer ${session.customer} has no paid invoice`);
  const invoice = await call(`${stripeUrl}/v1/invoices/${paid.id}`, auth);
  return { invoice, customer: session.customer, subscription: session.subscription, cookie };
}

/** A Stripe `invoice.paid` event around the invoice, serialized once. */
function invoicePaidEvent(id, invoice) {
  return JSON.stringify({
    id,
    object: "event",
    api_version: API_VERSION,
    created: Math.floor(Date.now() / 1000),
    data: { object: invoice },
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type: "invoice.paid",
  });
}

/** Stripe's signature scheme: t=<unix s>,v1=<hex HMAC-SHA256(secret, "t.payload")>, signed now. */
function signed(payload, secret) {
  const t = Math.floor(Date.now() / 1000);
  const v1 = createHmac("sha256", secret).update(`${t}.${payload}`, "utf8").digest("hex");
  return { body: payload, headers: { "stripe-signature": `t=${t},v1=${v1}` } };
}

/**
 * `rounds` rounds, each: health batch, a slice of new events, the same slice again
 * as duplicates (health last in odd rounds), so drift lands on all three alike.
 */
export async function benchWebhooks({ server, events = 600, healthRequests = 3000, warmupEvents = 30, warmupHealth = 100, concurrency = 8, rounds = 6 } = {}) {
  const own = !server;
  server ??= await startDevServer();
  try {
    const { base, stripeUrl, persistTo } = server;
    // The secret the Worker verifies with is the one dev.mjs handed it in this run's env file.
    const secret = readDotenv(join(persistTo, "berth-dev-run.env")).STRIPE_WEBHOOK_SECRET;
    if (secret !== readDotenv(join(persistTo, "berth-dev-secrets.env")).STRIPE_WEBHOOK_SECRET) {
      throw new Error("the Worker's STRIPE_WEBHOOK_SECRET is not the dev secret: is STRIPE_SECRET_KEY set?");
    }
    const account = await paidInvoice(base, stripeUrl);

    const payloads = Array.from({ length: warmupEvents + events }, (_, n) => invoicePaidEvent(`evt_bench_${n}`, account.invoice));
    const webhookUrl = `${base}/webhooks/stripe`;
    const expect =
      (outcome, slice) =>
      ({ status, body }, i) => {
        let answer;
        try {
          answer = JSON.parse(body);
        } catch {}
        if (status !== 200 || answer?.received !== true || answer?.outcome !== outcome) {
          throw new Error(`webhook ${JSON.parse(slice[i]).id}: expected 200 "${outcome}", got ${status}: ${body}`);
        }
      };
    const deliver = (slice, outcome) =>
      load(webhookUrl, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: (i) => signed(slice[i], secret),
        check: expect(outcome, slice),
        requests: slice.length,
        concurrency,
      });
    const health = (requests) => load(`${base}/api/health`, { requests, concurrency });

    await health(warmupHealth);
    await deliver(payloads.slice(0, warmupEvents), "processed");
    await deliver(payloads.slice(0, warmupEvents), "duplicate");

    const runs = { health: [], fresh: [], duplicate: [] };
    const measured = payloads.slice(warmupEvents);
    const perRound = Math.ceil(events / rounds);
    for (let r = 0; r < rounds; r++) {
      const slice = measured.slice(r * perRound, (r + 1) * perRound);
      if (r % 2 === 0) runs.health.push(await health(Math.ceil(healthRequests / rounds)));
      runs.fresh.push(await deliver(slice, "processed"));
      runs.duplicate.push(await deliver(slice, "duplicate"));
      if (r % 2 === 1) runs.health.push(await health(Math.ceil(healthRequests / rounds)));
    }

    // The replays changed nothing the customer sees.
    const after = await call(`${base}/api/billing/subscription`, { headers: { cookie: account.cookie } });
    if (after.status !== "active") throw new Error(`after the bench the subscription is ${after.status}`);

    const healthStats = summarize(runs.health);
    const fresh = summarize(runs.fresh);
    const duplicate = summarize(runs.duplicate);
    const byRound = (runsOf, over) => runsOf.map((run, i) => rate(run) / rate(over[i]));
    return {
      concurrency,
      rounds,
      warmup: { events: warmupEvents, health: warmupHealth },
      payloadBytes: Buffer.byteLength(measured[0]),
      health: healthStats,
      fresh,
      duplicate,
      ratios: {
        freshOverHealthThroughput: fresh.reqPerSec / healthStats.reqPerSec,
        freshOverHealthThroughputByRound: byRound(runs.fresh, runs.health),
        duplicateOverHealthThroughput: duplicate.reqPerSec / healthStats.reqPerSec,
        duplicateOverHealthThroughputByRound: byRound(runs.duplicate, runs.health),
        freshOverDuplicateP50: fresh.p50Ms / duplicate.p50Ms,
        freshOverDuplicateMean: fresh.meanMs / duplicate.meanMs,
        freshOverDuplicateThroughput: fresh.reqPerSec / duplicate.reqPerSec,
        freshOverDuplicateThroughputByRound: byRound(runs.fresh, runs.duplicate),
      },
    };
  } finally {
    if (own) await server.stop();
  }
}
