import Stripe from "stripe";
import { isDevelopment, type Env } from "../env";

export class StripeNotConfigured extends Error {
  constructor(detail: string) {
    super(`Stripe is not configured: ${detail}`);
  }
}

const clients = new Map<string, Stripe>();

/**
 * The Stripe SDK, talking to Stripe when STRIPE_SECRET_KEY is set, otherwise (in
 * development only) to the local emulator at STRIPE_API_URL through the SDK's
 * own host/port/protocol settings, so no code path of ours is bypassed.
 */
export function stripeFor(env: Env): Stripe {
  const cacheKey = env.STRIPE_SECRET_KEY ? `key:${env.STRIPE_SECRET_KEY}` : `emulator:${env.STRIPE_API_URL}`;
  let client = clients.get(cacheKey);
  if (client) return client;
  if (env.STRIPE_SECRET_KEY) {
    client = new Stripe(env.STRIPE_SECRET_KEY, { httpClient: Stripe.createFetchHttpClient(), maxNetworkRetries: 2 });
  } else if (isDevelopment(env) && env.STRIPE_API_URL) {
    const url = new URL(env.STRIPE_API_URL);
    client = new Stripe("sk_test_berth_local_emulator", {
      host: url.hostname,
      port: url.port || (url.protocol === "https:" ? 443 : 80),
      protocol: url.protocol === "https:" ? "https" : "http",
      httpClient: Stripe.createFetchHttpClient(),
      maxNetworkRetries: 1,
    });
  } else {
    throw new StripeNotConfigured("set the STRIPE_SECRET_KEY secret");
  }
  clients.set(cacheKey, client);
  return client;
}

export function webhookSecret(env: Env): string {
  if (!env.STRIPE_WEBHOOK_SECRET) throw new StripeNotConfigured("set the STRIPE_WEBHOOK_SECRET secret");
  return env.STRIPE_WEBHOOK_SECRET;
}

export const subtleCryptoProvider = Stripe.createSubtleCryptoProvider();
