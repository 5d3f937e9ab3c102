import Stripe from "stripe";
import type { WorkerConfig } from "../config";

const clients = new Map<string, Stripe>();

/**
 * The Stripe SDK, talking to Stripe with the configured secret key, or (in
 * development only) to the local emulator through the SDK's own
 * host/port/protocol settings, so no code path of ours is bypassed.
 */
export function stripeFor(config: WorkerConfig): Stripe {
  const { api } = config.stripe;
  const cacheKey = "secretKey" in api ? `key:${api.secretKey}` : `emulator:${api.emulatorUrl}`;
  let client = clients.get(cacheKey);
  if (client) return client;
  if ("secretKey" in api) {
    client = new Stripe(api.secretKey, { httpClient: Stripe.createFetchHttpClient(), maxNetworkRetries: 2 });
  } else {
    const url = new URL(api.emulatorUrl);
    client = new Stripe("sk_test_berth_local_emulator", {
      host: url.hostname,
      port: url.port || (url.protocol === "https:" ? 443 : 80),
      protocol: url.protocol === "https:" ? "https" : "http",
      httpClient: Stripe.createFetchHttpClient(),
      maxNetworkRetries: 1,
    });
  }
  clients.set(cacheKey, client);
  return client;
}

export const subtleCryptoProvider = Stripe.createSubtleCryptoProvider();
