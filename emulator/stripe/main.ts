// `node emulator/stripe/main.ts --port 12111 [--webhook-url URL] [--host H] [--public-url URL]`
// A local stand-in for Stripe. The webhook signing secret comes from
// STRIPE_WEBHOOK_SECRET. Logs one line per request and delivery attempt.
import { parseArgs } from "node:util";
import { startStripeEmulator } from "./server.ts";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "12111" },
    host: { type: "string", default: "127.0.0.1" },
    "webhook-url": { type: "string" },
    "public-url": { type: "string" },
  },
});

const webhookSecret = process.env.STRIPE_WEBHOOK_SECRET;
if (!webhookSecret) {
  console.error("stripe-emulator: set STRIPE_WEBHOOK_SECRET (the secret the Worker verifies webhooks with, e.g. whsec_local)");
  process.exit(1);
}
const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`stripe-emulator: --port must be a port number, not ${values.port}`);
  process.exit(1);
}

const log = (line: string) => console.log(`[stripe] ${line}`);
const emulator = await startStripeEmulator({
  port,
  host: values.host,
  webhookUrl: values["webhook-url"],
  publicUrl: values["public-url"],
  webhookSecret,
  log,
});
log(`Stripe emulator at ${emulator.url}; webhooks ${values["webhook-url"] ? `→ ${values["webhook-url"]}` : `held at ${emulator.url}/_emulator/deliveries`}`);

let closing = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (closing) return;
    closing = true;
    log(`${signal}: shutting down`);
    emulator.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
