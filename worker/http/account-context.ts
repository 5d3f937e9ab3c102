import type { Context } from "hono";
import type { AccountContext } from "../auth/accounts";
import { rateLimitRules } from "../auth/rate-limit";
import { isDevelopment } from "../env";
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

export function accountContext(c: Context<AppEnv>): AccountContext {
  const origin = publicOrigin(c);
  return {
    db: c.var.db,
    mailer: mailerFor(c.env, c.var.db, () => c.var.now),
    now: c.var.now,
    // Cloudflare sets this header itself at the edge; a client cannot supply it.
    clientIp: c.req.header("cf-connecting-ip") ?? "unknown",
    link: (path) => `${origin}${path}`,
    rateLimits: rateLimitRules(c.env.RATE_LIMITS),
    keyringSecret: c.env.SESSION_KEYRING_SECRET,
  };
}
