import { createMiddleware } from "hono/factory";
import { secureHeaders } from "hono/secure-headers";
import type { WorkerConfig } from "../config";
import type { AppEnv } from "./context";

// Stripe's hosted Checkout and Customer Portal: our billing forms redirect there,
// and browsers apply form-action to a form's redirects too.
const STRIPE_PAGES = ["https://checkout.stripe.com", "https://billing.stripe.com"];

/** Pages load only our own scripts, styles and images; forms go only to us and to Stripe; nothing may frame us. */
export function contentSecurityPolicy(config: WorkerConfig): string {
  const formTargets = ["'self'", ...STRIPE_PAGES];
  // The local Stripe emulator's pages (development only: production's configuration has none).
  if ("emulatorUrl" in config.stripe.api) formTargets.push(config.stripe.api.emulatorUrl);
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    `form-action ${formTargets.join(" ")}`,
    "frame-ancestors 'none'",
    "base-uri 'none'",
  ].join("; ");
}

/** Every answer's, even a Worker's whose settings are not valid. */
export const securityHeaders = secureHeaders({
  contentSecurityPolicy: undefined,
  strictTransportSecurity: "max-age=63072000; includeSubDomains",
  xContentTypeOptions: "nosniff",
  xFrameOptions: "DENY",
  referrerPolicy: "no-referrer",
  crossOriginOpenerPolicy: "same-origin",
  crossOriginResourcePolicy: "same-origin",
  permissionsPolicy: { camera: [], microphone: [], geolocation: [] },
});

/** After requestContext: the policy depends on the configuration. */
export const contentSecurityPolicyHeader = createMiddleware<AppEnv>(async (c, next) => {
  await next();
  c.header("Content-Security-Policy", contentSecurityPolicy(c.var.ctx.config));
});
