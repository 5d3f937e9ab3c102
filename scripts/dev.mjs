#!/usr/bin/env node
// `npm run dev`: the whole product on this machine. Applies the local D1
// migrations, then runs the Worker under `wrangler dev` with development
// settings layered over the production wrangler.toml.
//
//   node scripts/dev.mjs [--port 8787] [--persist-to .wrangler/state] [--production]
//
// --production runs wrangler.toml exactly as deployed (no dev mailbox, no
// outbox): the tests use it to prove the dev routes are absent there.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { values: options } = parseArgs({
  options: {
    port: { type: "string", default: "8787" },
    "persist-to": { type: "string", default: join(root, ".wrangler", "state") },
    production: { type: "boolean", default: false },
  },
});
const persistTo = resolve(options["persist-to"]);
const wranglerBin = join(dirname(createRequire(import.meta.url).resolve("wrangler/package.json")), "bin", "wrangler.js");
const quietEnv = { ...process.env, WRANGLER_SEND_METRICS: "false", NO_UPDATE_NOTIFIER: "1", CI: "true" };

function log(message) {
  console.log(`[dev] ${message}`);
}

/** Development secrets live beside the local state they protect, created once, as a dotenv file. */
function devSecretsFile() {
  mkdirSync(persistTo, { recursive: true });
  const file = join(persistTo, "berth-dev-secrets.env");
  if (!existsSync(file)) {
    writeFileSync(file, `SESSION_KEYRING_SECRET=${randomBytes(32).toString("hex")}\n`, { mode: 0o600 });
  }
  return file;
}

function run(args) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [wranglerBin, ...args], { cwd: root, env: quietEnv, stdio: "inherit" });
    child.on("exit", (code) => (code === 0 ? resolvePromise() : reject(new Error(`wrangler ${args[0]} exited ${code}`))));
  });
}

log(`applying D1 migrations to ${persistTo}`);
await run(["d1", "migrations", "apply", "DB", "--local", "--persist-to", persistTo]);

const wrangler = spawn(
  process.execPath,
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
    devSecretsFile(),
    ...(options.production ? [] : ["--test-scheduled", "--var", "ENVIRONMENT:development"]),
  ],
  { cwd: root, env: quietEnv, stdio: "inherit" },
);
log(`Berth at http://localhost:${options.port}${options.production ? " (production configuration)" : ""}`);

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => wrangler.kill(signal));
}
wrangler.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
