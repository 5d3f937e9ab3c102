// Starts the product the way `npm run dev` does (scripts/dev.mjs), twice: once
// with development settings and once with `--production` (wrangler.toml as
// deployed). Each instance gets a port of its own (test/ports.ts) and a fresh persist dir in
// the OS temp dir; output goes to a log file there. Neither runs a local agent (--no-agent):
// the tests that need one start their own, and another agent with its Caddy on dev.mjs's
// fixed HTTPS port would only be one more part whose failure stops the instance. Teardown
// says if an instance stopped during the run (with its log), kills both process groups
// and removes the temp dirs.
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";
import { reservePort } from "../ports.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const devScript = fileURLToPath(new URL("../../scripts/dev.mjs", import.meta.url));
const STARTUP_TIMEOUT_MS = 120_000;

interface Instance {
  name: string;
  baseUrl: string;
  child: ChildProcess;
  dir: string;
  logFile: string;
}

function logTail(file: string, lines = 60): string {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

async function start(name: string, production: boolean): Promise<Instance> {
  const port = await reservePort();
  const dir = mkdtempSync(join(tmpdir(), `berth-e2e-${name}-`));
  const logFile = join(dir, "dev.log");
  const fd = openSync(logFile, "a");
  const args = [devScript, "--port", String(port), "--stripe-port", "0", "--persist-to", join(dir, "state")];
  args.push(production ? "--production" : "--no-agent");
  const child = spawn(process.execPath, args, {
    cwd: root,
    detached: true,
    stdio: ["ignore", fd, fd],
    env: { ...process.env, FORCE_COLOR: "0" },
  });
  closeSync(fd);
  return { name, baseUrl: `http://localhost:${port}`, child, dir, logFile };
}

async function waitHealthy(instance: Instance): Promise<void> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  const { child } = instance;
  let exited: string | null = child.exitCode !== null || child.signalCode !== null ? `exited with ${child.exitCode ?? child.signalCode}` : null;
  child.once("exit", (code, signal) => (exited = `exited with ${code ?? signal}`));
  let lastError = "";
  while (Date.now() < deadline) {
    if (exited) break;
    try {
      const response = await fetch(`${instance.baseUrl}/api/health`, { signal: AbortSignal.timeout(5_000) });
      if (response.status === 200) return;
      lastError = `status ${response.status}`;
    } catch (error) {
      lastError = String(error);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new Error(
    `${instance.name} instance (${instance.baseUrl}) did not become healthy: ${exited ?? `timed out (${lastError})`}\n` +
      `--- tail of ${instance.logFile} ---\n${logTail(instance.logFile)}`,
  );
}

/** The tests against an instance that stopped during the run failed to connect: this says why. */
function reportIfStopped(instance: Instance): void {
  const { child } = instance;
  if (child.exitCode === null && child.signalCode === null) return;
  console.error(
    `[e2e] the ${instance.name} instance (${instance.baseUrl}) stopped during the run (${child.exitCode ?? child.signalCode})\n` +
      `--- tail of ${instance.logFile} ---\n${logTail(instance.logFile)}`,
  );
}

async function stop(instance: Instance): Promise<void> {
  const { child } = instance;
  const pid = child.pid;
  const killGroup = (signal: NodeJS.Signals) => {
    try {
      if (pid !== undefined) process.kill(-pid, signal);
    } catch {
      // the group is already gone
    }
  };
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<boolean>((resolve) => child.once("exit", () => resolve(true)));
    killGroup("SIGTERM");
    const clean = await Promise.race([exited, new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 10_000))]);
    if (!clean) console.warn(`[e2e] ${instance.name} instance ignored SIGTERM; killing its process group`);
  }
  // Whatever is left of the group (workerd, esbuild) must not outlive the run.
  killGroup("SIGKILL");
  rmSync(instance.dir, { recursive: true, force: true });
}

export default async function setup(project: TestProject) {
  const instances: Instance[] = [];
  const teardown = async () => {
    await Promise.all(instances.map(stop));
  };
  try {
    instances.push(await start("dev", false), await start("production", true));
    await Promise.all(instances.map(waitHealthy));
  } catch (error) {
    await teardown();
    throw error;
  }
  project.provide("devBaseUrl", instances[0]!.baseUrl);
  project.provide("prodBaseUrl", instances[1]!.baseUrl);
  return async () => {
    instances.forEach(reportIfStopped);
    await teardown();
  };
}
