// The workerd tests talk to a real local Stripe emulator (the one `npm run dev`
// uses) in "hold" mode: it queues signed webhook deliveries, and the tests post
// them to the Worker themselves, in order, twice, reversed or tampered with.
import type { TestProject } from "vitest/node";
import { startStripeEmulator } from "../../emulator/stripe/server.ts";
import { STRIPE_WEBHOOK_SECRET } from "./constants";

declare module "vitest" {
  export interface ProvidedContext {
    stripeEmulatorUrl: string;
  }
}

export default async function setup(project: TestProject) {
  const emulator = await startStripeEmulator({ port: 0, webhookSecret: STRIPE_WEBHOOK_SECRET });
  project.provide("stripeEmulatorUrl", emulator.url);
  return () => emulator.close();
}
