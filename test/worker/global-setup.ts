// The workerd tests talk to a real local Stripe emulator (the one `npm run dev`
// uses) in "hold" mode: it queues signed webhook deliveries, and the tests post
// them to the Worker themselves, in order, twice, reversed or tampered with. The DNS tests talk to a
// local Cloudflare DNS emulator.
import type { TestProject } from "vitest/node";
import { startCloudflareEmulator } from "../../emulator/cloudflare/server.ts";
import { startStripeEmulator } from "../../emulator/stripe/server.ts";
import { CLOUDFLARE_DNS_API_TOKEN, CLOUDFLARE_ZONE_ID, STRIPE_WEBHOOK_SECRET } from "./constants";

declare module "vitest" {
  export interface ProvidedContext {
    stripeEmulatorUrl: string;
    cloudflareEmulatorUrl: string;
  }
}

export default async function setup(project: TestProject) {
  const emulator = await startStripeEmulator({ port: 0, webhookSecret: STRIPE_WEBHOOK_SECRET });
  project.provide("stripeEmulatorUrl", emulator.url);
  // The zone of wrangler.toml's HOMESERVER_DOMAIN.
  const dns = await startCloudflareEmulator({ port: 0, apiToken: CLOUDFLARE_DNS_API_TOKEN, zoneId: CLOUDFLARE_ZONE_ID, zoneName: "berth.example" });
  project.provide("cloudflareEmulatorUrl", dns.url);
  return async () => {
    await emulator.close();
    await dns.close();
  };
}
