import { createMiddleware } from "hono/factory";
import { secureHeaders } from "hono/secure-headers";
import { isDevelopment, type Env } from "../env";
import type { AppEnv } from "./context";

// Stripe's hosted Checkout and Customer Portal: our billing forms redirect there,
// and browsers apply form-action to a form's redirects too.
const STRIPE_PAGES = ["https://checkout.stripe.com", "https://billing.stripe.com"];

/** Pages load only our own scripts, styles and images; forms go only to us and to Stripe; nothing may frame us. */
export function contentSecurityPolicy(env: Env): string {
  const formTargets = ["'self'", ...STRIPE_PAGES];
  if (isDevelopment(env) && env.STRIPE_API_URL) formTargets.push(new URL(env.STRIPE_API_URL).origin);
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

const staticHeaders = secureHeaders({
  contentSecurityPolicy: undefined,
  strictTransportSecurity: "max-age=63072000; includeSubDomains",
  xContentTypeOptions: "nosniff",
  xFrameOptions: "DENY",
  referrerPolicy: "no-referrer",
  crossOriginOpenerPolicy: "same-origin",
  crossOriginResourcePolicy: "same-origin",
  permissionsPolicy: { camera: [], microphone: [], geolocation: [] },
});

export const securityHeaders = createMiddleware<AppEnv>(async (c, next) => {
  await staticHeaders(c, next);
  c.header("Content-Security-Policy", contentSecurityPolicy(c.env));
});
