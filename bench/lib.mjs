// Small helpers shared by the benchmarks.
import { readFileSync } from "node:fs";
import { Agent, request } from "node:http";
import os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

export const root = fileURLToPath(new URL("..", import.meta.url));

/** The Node flags the agent's package starts it with (the shebang of its bundle, agent/package.json's build), for a process that runs the agent's code as the agent does. */
export function agentNodeFlags() {
  const { scripts } = JSON.parse(readFileSync(join(root, "agent", "package.json"), "utf8"));
  const shebang = /--banner:js='#!\/usr\/bin\/env -S node ([^']*)'/.exec(scripts.build);
  if (!shebang) throw new Error("agent/package.json's build no longer starts the bundle with `#!/usr/bin/env -S node <flags>`");
  return shebang[1].split(" ");
}

function installedVersion(name) {
  return JSON.parse(readFileSync(join(root, "node_modules", name, "package.json"), "utf8")).version;
}

export function machineInfo() {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model.trim() ?? "unknown",
    cores: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    wrangler: installedVersion("wrangler"),
    workerd: installedVersion("workerd"),
    miniflare: installedVersion("miniflare"),
  };
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export const round = (value, digits = 2) => Math.round(value * 10 ** digits) / 10 ** digits;

/** A plain text table: first column left-aligned, the rest right-aligned. */
export function table(headers, rows) {
  const cells = [headers, ...rows].map((row) => headers.map((_, i) => String(row[i] ?? "")));
  const widths = headers.map((_, i) => Math.max(...cells.map((row) => row[i].length)));
  const line = (row) => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join("  ");
  return [line(cells[0]), widths.map((w) => "-".repeat(w)).join("  "), ...cells.slice(1).map(line)].join("\n");
}

/** One HTTP request over `agent`; resolves { status, body } (body as text only when `wantBody`). */
export function send(agent, url, method, headers, body, wantBody) {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, method, headers, timeout: 10_000 }, (res) => {
      const chunks = [];
      if (wantBody) res.on("data", (chunk) => chunks.push(chunk));
      else res.resume();
      res.on("end", () => resolve({ status: res.statusCode, body: wantBody ? Buffer.concat(chunks).toString("utf8") : undefined }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${url} timed out`)));
    req.on("error", reject);
    req.end(body);
  });
}

/**
 * `requests` HTTP requests with `concurrency` in flight over keep-alive connections.
 * `body(i)` (optional) gives request i's body: a string or Buffer, or
 * `{ body, headers }` when the request also needs headers of its own (a
 * signature over that body, say); it is called before a request's clock starts.
 * Without `check`, every answer must be a 200 and its body is not read; with it,
 * `check({ status, body }, i)` gets the body as text and throws to fail the run.
 * Returns { ms, latencies } (wall time of the whole run, ms per request).
 */
export async function load(url, { method = "GET", headers = {}, body, check, requests, concurrency }) {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const latencies = [];
  let issued = 0;
  let failed = false;
  const start = performance.now();
  const client = async () => {
    while (issued < requests && !failed) {
      const i = issued++;
      let requestHeaders = headers;
      let payload = body?.(i);
      if (payload !== undefined && typeof payload !== "string" && !Buffer.isBuffer(payload)) {
        requestHeaders = { ...headers, ...payload.headers };
        payload = payload.body;
      }
      const t0 = performance.now();
      try {
        const answer = await send(agent, url, method, requestHeaders, payload, Boolean(check));
        latencies.push(performance.now() - t0);
        if (check) check(answer, i);
        else if (answer.status !== 200) throw new Error(`${method} ${url} answered ${answer.status}`);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, client));
  } finally {
    agent.destroy();
  }
  return { ms: performance.now() - start, latencies };
}

/** Requests, req/s, p50, p99 and mean over one or more load() runs. */
export function summarize(runs) {
  const latencies = runs.flatMap((run) => run.latencies).sort((a, b) => a - b);
  const ms = runs.reduce((sum, run) => sum + run.ms, 0);
  return {
    requests: latencies.length,
    reqPerSec: (latencies.length / ms) * 1000,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    meanMs: latencies.reduce((sum, value) => sum + value, 0) / latencies.length,
  };
}

/** Requests per ms of one load() run. */
export const rate = (run) => run.latencies.length / run.ms;

/** Polls `check` (truthy = done) every `intervalMs` until `timeoutMs`; an error with `fatal` set ends it at once. */
export async function until(what, check, { timeoutMs = 300_000, intervalMs = 200 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      if (error.fatal) throw error;
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await sleep(intervalMs);
  }
}

/** An error that ends until() at once. */
export const fatal = (message) => Object.assign(new Error(message), { fatal: true });
