#!/usr/bin/env node
// `npm run dev`: the whole product on this machine. Applies the local D1
// migrations, starts the local Stripe emulator (unless a real Stripe test key
// is given), then runs the Worker under `wrangler dev` with development
// settings layered over the production wrangler.toml.
//
//   node scripts/dev.mjs [--port 8787] [--stripe-port 12111] [--https-port 8443] [--persist-to .wrangler/state]
//                        [--hosts 1] [--enroll-by-hand] [--production] [--no-agent] [--no-setup]
//                        [--stand-in-domain acme.test=127.0.0.1:8080 …]
//
// First it sets the machine up for the local agent (scripts/setup.mjs): as root on Debian or
// Ubuntu it installs what is missing (Docker Engine, Caddy, iptables, debootstrap, age, zstd),
// starts dockerd if none answers and builds the images; anywhere else it says what is missing and
// the commands to run, and the product runs without the local agent, as with --no-agent.
// --no-setup leaves the machine alone (for those who manage it themselves); --no-agent and
// --production skip the set-up too, as they run no agent.
//
// Once the Worker answers, a local berth-agent is enrolled (once, kept in the
// state directory) and started against it, with its data root in the state
// directory: that is not on dm-crypt, so it runs with the development flag
// --allow-unencrypted-data-root, which operators see on the host. When Caddy
// is installed it is started too (admin API on a unix socket in the state
// directory, its own internal CA) and the agent serves homeservers through it
// at https://<name>.berth.localhost:<https port>. Homeservers need Docker
// Engine and the images from `bash images/build.sh`. --no-agent skips agent
// and Caddy (the tests start their own agents).
//
// --hosts N (2 to 9) runs N such hosts on this machine, each its own agent, data root, host
// namespace and Caddy (on 127.0.0.<i+1>, the same HTTPS port): scripts/local-hosts.mjs says how.
// --enroll-by-hand leaves each host waiting for `berth-agent enroll` with an operator's join token.
//
// --stand-in-domain <domain>=<host>:<port> (repeatable; the domain under .test) has each host's
// Caddy stand in for a customer's own domain: HTTPS for it (from Caddy's internal CA) is proxied to
// the local HTTP server at host:port, which serves that domain's Matrix well-knowns. A homeserver
// created with that domain as its server name is then checked, discovered and federated with
// through it as in production (agent/proxy/README.md, "Stand-in domains").
//
// --stripe-port 0 lets the emulator bind any free port (it says which; the Worker is
// only started once it listens). --production runs wrangler.toml exactly as
// deployed (no dev mailbox, no outbox, no emulator): the tests use it to prove
// the dev routes are absent there. With STRIPE_SECRET_KEY and
// STRIPE_WEBHOOK_SECRET in the environment, the Worker talks to Stripe's test
// mode instead of the emulator (forward webhooks with `stripe listen`).
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { applyLocalMigrations } from "./local-d1.mjs";
import { localHosts, parseStandInDomains, startLocalHosts } from "./local-hosts.mjs";
import { runSetup } from "./setup.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { values: options } = parseArgs({
  options: {
    port: { type: "string", default: "8787" },
    "stripe-port": { type: "string", default: "12111" },
    "https-port": { type: "string", default: "8443" },
    "persist-to": { type: "string", default: join(root, ".wrangler", "state") },
    production: { type: "boolean", default: false },
    "no-agent": { type: "boolean", default: false },
    "no-setup": { type: "boolean", default: false },
    hosts: { type: "string", default: "1" },
    "enroll-by-hand": { type: "boolean", default: false },
    "stand-in-domain": { type: "string", multiple: true, default: [] },
  },
});
const hostCount = Number(options.hosts);
let standInDomains;
try {
  // Checked before anything starts: a wrong count is a usage error, not a half-started product.
  localHosts(resolve(options["persist-to"]), hostCount, Number(options["https-port"]));
  standInDomains = parseStandInDomains(options["stand-in-domain"]);
} catch (error) {
  console.error(`[dev] ${error.message}`);
  process.exit(2);
}
const persistTo = resolve(options["persist-to"]);
const wranglerBin = join(dirname(createRequire(import.meta.url).resolve("wrangler/package.json")), "bin", "wrangler.js");
const quietEnv = { ...process.env, WRANGLER_SEND_METRICS: "false", NO_UPDATE_NOTIFIER: "1", CI: "true" };
const realStripe = Boolean(process.env.STRIPE_SECRET_KEY);
if (realStripe && !process.env.STRIPE_WEBHOOK_SECRET) {
  console.error("[dev] with STRIPE_SECRET_KEY, set STRIPE_WEBHOOK_SECRET too: the whsec_… that `stripe listen` prints");
  process.exit(1);
}
const children = [];

function log(message) {
  console.log(`[dev] ${message}`);
}

function parseDotenv(text) {
  return Object.fromEntries(
    text
      .split("\n")
      .filter((line) => line.includes("="))
      .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
  );
}

/**
 * Development secrets live beside the local state they protect, generated once
 * and kept: the session key ring and the backup identities in local D1 are wrapped with them.
 */
function devSecrets() {
  mkdirSync(persistTo, { recursive: true });
  const file = join(persistTo, "berth-dev-secrets.env");
  const secrets = existsSync(file) ? parseDotenv(readFileSync(file, "utf8")) : {};
  secrets.SESSION_KEYRING_SECRET ??= randomBytes(32).toString("hex");
  secrets.BACKUP_KEY_WRAPPING_SECRET ??= randomBytes(32).toString("hex");
  secrets.STRIPE_WEBHOOK_SECRET ??= `whsec_${randomBytes(24).toString("hex")}`;
  writeFileSync(
    file,
    Object.entries(secrets)
      .map(([name, value]) => `${name}=${value}\n`)
      .join(""),
    { mode: 0o600 },
  );
  return secrets;
}

/**
 * This run's Worker secrets, as a dotenv file for wrangler (never on a command line). The Worker
 * does not start without every secret its environment needs (worker/config.ts); --production gets
 * stand-ins for the mail, Stripe and Cloudflare DNS keys unless real ones are given, so calls to them fail there.
 */
function workerEnvFile(secrets) {
  const values = { SESSION_KEYRING_SECRET: secrets.SESSION_KEYRING_SECRET, BACKUP_KEY_WRAPPING_SECRET: secrets.BACKUP_KEY_WRAPPING_SECRET };
  if (realStripe) {
    values.STRIPE_SECRET_KEY = process.env.STRIPE_SECRET_KEY;
    values.STRIPE_WEBHOOK_SECRET = process.env.STRIPE_WEBHOOK_SECRET;
  } else {
    values.STRIPE_WEBHOOK_SECRET = secrets.STRIPE_WEBHOOK_SECRET;
  }
  if (options.production) {
    values.STRIPE_SECRET_KEY ??= "sk_test_berth_local_production_stand_in";
    values.RESEND_API_KEY = process.env.RESEND_API_KEY ?? "re_berth_local_production_stand_in";
    values.CLOUDFLARE_DNS_API_TOKEN = process.env.CLOUDFLARE_DNS_API_TOKEN ?? "berth_local_production_stand_in_cloudflare_token";
  }
  const file = join(persistTo, "berth-dev-run.env");
  writeFileSync(
    file,
    Object.entries(values)
      .map(([name, value]) => `${name}=${value}\n`)
      .join(""),
    { mode: 0o600 },
  );
  return file;
}

function start(name, args, env, command = process.execPath, stdio = "inherit") {
  const child = spawn(command, args, { cwd: root, env, stdio });
  children.push(child);
  // When one part stops, the whole product stops: a half-running dev setup only confuses.
  child.on("exit", (code, signal) => {
    log(`${name} exited (${code ?? signal})`);
    for (const other of children) if (other !== child) other.kill("SIGTERM");
    process.exit(code ?? 1);
  });
  return child;
}

/** The emulator's URL, from the line it prints once it listens; its output goes on to ours. */
function listeningAt(emulator) {
  return new Promise((resolveUrl) => {
    let heard = "";
    emulator.stdout.on("data", (chunk) => {
      process.stdout.write(chunk);
      if (heard === null) return;
      heard += chunk.toString("utf8");
      const url = /Stripe emulator at (http:\/\/\S+?);/.exec(heard)?.[1];
      if (url) {
        heard = null;
        resolveUrl(url);
      }
    });
  });
}

// Before our signal handlers are installed: Ctrl-C during the set-up stops dev.mjs at once.
let runAgent = !options.production && !options["no-agent"];
if (runAgent && !options["no-setup"] && !(await runSetup()).ready) {
  runAgent = false;
  log("this machine is not set up for homeservers (see above): running without the local berth-agent, as --no-agent does");
}

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    for (const child of children) child.kill(signal);
  });
}

log(`applying D1 migrations to ${persistTo}`);
await applyLocalMigrations({ root, persistTo, log });

const secrets = devSecrets();
const devVars = [
  "--test-scheduled",
  "--var",
  "ENVIRONMENT:development",
  // Backup jobs carry absolute upload/download URLs, also when the cron makes them (no request to take an origin from).
  "--var",
  `PUBLIC_URL:http://localhost:${options.port}`,
  // Homeservers run from the locally built images, at <name>.berth.localhost (browsers resolve *.localhost to this machine).
  "--var",
  "HOMESERVER_DOMAIN:berth.localhost",
  "--var",
  `HOMESERVER_HTTPS_PORT:${options["https-port"]}`,
  "--var",
  "SYNAPSE_IMAGE:berth/synapse:latest",
  "--var",
  "POSTGRES_IMAGE:berth/postgres:15",
];
if (!options.production && !realStripe) {
  const emulator = start(
    "stripe emulator",
    [join(root, "emulator", "stripe", "main.ts"), "--port", options["stripe-port"], "--webhook-url", `http://127.0.0.1:${options.port}/webhooks/stripe`],
    { ...process.env, STRIPE_WEBHOOK_SECRET: secrets.STRIPE_WEBHOOK_SECRET },
    process.execPath,
    ["ignore", "pipe", "inherit"],
  );
  const stripeUrl = await listeningAt(emulator);
  devVars.push("--var", `STRIPE_API_URL:${stripeUrl}`);
  log(`Stripe emulator at ${stripeUrl} (test card 4242 4242 4242 4242; 4000 0000 0000 0341 is declined)`);
}

start(
  "wrangler dev",
  [
    wranglerBin,
    "dev",
    "--ip",
    "127.0.0.1",
    "--port",
    options.port,
    "--inspector-port",
    "0",
    "--persist-to",
    persistTo,
    "--show-interactive-dev-session=false",
    "--env-file",
    workerEnvFile(secrets),
    ...(options.production ? [] : devVars),
  ],
  quietEnv,
);
log(`Berth at http://localhost:${options.port}${options.production ? " (production configuration)" : ""}`);

if (runAgent) {
  // Without its agents the product cannot place a homeserver: stop everything and say why, rather
  // than leave a Worker that answers but reports no capacity.
  await waitForWorker(`http://localhost:${options.port}`);
  await startLocalHosts({
    hosts: localHosts(persistTo, hostCount, Number(options["https-port"])),
    baseUrl: `http://localhost:${options.port}`,
    enrollByHand: options["enroll-by-hand"],
    standInDomains,
    start,
    log,
  }).catch((error) => {
    log(`the local berth-agent could not start: ${error.message}; stopping (--no-agent runs without it)`);
    for (const child of children) child.kill("SIGTERM");
    process.exit(1);
  });
}

async function waitForWorker(base) {
  for (let ready = false; !ready; ) {
    ready = await fetch(`${base}/api/health`).then(
      (response) => response.ok,
      () => false,
    );
    if (!ready) await sleep(500);
  }
}
