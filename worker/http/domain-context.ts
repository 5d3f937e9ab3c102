import type { Context } from "hono";
import type { AccountDeletionContext } from "../account/deletion";
import type { AccountContext } from "../auth/accounts";
import { clientNetwork, rateLimitRules } from "../auth/rate-limit";
import { isDevelopment } from "../env";
import type { BillingContext } from "../billing/billing";
import { entitlementPolicy } from "../billing/entitlement";
import { stripeFor } from "../billing/stripe-client";
import type { WebhookContext } from "../billing/webhooks";
import { mailerFor } from "../mail/mailer";
import type { AppEnv } from "./context";

/**
 * Links in email use PUBLIC_URL, never the request's Host header (which an
 * attacker could set to poison a reset link). Development, which runs on
 * whatever port it was given, falls back to the request's own origin.
 */
function publicOrigin(c: Context<AppEnv>): string {
  if (isDevelopment(c.env)) return new URL(c.req.url).origin;
  if (!c.env.PUBLIC_URL) throw new Error("PUBLIC_URL is not configured");
  return new URL(c.env.PUBLIC_URL).origin;
}

/** Builds absolute links to our own pages, for email and for Stripe's redirects. */
export function linkBuilder(c: Context<AppEnv>): (path: string) => string {
  const origin = publicOrigin(c);
  return (path) => `${origin}${path}`;
}

export function accountContext(c: Context<AppEnv>): AccountContext {
  return {
    db: c.var.db,
    mailer: mailerFor(c.env, c.var.db, () => c.var.now),
    now: c.var.now,
    // Cloudflare sets this header itself at the edge; a client cannot supply it.
    clientIp: clientNetwork(c.req.header("cf-connecting-ip")),
    link: linkBuilder(c),
    rateLimits: rateLimitRules(c.env.RATE_LIMITS),
    keyringSecret: c.env.SESSION_KEYRING_SECRET,
  };
}

/** Deleting the account also cancels at Stripe and starts its homeservers' deletion. */
export function accountDeletionContext(c: Context<AppEnv>): AccountDeletionContext {
  return { ...accountContext(c), env: c.env, stripe: stripeFor(c.env) };
}

export function billingContext(c: Context<AppEnv>): BillingContext {
  return { db: c.var.db, stripe: stripeFor(c.env), now: c.var.now, link: linkBuilder(c) };
}

export function webhookContext(c: Context<AppEnv>): WebhookContext {
  return {
    db: c.var.db,
    stripe: stripeFor(c.env),
    mailer: mailerFor(c.env, c.var.db, () => c.var.now),
    now: c.var.now,
    link: linkBuilder(c),
    policy: entitlementPolicy(c.env),
  };
}
