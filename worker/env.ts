// The Worker's bindings and variables, as wrangler.toml and secrets provide them.
export interface Env {
  DB: D1Database;
  /** "production" (wrangler.toml) or "development" (set by `npm run dev` and the tests). */
  ENVIRONMENT: string;
  /** Origin used in links we email. Falls back to the request's origin in development only. */
  PUBLIC_URL?: string;
  /** Sender address for outgoing mail. */
  MAIL_FROM?: string;
  /** With it, mail goes through Resend; without it, to the dev outbox (development only). */
  RESEND_API_KEY?: string;
  /** Wraps the session signing keys stored in D1. A Worker secret. */
  SESSION_KEYRING_SECRET?: string;
  /** Optional JSON object overriding rate-limit rules by name, e.g. {"login_ip":{"limit":500}}. */
  RATE_LIMITS?: string;
}

export function isDevelopment(env: Env): boolean {
  return env.ENVIRONMENT === "development";
}
