// The real `npm run dev` server (Worker under wrangler dev + local Stripe
// emulator) for the HTTP benchmarks, started in its own process group.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { reservePort } from "../test/ports.ts";
import { root } from "./lib.mjs";

/** A dotenv file as written by scripts/dev.mjs: NAME=value lines. */
export function readDotenv(file) {
  return Object.fromEntries(
    readFileSync(file, "utf8")
      .split("\n")
      .filter((line) => line.includes("="))
      .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
  );
}

/**
 * `scripts/dev.mjs` in its own process group, so wrangler, workerd and the
 * Stripe emulator stop with it. Both ports are reserved here (test/ports.ts) and passed in, so
 * the emulator's address is known without reading the dev server's log.
 * `noAgent` passes --no-agent: no local berth-agent runs beside the Worker;
 * otherwise the local agent and Caddy run, Caddy's HTTPS on `httpsPort` (and
 * its HTTP one above it). `hosts` (2 to 9) passes --hosts: that many local hosts, each its own
 * agent and Caddy (scripts/local-hosts.mjs), `httpsPort` the lowest of hosts + 1 ports in a row.
 * Returns { base, port, stripeUrl, persistTo, noAgent, pgid(), output(), restart(), stop() };
 * pgid() is the running process group's id (it changes with restart()).
 * `persistTo` holds berth-dev-secrets.env (STRIPE_WEBHOOK_SECRET among them)
 * and is removed by stop(). restart() stops the whole process group and starts
 * it again on the same ports and state directory (see there).
 */
export async function startDevServer({ noAgent = false, httpsPort, hosts } = {}) {
  const port = await reservePort();
  const stripePort = await reservePort();
  const persistTo = mkdtempSync(join(tmpdir(), "berth-bench-"));
  const args = ["--port", String(port), "--stripe-port", String(stripePort), "--persist-to", persistTo];
  if (noAgent) args.push("--no-agent");
  else if (httpsPort) args.push("--https-port", String(httpsPort));
  if (hosts) args.push("--hosts", String(hosts));
  // Always the local emulator: with a Stripe key in the environment dev.mjs would use Stripe's test mode.
  const { STRIPE_SECRET_KEY: _key, STRIPE_WEBHOOK_SECRET: _secret, ...env } = process.env;
  const base = `http://127.0.0.1:${port}`;
  const stripeUrl = `http://127.0.0.1:${stripePort}`;

  let output = "";
  const keep = (chunk) => (output = (output + chunk).slice(-8000));
  /** The running process group: { child, exited() }. */
  let current;

  const groupAlive = (child) => {
    try {
      process.kill(-child.pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const killGroup = (child, signal) => {
    try {
      process.kill(-child.pid, signal);
    } catch {}
  };
  const stopGroup = async (child) => {
    killGroup(child, "SIGTERM");
    for (let i = 0; i < 50 && groupAlive(child); i++) await sleep(100);
    killGroup(child, "SIGKILL");
    for (let i = 0; i < 20 && groupAlive(child); i++) await sleep(100);
  };
  // Last resort if the bench dies before stop(): synchronous, as 'exit' handlers must be.
  const onExit = () => {
    if (current) killGroup(current.child, "SIGKILL");
    rmSync(persistTo, { recursive: true, force: true });
  };
  process.on("exit", onExit);

  const answers = (url, init) =>
    fetch(url, { ...init, signal: AbortSignal.timeout(2000) }).then(
      (r) => r.ok,
      () => false,
    );
  /** Starts the process group and waits until the Worker and the emulator answer. */
  const launch = async () => {
    const child = spawn(process.execPath, [join(root, "scripts", "dev.mjs"), ...args], {
      cwd: root,
      env,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    let exited = false;
    child.on("exit", () => (exited = true));
    current = { child };
    const deadline = Date.now() + 90_000;
    for (;;) {
      if (exited) throw new Error("the dev server exited during start-up");
      if (Date.now() > deadline) throw new Error("the dev server did not answer /api/health within 90 s");
      if (await answers(`${base}/api/health`)) break;
      await sleep(250);
    }
    // The emulator starts before wrangler, so it is up by now; make sure it is ours and answering.
    if (!(await answers(`${stripeUrl}/v1/prices`, { headers: { authorization: "Bearer sk_test_x" } }))) {
      throw new Error(`the Stripe emulator does not answer at ${stripeUrl}`);
    }
  };

  let stopped;
  /** `beforeRemove(persistTo)` (optional) runs once the processes are gone, before the state directory is removed. */
  const stop = ({ beforeRemove } = {}) =>
    (stopped ??= (async () => {
      if (current) await stopGroup(current.child);
      current = undefined;
      await beforeRemove?.(persistTo);
      rmSync(persistTo, { recursive: true, force: true });
      process.off("exit", onExit);
    })());

  /**
   * Stops the whole process group (dev.mjs, wrangler, workerd, the emulator)
   * and starts it again with the same arguments: same ports, same state
   * directory. `onDown()` (optional) is called once the old group is gone.
   * Returns { downMs, upMs }: time to stop, then time until the Worker answers
   * /api/health again.
   */
  const restart = async ({ onDown } = {}) => {
    if (stopped) throw new Error("restart() after stop()");
    const t0 = performance.now();
    await stopGroup(current.child);
    const down = performance.now();
    onDown?.();
    try {
      await launch();
    } catch (error) {
      await stop();
      error.message += `\n--- dev server output (tail) ---\n${output}`;
      throw error;
    }
    return { downMs: down - t0, upMs: performance.now() - down };
  };

  try {
    await launch();
  } catch (error) {
    await stop();
    error.message += `\n--- dev server output (tail) ---\n${output}`;
    throw error;
  }
  return { base, port, stripeUrl, persistTo, noAgent, pgid: () => current?.child.pid, output: () => output, restart, stop };
}
