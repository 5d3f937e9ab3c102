import { Hono } from "hono";
import type Stripe from "stripe";
import { z } from "zod";
import { stripeFor, subtleCryptoProvider } from "../billing/stripe-client";
import { accountOfEvent, handleStripeEvent } from "../billing/webhooks";
import { handleEntitlementEvents } from "../servers/entitlement-jobs";
import { applyPlanChanges } from "../servers/plan-changes";
import { badRequest } from "../errors";
import type { AppEnv } from "../http/context";

// Stripe signs the raw body: it is verified before it is parsed, with Web Crypto.
const SIGNATURE_TOLERANCE_SECONDS = 300;

/** What every event has; a signed body without it is refused rather than reaching D1. */
const eventEnvelope = z.looseObject({
  id: z.string().min(1).max(255),
  type: z.string().min(1).max(255),
  data: z.looseObject({ object: z.looseObject({}) }),
});

export const stripeWebhookRoutes = new Hono<AppEnv>().post("/", async (c) => {
  const { ctx } = c.var;
  const signature = c.req.header("stripe-signature");
  if (!signature) throw badRequest("invalid_signature", "Missing Stripe-Signature header.");
  const stripe = stripeFor(ctx.config);
  const payload = await c.req.text();
  let event: Stripe.Event;
  try {
    event = await stripe.webhooks.constructEventAsync(
      payload,
      signature,
      ctx.config.stripe.webhookSecret,
      SIGNATURE_TOLERANCE_SECONDS,
      subtleCryptoProvider,
      ctx.now.getTime(),
    );
  } catch {
    throw badRequest("invalid_signature", "The Stripe signature is missing, malformed, stale or wrong.");
  }
  if (!eventEnvelope.safeParse(event).success) throw badRequest("invalid_event", "The body is not a Stripe event.");
  const outcome = await handleStripeEvent(ctx, event);
  // Suspend, resume or resize the account's homeservers now rather than at the next cron run.
  c.executionCtx.waitUntil(
    (async () => {
      await handleEntitlementEvents(ctx);
      const account = await accountOfEvent(ctx.db, event);
      if (account) await applyPlanChanges(ctx, account);
    })(),
  );
  console.log(JSON.stringify({ event: "stripe_webhook", id: event.id, type: event.type, outcome }));
  return c.json({ received: true, outcome });
});
