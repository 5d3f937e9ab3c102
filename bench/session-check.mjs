// Throughput of an authenticated GET /api/me (cookie → D1 batch → HMAC verify)
// against the trivial GET /api/health, on the real `npm run dev` server.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { Agent, request } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { percentile, root } from "./lib.mjs";

const SESSION_COOKIE = "__Host-berth_session";

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

/** `scripts/dev.mjs` in its own process group, so wrangler and workerd stop with it. */
async function startDevServer() {
  const port = await freePort();
  const persistTo = mkdtempSync(join(tmpdir(), "berth-bench-"));
  const child = spawn(process.execPath, [join(root, "scripts", "dev.mjs"), "--port", String(port), "--persist-to", persistTo], {
    cwd: root,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const keep = (chunk) => (output = (output + chunk).slice(-8000));
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  let exited = false;
  child.on("exit", () => (exited = true));

  const groupAlive = () => {
    try {
      process.kill(-child.pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const killGroup = (signal) => {
    try {
      process.kill(-child.pid, signal);
    } catch {}
  };
  // Last resort if the bench dies before stop(): synchronous, as 'exit' handlers must be.
  const onExit = () => {
    killGroup("SIGKILL");
    rmSync(persistTo, { recursive: true, force: true });
  };
  process.on("exit", onExit);

  const stop = async () => {
    killGroup("SIGTERM");
    for (let i = 0; i < 50 && groupAlive(); i++) await sleep(100);
    killGroup("SIGKILL");
    for (let i = 0; i < 20 && groupAlive(); i++) await sleep(100);
    rmSync(persistTo, { recursive: true, force: true });
    process.off("exit", onExit);
  };

  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  try {
    for (;;) {
      if (exited) throw new Error("the dev server exited during start-up");
      if (Date.now() > deadline) throw new Error("the dev server did not answer /api/health within 90 s");
      const ok = await fetch(`${base}/api/health`, { signal: AbortSignal.timeout(2000) }).then((r) => r.ok, () => false);
      if (ok) break;
      await sleep(250);
    }
  } catch (error) {
    await stop();
    error.message += `\n--- dev server output (tail) ---\n${output}`;
    throw error;
  }
  return { base, stop };
}

/** Signs up and logs in a fresh account; returns its session cookie header. */
async function logIn(base) {
  const credentials = JSON.stringify({ email: `bench-${Date.now()}@example.com`, password: "bench password 12345" });
  const post = (path) => fetch(`${base}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: credentials });
  const signup = await post("/api/auth/signup");
  if (signup.status !== 202) throw new Error(`signup answered ${signup.status}: ${await signup.text()}`);
  const login = await post("/api/auth/login");
  if (login.status !== 200) throw new Error(`login answered ${login.status}: ${await login.text()}`);
  const cookie = login.headers.getSetCookie().find((c) => c.startsWith(`${SESSION_COOKIE}=`));
  if (!cookie) throw new Error("login set no session cookie");
  const header = cookie.split(";")[0];
  const me = await fetch(`${base}/api/me`, { headers: { cookie: header } });
  if (me.status !== 200) throw new Error(`/api/me with the new session answered ${me.status}: ${await me.text()}`);
  return header;
}

function get(agent, url, headers) {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, headers, timeout: 10_000 }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`${url} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

/** `requests` GETs with `concurrency` in flight over keep-alive connections; every one must be a 200. */
async function load(url, headers, { requests, concurrency }) {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const latencies = [];
  let issued = 0;
  const start = performance.now();
  const client = async () => {
    while (issued < requests) {
      issued++;
      const t0 = performance.now();
      const status = await get(agent, url, headers);
      latencies.push(performance.now() - t0);
      if (status !== 200) throw new Error(`${url} answered ${status}`);
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, client));
  } finally {
    agent.destroy();
  }
  return { ms: performance.now() - start, latencies };
}

function summarize(runs) {
  const latencies = runs.flatMap((run) => run.latencies).sort((a, b) => a - b);
  const ms = runs.reduce((sum, run) => sum + run.ms, 0);
  return {
    requests: latencies.length,
    reqPerSec: (latencies.length / ms) * 1000,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}

/**
 * `rounds` alternating batches per route (health, me, me, health, ...), so drift in
 * the machine's speed lands on both routes alike.
 */
export async function benchSessionCheck({ requests = 2000, warmup = 100, concurrency = 8, rounds = 4 } = {}) {
  const server = await startDevServer();
  try {
    const cookie = await logIn(server.base);
    const routes = {
      health: { url: `${server.base}/api/health`, headers: {} },
      me: { url: `${server.base}/api/me`, headers: { cookie } },
    };
    for (const route of Object.values(routes)) await load(route.url, route.headers, { requests: warmup, concurrency });
    const runs = { health: [], me: [] };
    const perRound = Math.ceil(requests / rounds);
    for (let i = 0; i < rounds; i++) {
      for (const name of i % 2 === 0 ? ["health", "me"] : ["me", "health"]) {
        runs[name].push(await load(routes[name].url, routes[name].headers, { requests: perRound, concurrency }));
      }
    }
    const health = summarize(runs.health);
    const me = summarize(runs.me);
    const rate = (run) => run.latencies.length / run.ms;
    return {
      concurrency,
      rounds,
      warmup,
      health,
      me,
      ratios: {
        meOverHealthThroughput: me.reqPerSec / health.reqPerSec,
        meOverHealthThroughputByRound: runs.me.map((run, i) => rate(run) / rate(runs.health[i])),
        meOverHealthP50: me.p50Ms / health.p50Ms,
      },
    };
  } finally {
    await server.stop();
  }
}
