import { z } from "zod";
import { RATE_LIMIT_RULES, rateLimitRulesSchema, type RateLimitName, type RateLimitRule } from "./auth/rate-limit";
import type { EntitlementPolicy } from "./billing/entitlement";

/**
 * Every setting the Worker reads: wrangler.toml's [vars] and the secrets set with
 * `wrangler secret put` (README, "Deploying"). Only this file reads them; the rest of the
 * Worker reads the WorkerConfig parsed from them.
 */
export const SETTING_NAMES = [
  "ENVIRONMENT",
  "PUBLIC_URL",
  "SESSION_KEYRING_SECRET",
  "BACKUP_KEY_WRAPPING_SECRET",
  "MAIL_FROM",
  "RESEND_API_KEY",
  "STRIPE_SECRET_KEY",
  "STRIPE_WEBHOOK_SECRET",
  "STRIPE_API_URL",
  "CLOUDFLARE_DNS_API_TOKEN",
  "CLOUDFLARE_ZONE_ID",
  "CLOUDFLARE_API_URL",
  "HOMESERVER_DOMAIN",
  "HOMESERVER_HTTPS_PORT",
  "SYNAPSE_IMAGE",
  "POSTGRES_IMAGE",
  "GRACE_PERIOD_DAYS",
  "DELETION_WINDOW_DAYS",
  "RATE_LIMITS",
] as const;

export type SettingName = (typeof SETTING_NAMES)[number];

/** The settings as the runtime passes them: strings, any of them possibly missing. */
export type Settings = { [Name in SettingName]?: string };

export type Environment = "production" | "development";

export interface WorkerConfig {
  environment: Environment;
  /** Our origin (https://berth.example): links we email, and the URLs agents upload backups to. */
  publicOrigin: string;
  /** Wraps the session signing keys stored in D1. */
  sessionKeyringSecret: string;
  /** Wraps each homeserver's backup identity (age private key) stored in D1. */
  backupKeyWrappingSecret: string;
  /** Resend, or (development only) the outbox shown at /dev/mailbox. */
  mail: { provider: "resend"; apiKey: string; from: string } | { provider: "outbox" };
  stripe: {
    /** Stripe itself, or (development only) the local emulator. */
    api: { secretKey: string } | { emulatorUrl: string };
    /** The signing secret of our webhook endpoint. */
    webhookSecret: string;
  };
  /**
   * Where homeservers' A/AAAA records are kept: Cloudflare DNS (in development, possibly the local
   * emulator), or (development only) none, as *.localhost resolves to this machine without records.
   */
  dns: DnsConfig;
  entitlement: EntitlementPolicy;
  homeservers: {
    /** Homeservers are <name>.<domain>. */
    domain: string;
    /** The port homeservers are served on over HTTPS. */
    httpsPort: number;
    /** The images a new homeserver gets. */
    images: { synapse: string; postgres: string };
  };
  rateLimits: Record<RateLimitName, RateLimitRule>;
}

export type DnsConfig =
  | {
      provider: "cloudflare";
      /** A token scoped to DNS edit on one zone. */
      apiToken: string;
      zoneId: string;
      /** The local emulator's URL (development only); Cloudflare's own API without it. */
      apiUrl?: string;
    }
  | { provider: "none" };

export function isDevelopment(config: WorkerConfig): boolean {
  return config.environment === "development";
}

export interface ConfigProblem {
  setting: SettingName;
  /** What is wrong, in our words: never the setting's value (it may be a secret). */
  problem: string;
}

/** Settings that are missing or malformed: the Worker does not run with them. */
export class ConfigError extends Error {
  constructor(
    /** Undefined when ENVIRONMENT itself is the problem. */
    readonly environment: Environment | undefined,
    readonly problems: ConfigProblem[],
  ) {
    const which = environment ? `${environment} configuration` : "configuration";
    super(`The Worker's ${which} is not valid: ${problems.map(({ setting, problem }) => `${setting} ${problem}`).join("; ")}.`);
  }

  get settings(): SettingName[] {
    return this.problems.map(({ setting }) => setting);
  }
}

const DAY = 24 * 60 * 60 * 1000;

/** Where an image comes from, as `docker pull` takes it (the same shape operators upgrade to). */
const IMAGE_REFERENCE = /^[a-z0-9][a-z0-9._/:@-]*$/;
/** A digest, or a tag other than `latest`: the image a server gets cannot change under it. */
const PINNED_IMAGE = /(@sha256:[0-9a-f]{64}|:(?!latest$)[\w][\w.-]{0,127})$/;
/** A DNS name of two labels or more, lower-case. */
const DOMAIN = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$/;

function origin(protocols: string[], message: string) {
  return z.string().transform((text, ctx) => {
    try {
      const url = new URL(text);
      if (protocols.includes(url.protocol)) return url.origin;
    } catch {
      // Not a URL at all: the same problem as one of another scheme.
    }
    ctx.addIssue({ code: "custom", message });
    return z.NEVER;
  });
}

const secret = z.string().min(32, "must be at least 32 characters (e.g. `openssl rand -hex 32`)");
const days = z
  .string()
  .regex(/^\d+(\.\d+)?$/, "must be a number of days")
  .transform(Number);
const PORT = "must be a port number (1–65535)";
const port = z
  .string()
  .regex(/^\d{1,5}$/, PORT)
  .transform(Number)
  .pipe(z.number().min(1, PORT).max(65535, PORT));
const domain = z.string().regex(DOMAIN, "must be a lower-case DNS name, e.g. berth.example");
const mailbox = z.string().regex(/^([^<>@]*<[^<>\s@]+@[^<>\s@]+>|[^<>\s@]+@[^<>\s@]+)$/, 'must be an address, e.g. "Berth <no-reply@berth.example>"');
const resendApiKey = z.string().regex(/^re_\S+$/, "must be a Resend API key (re_…)");
// A publishable key (pk_…) pasted by mistake is refused here.
const stripeSecretKey = z.string().regex(/^(sk|rk)_(live|test)_\w+$/, "must be a secret key (sk_live_…, sk_test_…)");
const stripeWebhookSecret = z.string().regex(/^whsec_\S+$/, "must be a webhook signing secret (whsec_…)");
const stripeEmulator = origin(["http:", "https:"], "must be the local Stripe emulator's http(s) URL");
const cloudflareApiToken = z.string().regex(/^[\w-]{40,}$/, "must be a Cloudflare API token (40 or more letters, digits, - and _)");
const cloudflareZoneId = z.string().regex(/^[0-9a-f]{32}$/, "must be a zone id (32 lower-case hex digits)");
const cloudflareEmulator = origin(["http:", "https:"], "must be the local Cloudflare DNS emulator's http(s) URL");

function image(production: boolean) {
  const reference = z.string().regex(IMAGE_REFERENCE, "must be an image reference, e.g. matrixdotorg/synapse:v1.163.2");
  return production ? reference.regex(PINNED_IMAGE, "must be pinned in production: a tag other than latest, or a digest") : reference;
}

const rateLimits = z
  .string()
  .transform((text, ctx) => {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      ctx.addIssue({ code: "custom", message: "must be a JSON object" });
      return z.NEVER;
    }
  })
  .pipe(rateLimitRulesSchema);

/** A zod error as a problem: its messages, with the path inside the setting (RATE_LIMITS') where there is one. */
function describe(error: z.ZodError): string {
  return error.issues.map((issue) => (issue.path.length ? `${issue.path.join(".")}: ${issue.message}` : issue.message)).join(", ");
}

function parseConfig(env: Settings): WorkerConfig | ConfigError {
  const problems: ConfigProblem[] = [];
  /** The setting parsed; undefined when it is missing (a problem if `requiredWhy` is given: why it is needed) or malformed (a problem). */
  function read<T>(name: SettingName, schema: z.ZodType<T, string>, requiredWhy: string | null): T | undefined {
    // `--var NAME:` passes an empty string: as good as unset.
    const value = env[name] === "" ? undefined : env[name];
    if (value === undefined) {
      if (requiredWhy !== null) problems.push({ setting: name, problem: `is required${requiredWhy}` });
      return undefined;
    }
    const result = schema.safeParse(value);
    if (result.success) return result.data;
    problems.push({ setting: name, problem: describe(result.error) });
    return undefined;
  }
  const required = <T>(name: SettingName, schema: z.ZodType<T, string>, why = "") => read(name, schema, why);
  const optional = <T>(name: SettingName, schema: z.ZodType<T, string>) => read(name, schema, null);
  const given = (name: SettingName) => env[name] !== undefined && env[name] !== "";

  const environment = required("ENVIRONMENT", z.enum(["production", "development"], 'must be "production" or "development"'));
  // It decides what the other settings must be.
  if (environment === undefined) return new ConfigError(undefined, problems);
  const production = environment === "production";
  /** Needed in production; in development, what is given must be right. */
  const inProduction = <T>(name: SettingName, schema: z.ZodType<T, string>) => (production ? required(name, schema, " in production") : optional(name, schema));

  const publicOrigin = required(
    "PUBLIC_URL",
    production ? origin(["https:"], "must be an https URL in production") : origin(["https:", "http:"], "must be an http(s) URL"),
  );
  const sessionKeyringSecret = required("SESSION_KEYRING_SECRET", secret);
  const backupKeyWrappingSecret = required("BACKUP_KEY_WRAPPING_SECRET", secret);

  const resendKey = inProduction("RESEND_API_KEY", resendApiKey);
  const mailFrom = given("RESEND_API_KEY") ? required("MAIL_FROM", mailbox, " with RESEND_API_KEY") : optional("MAIL_FROM", mailbox);

  const stripeKey = inProduction("STRIPE_SECRET_KEY", stripeSecretKey);
  // The emulator exists only in development: production never reads its URL.
  const stripeEmulatorUrl = production
    ? undefined
    : given("STRIPE_SECRET_KEY")
      ? optional("STRIPE_API_URL", stripeEmulator)
      : required("STRIPE_API_URL", stripeEmulator, " without STRIPE_SECRET_KEY");
  const webhookSecret = required("STRIPE_WEBHOOK_SECRET", stripeWebhookSecret);

  const dnsToken = inProduction("CLOUDFLARE_DNS_API_TOKEN", cloudflareApiToken);
  // Development without a token keeps no records (*.localhost needs none): the zone id and URL are not read.
  const dnsZoneId = production
    ? required("CLOUDFLARE_ZONE_ID", cloudflareZoneId, " in production")
    : given("CLOUDFLARE_DNS_API_TOKEN")
      ? required("CLOUDFLARE_ZONE_ID", cloudflareZoneId, " with CLOUDFLARE_DNS_API_TOKEN")
      : undefined;
  // The emulator exists only in development: production never reads its URL.
  const dnsApiUrl = production || !given("CLOUDFLARE_DNS_API_TOKEN") ? undefined : optional("CLOUDFLARE_API_URL", cloudflareEmulator);

  const homeserverDomain = inProduction("HOMESERVER_DOMAIN", domain) ?? "berth.example";
  const httpsPort = optional("HOMESERVER_HTTPS_PORT", port) ?? 443;
  const synapseImage = required("SYNAPSE_IMAGE", image(production));
  const postgresImage = required("POSTGRES_IMAGE", image(production));

  const graceDays = optional("GRACE_PERIOD_DAYS", days) ?? 7;
  const deletionWindowDays = optional("DELETION_WINDOW_DAYS", days) ?? 30;
  const rules = optional("RATE_LIMITS", rateLimits) ?? RATE_LIMIT_RULES;

  if (problems.length > 0) return new ConfigError(environment, problems);
  // No problems: every setting required is there.
  return {
    environment,
    publicOrigin: publicOrigin!,
    sessionKeyringSecret: sessionKeyringSecret!,
    backupKeyWrappingSecret: backupKeyWrappingSecret!,
    mail: resendKey ? { provider: "resend", apiKey: resendKey, from: mailFrom! } : { provider: "outbox" },
    stripe: { api: stripeKey ? { secretKey: stripeKey } : { emulatorUrl: stripeEmulatorUrl! }, webhookSecret: webhookSecret! },
    dns: dnsToken ? { provider: "cloudflare", apiToken: dnsToken, zoneId: dnsZoneId!, ...(dnsApiUrl ? { apiUrl: dnsApiUrl } : {}) } : { provider: "none" },
    entitlement: { graceMs: graceDays * DAY, deletionWindowMs: deletionWindowDays * DAY },
    homeservers: { domain: homeserverDomain, httpsPort, images: { synapse: synapseImage!, postgres: postgresImage! } },
    rateLimits: rules,
  };
}

// Per env object: the runtime hands the same one to every request an isolate serves.
const parsed = new WeakMap<Settings, WorkerConfig | ConfigError>();

/**
 * The Worker's configuration, parsed from `env` the first time it is asked for, and kept: a
 * missing or malformed setting stops the Worker at start (every request answers 503, the cron
 * fails), logged once with the settings' names, never their values.
 */
export function workerConfig(env: Settings): WorkerConfig {
  let config = parsed.get(env);
  if (config === undefined) {
    config = parseConfig(env);
    parsed.set(env, config);
    if (config instanceof ConfigError) {
      console.error(JSON.stringify({ event: "config_invalid", environment: config.environment, problems: config.problems }));
    }
  }
  if (config instanceof ConfigError) throw config;
  return config;
}
