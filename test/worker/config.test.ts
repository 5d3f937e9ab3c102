import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RATE_LIMIT_RULES } from "../../worker/auth/rate-limit";
import { ConfigError, SETTING_NAMES, workerConfig, type SettingName, type Settings } from "../../worker/config";
import worker from "../../worker/index";
import { runScheduledMaintenance } from "../../worker/scheduled";
import wranglerToml from "../../wrangler.toml?raw";
import { call, DAY, expectError, ORIGIN, PRODUCTION } from "./helpers";

// The Worker reads its settings once, into a typed configuration: a setting that is missing or
// malformed stops it at start, naming the setting, rather than failing whichever request first uses it.

// Each refusal is logged (config_invalid): kept out of the test output, and read where it matters.
beforeEach(() => vi.spyOn(console, "error").mockImplementation(() => {}));
afterEach(() => vi.restoreAllMocks());

const SECRET = "0123456789abcdef".repeat(4);

/** wrangler.toml's [vars], as deployed. */
const wranglerVars: Settings = Object.fromEntries(
  [...wranglerToml.slice(wranglerToml.indexOf("[vars]"), wranglerToml.indexOf("\n[", wranglerToml.indexOf("[vars]"))).matchAll(/^(\w+) = "(.*)"$/gm)].map(
    ([, name, value]) => [name, value],
  ),
);

/** Production as deployed: wrangler.toml and the secrets README's "Deploying" sets. */
const production: Settings = {
  ...wranglerVars,
  SESSION_KEYRING_SECRET: SECRET,
  BACKUP_KEY_WRAPPING_SECRET: SECRET,
  RESEND_API_KEY: "re_live_key",
  STRIPE_SECRET_KEY: "sk_live_key",
  STRIPE_WEBHOOK_SECRET: "whsec_endpoint_secret",
  CLOUDFLARE_DNS_API_TOKEN: "cloudflare_dns_edit_token_0123456789abcdef",
};

/** What `npm run dev` (scripts/dev.mjs) sets over it. */
const development: Settings = {
  ENVIRONMENT: "development",
  PUBLIC_URL: "http://localhost:8787",
  SESSION_KEYRING_SECRET: SECRET,
  BACKUP_KEY_WRAPPING_SECRET: SECRET,
  STRIPE_WEBHOOK_SECRET: "whsec_dev_secret",
  STRIPE_API_URL: "http://127.0.0.1:12111",
  SYNAPSE_IMAGE: "berth/synapse:latest",
  POSTGRES_IMAGE: "berth/postgres:15",
};

/** The configuration error `settings` make, which must name exactly `names`. */
function refusal(settings: Settings, names: SettingName[]): ConfigError {
  let error: unknown;
  try {
    workerConfig(settings);
  } catch (thrown) {
    error = thrown;
  }
  expect(error).toBeInstanceOf(ConfigError);
  const refused = error as ConfigError;
  expect(refused.settings).toEqual(names);
  for (const name of names) expect(refused.message).toContain(name);
  return refused;
}

/** Runs `run` with console.error captured: the lines logged. */
async function capturingErrors<T>(run: () => Promise<T>): Promise<{ result: T; lines: string[] }> {
  const lines: string[] = [];
  vi.spyOn(console, "error").mockImplementation((...args: unknown[]) => void lines.push(args.map(String).join(" ")));
  return { result: await run(), lines };
}

describe("the Worker's configuration", () => {
  it("production is wrangler.toml and its secrets, with the images it pins", () => {
    const config = workerConfig(production);
    expect(config).toMatchObject({
      environment: "production",
      publicOrigin: "https://berth.example",
      mail: { provider: "resend", apiKey: "re_live_key", from: wranglerVars.MAIL_FROM },
      stripe: { api: { secretKey: "sk_live_key" }, webhookSecret: "whsec_endpoint_secret" },
      homeservers: { domain: "berth.example", httpsPort: 443, images: { synapse: wranglerVars.SYNAPSE_IMAGE, postgres: wranglerVars.POSTGRES_IMAGE } },
    });
    expect(wranglerVars.SYNAPSE_IMAGE).toMatch(/^matrixdotorg\/synapse:v\d+\.\d+\.\d+$/);
  });

  it("development has today's defaults: the outbox, the Stripe emulator, the example domain, the usual windows and limits", () => {
    expect(workerConfig(development)).toEqual({
      environment: "development",
      publicOrigin: "http://localhost:8787",
      sessionKeyringSecret: SECRET,
      backupKeyWrappingSecret: SECRET,
      mail: { provider: "outbox" },
      stripe: { api: { emulatorUrl: "http://127.0.0.1:12111" }, webhookSecret: "whsec_dev_secret" },
      dns: { provider: "none" },
      entitlement: { graceMs: 7 * DAY, deletionWindowMs: 30 * DAY },
      homeservers: { domain: "berth.example", httpsPort: 443, images: { synapse: "berth/synapse:latest", postgres: "berth/postgres:15" } },
      rateLimits: RATE_LIMIT_RULES,
    });
    // With a Stripe test key and Resend's, development talks to them instead.
    expect(workerConfig({ ...development, STRIPE_SECRET_KEY: "sk_test_key", RESEND_API_KEY: "re_test", MAIL_FROM: "dev@berth.example" })).toMatchObject({
      mail: { provider: "resend" },
      stripe: { api: { secretKey: "sk_test_key" } },
    });
  });

  it("reads the optional settings", () => {
    const config = workerConfig({
      ...production,
      HOMESERVER_HTTPS_PORT: "8443",
      GRACE_PERIOD_DAYS: "3",
      DELETION_WINDOW_DAYS: "10.5",
      RATE_LIMITS: JSON.stringify({ login_ip: { limit: 500 }, backup_server: { windowMs: 60_000 } }),
    });
    expect(config.homeservers.httpsPort).toBe(8443);
    expect(config.entitlement).toEqual({ graceMs: 3 * DAY, deletionWindowMs: 10.5 * DAY });
    expect(config.rateLimits).toEqual({
      ...RATE_LIMIT_RULES,
      login_ip: { ...RATE_LIMIT_RULES.login_ip, limit: 500 },
      backup_server: { ...RATE_LIMIT_RULES.backup_server, windowMs: 60_000 },
    });
  });

  /** What production may leave out: the emulator's URL (production never reads it), and the settings with defaults. */
  const optionalInProduction: SettingName[] = [
    "STRIPE_API_URL",
    "CLOUDFLARE_API_URL",
    "HOMESERVER_HTTPS_PORT",
    "GRACE_PERIOD_DAYS",
    "DELETION_WINDOW_DAYS",
    "RATE_LIMITS",
  ];

  it.each(SETTING_NAMES.filter((name) => !optionalInProduction.includes(name)))("production does not start without %s, and names it", (name) => {
    refusal({ ...production, [name]: undefined }, [name]);
    // `wrangler dev --var NAME:` sets it empty: as good as missing.
    refusal({ ...production, [name]: "" }, [name]);
  });

  it.each(optionalInProduction)("production starts without %s", (name) => {
    expect(workerConfig({ ...production, [name]: undefined }).environment).toBe("production");
  });

  it.each<SettingName>([
    "ENVIRONMENT",
    "PUBLIC_URL",
    "SESSION_KEYRING_SECRET",
    "BACKUP_KEY_WRAPPING_SECRET",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_URL",
    "SYNAPSE_IMAGE",
    "POSTGRES_IMAGE",
  ])("development does not start without %s, and names it", (name) => {
    refusal({ ...development, [name]: undefined }, [name]);
  });

  it("development needs the emulator's URL only without a Stripe key, and MAIL_FROM only to send through Resend", () => {
    expect(() => workerConfig({ ...development, STRIPE_API_URL: undefined, STRIPE_SECRET_KEY: "sk_test_key" })).not.toThrow();
    refusal({ ...development, RESEND_API_KEY: "re_test" }, ["MAIL_FROM"]);
  });

  it.each<[SettingName, string, Settings]>([
    ["ENVIRONMENT", "staging", production],
    ["PUBLIC_URL", "berth.example", production],
    ["PUBLIC_URL", "http://berth.example", production],
    ["PUBLIC_URL", "ftp://localhost", development],
    ["SESSION_KEYRING_SECRET", "too short", production],
    ["BACKUP_KEY_WRAPPING_SECRET", "too short", development],
    ["MAIL_FROM", "Berth", production],
    ["RESEND_API_KEY", "key", production],
    ["STRIPE_SECRET_KEY", "pk_live_publishable", production],
    ["STRIPE_WEBHOOK_SECRET", "secret", development],
    ["STRIPE_API_URL", "127.0.0.1:12111", development],
    ["HOMESERVER_DOMAIN", "Berth Example", production],
    ["HOMESERVER_DOMAIN", "localhost", development],
    ["HOMESERVER_HTTPS_PORT", "https", production],
    ["HOMESERVER_HTTPS_PORT", "0", production],
    ["HOMESERVER_HTTPS_PORT", "65536", development],
    ["SYNAPSE_IMAGE", "Matrix Synapse", development],
    ["GRACE_PERIOD_DAYS", "seven", production],
    ["GRACE_PERIOD_DAYS", "-1", production],
    ["DELETION_WINDOW_DAYS", "30d", development],
    ["CLOUDFLARE_DNS_API_TOKEN", "short", production],
    ["CLOUDFLARE_ZONE_ID", "berth.example", production],
    [
      "CLOUDFLARE_API_URL",
      "127.0.0.1:8788",
      { ...development, CLOUDFLARE_DNS_API_TOKEN: "cloudflare_dns_edit_token_0123456789abcdef", CLOUDFLARE_ZONE_ID: "0".repeat(32) },
    ],
    ["RATE_LIMITS", "{not json", production],
    ["RATE_LIMITS", "[]", production],
    ["RATE_LIMITS", JSON.stringify({ login_ipp: { limit: 5 } }), production],
    ["RATE_LIMITS", JSON.stringify({ login_ip: { limit: 0 } }), development],
    ["RATE_LIMITS", JSON.stringify({ login_ip: { limit: 5, burst: 2 } }), development],
  ])("a malformed %s (%j) stops it at start, naming the setting", (name, value, settings) => {
    refusal({ ...settings, [name]: value }, [name]);
  });

  it("names every problem at once, and never a setting's value", () => {
    const error = refusal(
      { ...production, SESSION_KEYRING_SECRET: "hunter2-hunter2", STRIPE_SECRET_KEY: "pk_live_publishable_value", RATE_LIMITS: '{"login_ip": oops}' },
      ["SESSION_KEYRING_SECRET", "STRIPE_SECRET_KEY", "RATE_LIMITS"],
    );
    for (const value of ["hunter2", "pk_live_publishable_value", "oops"])
      expect(JSON.stringify({ message: error.message, problems: error.problems })).not.toContain(value);
  });
});

describe("DNS", () => {
  const token = "cloudflare_dns_edit_token_0123456789abcdef";

  it("production keeps records in Cloudflare's zone, always through Cloudflare's own API", () => {
    expect(workerConfig(production).dns).toEqual({ provider: "cloudflare", apiToken: token, zoneId: wranglerVars.CLOUDFLARE_ZONE_ID });
    // The emulator's URL is a development setting: production never reads it, so it cannot be pointed elsewhere.
    expect(workerConfig({ ...production, CLOUDFLARE_API_URL: "http://127.0.0.1:8788" }).dns).not.toHaveProperty("apiUrl");
  });

  it("development keeps none without a token (*.localhost needs none), and uses the emulator or Cloudflare with one", () => {
    expect(workerConfig({ ...development, CLOUDFLARE_ZONE_ID: "0".repeat(32) }).dns).toEqual({ provider: "none" });
    const zoneId = "0123456789abcdef0123456789abcdef";
    expect(
      workerConfig({ ...development, CLOUDFLARE_DNS_API_TOKEN: token, CLOUDFLARE_ZONE_ID: zoneId, CLOUDFLARE_API_URL: "http://127.0.0.1:8788/" }).dns,
    ).toEqual({
      provider: "cloudflare",
      apiToken: token,
      zoneId,
      apiUrl: "http://127.0.0.1:8788",
    });
    refusal({ ...development, CLOUDFLARE_DNS_API_TOKEN: token }, ["CLOUDFLARE_ZONE_ID"]);
  });

  it("a malformed token is named, never shown", () => {
    const error = refusal({ ...production, CLOUDFLARE_DNS_API_TOKEN: "secret value with spaces" }, ["CLOUDFLARE_DNS_API_TOKEN"]);
    expect(JSON.stringify({ message: error.message, problems: error.problems })).not.toContain("secret value");
  });
});

describe("homeserver images", () => {
  it("have no default: a Worker without them does not start, in development either", () => {
    refusal({ ...development, SYNAPSE_IMAGE: undefined, POSTGRES_IMAGE: undefined }, ["SYNAPSE_IMAGE", "POSTGRES_IMAGE"]);
    refusal({ ...production, SYNAPSE_IMAGE: undefined }, ["SYNAPSE_IMAGE"]);
  });

  it("are pinned in production: a tag other than latest, or a digest", () => {
    for (const unpinned of ["matrixdotorg/synapse:latest", "matrixdotorg/synapse", "registry.example:5000/synapse"]) {
      refusal({ ...production, SYNAPSE_IMAGE: unpinned }, ["SYNAPSE_IMAGE"]);
    }
    refusal({ ...production, POSTGRES_IMAGE: "postgres" }, ["POSTGRES_IMAGE"]);
    for (const pinned of ["matrixdotorg/synapse:v1.163.2", "registry.example:5000/synapse:v1.163.2", `matrixdotorg/synapse@sha256:${"a".repeat(64)}`]) {
      expect(workerConfig({ ...production, SYNAPSE_IMAGE: pinned }).homeservers.images.synapse).toBe(pinned);
    }
    // Development runs the images built on this machine.
    expect(workerConfig(development).homeservers.images.synapse).toBe("berth/synapse:latest");
  });
});

describe("parsing once", () => {
  it("keeps the configuration of an env object, and parses another env object afresh", () => {
    const settings = { ...development, RATE_LIMITS: JSON.stringify({ login_ip: { limit: 500 } }) };
    const config = workerConfig(settings);
    expect(workerConfig(settings)).toBe(config);
    const changed = { ...settings, RATE_LIMITS: JSON.stringify({ login_ip: { limit: 5 } }) };
    expect(workerConfig(changed).rateLimits.login_ip.limit).toBe(5);
    expect(workerConfig(settings).rateLimits.login_ip.limit).toBe(500);
  });

  it("a malformed RATE_LIMITS stops the Worker at start: every request refused, even those that never rate-limit, and one log line that names it", async () => {
    const broken = { ...env, RATE_LIMITS: "{not json" };
    const fetch = async (path: string, headers: Record<string, string> = {}) => {
      const ctx = createExecutionContext();
      const response = await worker.fetch(new Request(`${ORIGIN}${path}`, { headers }), broken, ctx);
      await waitOnExecutionContext(ctx);
      return response;
    };
    const {
      result: [health, plans, page],
      lines,
    } = await capturingErrors(async () => [await fetch("/api/health"), await fetch("/api/billing/plans"), await fetch("/login", { accept: "text/html" })]);
    await expectError(health!, 503, "misconfigured");
    await expectError(plans!, 503, "misconfigured");
    expect(page!.status).toBe(503);
    expect(page!.headers.get("content-type")).toMatch(/^text\/html/);
    expect(await page!.text()).not.toContain("RATE_LIMITS");
    // Logged when parsed, once for the three requests: the setting named, with what is wrong with it.
    expect(lines.map((line) => JSON.parse(line))).toEqual([
      { event: "config_invalid", environment: "development", problems: [{ setting: "RATE_LIMITS", problem: "must be a JSON object" }] },
    ]);
  });

  it("production without a secret it needs refuses every request and the cron", async () => {
    const missing = { ...PRODUCTION, STRIPE_WEBHOOK_SECRET: undefined };
    await expectError(await call("/api/health", { env: missing }), 503, "misconfigured");
    await expect(runScheduledMaintenance({ ...env, ...missing }, new Date(), "17 * * * *")).rejects.toThrow(/STRIPE_WEBHOOK_SECRET/);
    expect((await call("/api/health", { env: PRODUCTION })).status).toBe(200);
  });
});
