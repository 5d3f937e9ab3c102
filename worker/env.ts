// The Worker's bindings and variables, as wrangler.toml and secrets provide them.
export interface Env {
  DB: D1Database;
  /** Encrypted backups: backups/<serverId>/<backupId>.age and a .manifest.json beside each. */
  BACKUPS: R2Bucket;
  /** One Durable Object per host (HostConnection). */
  HOSTS: DurableObjectNamespace<import("./fleet/host-connection").HostConnection>;
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
  /** Wraps each homeserver's backup identity (age private key) stored in D1. A Worker secret. */
  BACKUP_KEY_WRAPPING_SECRET?: string;
  /** Stripe's API key. Without it, development talks to the local emulator at STRIPE_API_URL. */
  STRIPE_SECRET_KEY?: string;
  /** The signing secret of our webhook endpoint (`whsec_…`). */
  STRIPE_WEBHOOK_SECRET?: string;
  /** Development only: the local Stripe emulator, e.g. http://127.0.0.1:12111. */
  STRIPE_API_URL?: string;
  /** Days a past-due account keeps running before suspension (default 7). */
  GRACE_PERIOD_DAYS?: string;
  /** Days a suspended account is kept before its deletion is due (default 30). */
  DELETION_WINDOW_DAYS?: string;
  /** Homeservers are <name>.<HOMESERVER_DOMAIN>. */
  HOMESERVER_DOMAIN?: string;
  /** The port homeservers are served on over HTTPS: 443 in production; development uses a high one. */
  HOMESERVER_HTTPS_PORT?: string;
  /** The container images a new homeserver gets (production: the official ones). */
  SYNAPSE_IMAGE?: string;
  POSTGRES_IMAGE?: string;
  /** Optional JSON object overriding rate-limit rules by name, e.g. {"login_ip":{"limit":500}}. */
  RATE_LIMITS?: string;
}

export function isDevelopment(env: Env): boolean {
  return env.ENVIRONMENT === "development";
}
