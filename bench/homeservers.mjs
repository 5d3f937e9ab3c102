// Homeservers on this machine, the product way: `npm run dev` with its local
// agent and Caddy. For each of `count` paying customers, the time from
// POST /api/servers to /_matrix/client/versions answering over HTTPS (trusting
// only Caddy's local CA). The baseline, in the same run: the same two images
// started by hand with `docker run` and Synapse's own generated configuration
// (its defaults; PostgreSQL with its defaults), from the first `docker run` to
// /_matrix/client/versions over plain HTTP. Then everything idles, and the
// memory of each pair (Synapse + PostgreSQL, as `docker stats` counts it:
// without the page cache) is sampled: ours, tuned, against Synapse's defaults.
//
// Needs Docker Engine, Caddy and the images (bash images/build.sh); run as root.
import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { lookup as dnsLookup } from "node:dns";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { gzipSync } from "node:zlib";
import { setTimeout as sleep } from "node:timers/promises";
import { Agent, fetch as undiciFetch } from "undici";
import { destroyDevHomeservers } from "../scripts/dev-reset.mjs";
import { call, postJson, subscribedCustomer } from "./customer.mjs";
import { reservePortPair } from "../test/ports.ts";
import { planById } from "../worker/billing/plans.ts";
import { admittedCount } from "../worker/servers/admission.ts";
import { startDevServer } from "./dev-server.mjs";
import { percentile, until } from "./lib.mjs";

const SYNAPSE_IMAGE = process.env.SYNAPSE_IMAGE ?? "berth/synapse:latest";
const POSTGRES_IMAGE = process.env.POSTGRES_IMAGE ?? "berth/postgres:15";
/** The starter plan's split (agent/homeserver/containers.ts): PostgreSQL a quarter, Synapse the rest. */
const POSTGRES_MEMORY = "256m";
const SYNAPSE_MEMORY = "768m";

export function docker(args, { timeoutMs = 120_000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile("docker", args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`docker ${args.slice(0, 3).join(" ")}…: ${stderr || error.message}`));
      else resolve(stdout.trim());
    });
  });
}

/** HTTPS to *.berth.localhost through Caddy on this machine, trusting only its local CA. */
function caddyFetch(caPem) {
  const lookup = (hostname, options, callback) => {
    if (!hostname.endsWith(".berth.localhost")) return dnsLookup(hostname, options, callback);
    if (options.all) callback(null, [{ address: "127.0.0.1", family: 4 }]);
    else callback(null, "127.0.0.1", 4);
  };
  const dispatcher = new Agent({ connect: { ca: caPem, lookup, rejectUnauthorized: true } });
  return { fetch: (url) => undiciFetch(url, { dispatcher, signal: AbortSignal.timeout(5_000) }), close: () => dispatcher.close() };
}

const answersVersions = async (fetchFn, url) => {
  const response = await fetchFn(url);
  return response.status === 200 && Array.isArray((await response.json()).versions);
};

// ---------- the baseline: Synapse's defaults, started by hand ----------

/**
 * PostgreSQL and Synapse from the same images with the same memory limits and
 * networks, but Synapse's own `--generate-config` output (only the listener's
 * address and the database changed: PostgreSQL instead of SQLite) and
 * PostgreSQL without our settings. Returns { startMs, containers, remove() }.
 */
export async function startDefaultsPair() {
  const id = `berth-bench-defaults-${process.pid}`;
  const uid = 390_000 + (process.pid % 9_000);
  const dir = mkdtempSync(join(tmpdir(), "berth-bench-defaults-"));
  const containers = { postgres: `${id}-postgres`, synapse: `${id}-synapse` };
  const networks = [`${id}-db`, `${id}-hs`];
  const remove = async () => {
    for (const name of Object.values(containers)) await docker(["rm", "-f", "-v", name]).catch(() => undefined);
    for (const name of networks) await docker(["network", "rm", name]).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const sub of ["postgres", "synapse"]) {
      mkdirSync(join(dir, sub), { mode: 0o700 });
      chownSync(join(dir, sub), uid, uid);
    }
    const password = `defaults-${process.pid}-${Date.now()}`;
    const serverName = "defaults.bench.localhost";
    const t0 = performance.now();
    await docker(["network", "create", "--internal", networks[0]]);
    await docker(["network", "create", networks[1]]);
    await docker([
      "run",
      "-d",
      "--name",
      containers.postgres,
      "--user",
      `${uid}:${uid}`,
      "--memory",
      POSTGRES_MEMORY,
      "--network",
      networks[0],
      "-v",
      `${join(dir, "postgres")}:/var/lib/postgresql/data`,
      "-e",
      "POSTGRES_USER=synapse",
      "-e",
      "POSTGRES_DB=synapse",
      "-e",
      `POSTGRES_PASSWORD=${password}`,
      "-e",
      "POSTGRES_INITDB_ARGS=--encoding=UTF8 --locale=C",
      POSTGRES_IMAGE,
    ]);
    await docker([
      "run",
      "--rm",
      "--user",
      `${uid}:${uid}`,
      "--network",
      "none",
      "-v",
      `${join(dir, "synapse")}:/data`,
      SYNAPSE_IMAGE,
      "--server-name",
      serverName,
      "--config-path",
      "/data/homeserver.yaml",
      "--generate-config",
      "--report-stats=no",
      "--data-directory",
      "/data",
    ]);
    const configPath = join(dir, "synapse", "homeserver.yaml");
    const generated = readFileSync(configPath, "utf8");
    const database = [
      "database:",
      "  name: psycopg2",
      "  args:",
      "    user: synapse",
      `    password: "${password}"`,
      "    dbname: synapse",
      `    host: ${containers.postgres}`,
      "",
    ].join("\n");
    const config = generated.replace(/bind_addresses:\n(?:\s+- .*\n)+/, "bind_addresses: ['0.0.0.0']\n").replace(/^database:\n(?:[ ].*\n)+/m, database);
    if (!config.includes("name: psycopg2") || !config.includes("'0.0.0.0'")) throw new Error("Synapse's generated config has an unexpected shape");
    writeFileSync(configPath, config);
    await docker([
      "create",
      "--name",
      containers.synapse,
      "--user",
      `${uid}:${uid}`,
      "--memory",
      SYNAPSE_MEMORY,
      "--network",
      networks[1],
      "-p",
      "127.0.0.1::8008",
      "-v",
      `${join(dir, "synapse")}:/data`,
      SYNAPSE_IMAGE,
    ]);
    await docker(["network", "connect", networks[0], containers.synapse]);
    // Ready as soon as it accepts TCP connections (the first start's temporary server does not listen on TCP).
    const ready = ["exec", containers.postgres, "pg_isready", "--host=127.0.0.1", "--port=5432", "--username=synapse", "--dbname=synapse", "--quiet"];
    await until("PostgreSQL (defaults) to accept connections", () => docker(ready).then(() => true), { intervalMs: 250 });
    await docker(["start", containers.synapse]);
    const port = (await docker(["port", containers.synapse, "8008/tcp"])).split("\n")[0].split(":").pop();
    const url = `http://127.0.0.1:${port}/_matrix/client/versions`;
    await until("Synapse (defaults) to answer /_matrix/client/versions", () => answersVersions((u) => fetch(u, { signal: AbortSignal.timeout(5_000) }), url));
    return { startMs: performance.now() - t0, containers, remove };
  } catch (error) {
    const logs = await docker(["logs", "--tail", "30", containers.synapse]).catch(() => "");
    await remove();
    error.message += logs ? `\n--- Synapse (defaults) log ---\n${logs}` : "";
    throw error;
  }
}

// ---------- memory ----------

const UNITS = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, kB: 1000, MB: 1000 ** 2, GB: 1000 ** 3 };

/** `docker stats` memory use (the cgroup's, less inactive page cache) of every running container, MiB by name. */
export async function memoryByContainer() {
  const lines = (await docker(["stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}"])).split("\n");
  const usage = new Map();
  for (const line of lines) {
    const match = /^(\S+) ([\d.]+)([A-Za-z]+) \//.exec(line);
    if (match && UNITS[match[3]]) usage.set(match[1], (Number(match[2]) * UNITS[match[3]]) / 1024 ** 2);
  }
  return usage;
}

export const median = (values) =>
  percentile(
    [...values].sort((a, b) => a - b),
    50,
  );

// ---------- the dashboard's pages ----------

/** Time to the response's headers and its body's size, over a fresh connection each time (as a first visit). */
async function timedGet(url, cookie) {
  const t0 = performance.now();
  const response = await fetch(url, { headers: { cookie, accept: "text/html" }, signal: AbortSignal.timeout(15_000) });
  const ttfbMs = performance.now() - t0;
  const body = Buffer.from(await response.arrayBuffer());
  if (response.status !== 200) throw new Error(`GET ${url} answered ${response.status}`);
  return { ttfbMs, totalMs: performance.now() - t0, bytes: body.length, body };
}

/**
 * The dashboard (/servers) and a server page (/servers/:id, with its usage
 * charts and backups) as the customer loads them: time to first byte and to
 * the last, against GET /api/health in the same rounds; transfer (HTML, the
 * stylesheet and scripts it links, gzipped as they would travel) and the
 * JavaScript bytes against the 100 KB (gzipped) budget.
 */
async function benchPages(base, cookie, serverId, rounds = 20) {
  const paths = { dashboard: "/servers", server: `/servers/${serverId}`, baseline: "/api/health" };
  const samples = Object.fromEntries(Object.keys(paths).map((k) => [k, []]));
  for (let i = 0; i < rounds; i++) {
    for (const [key, path] of Object.entries(paths)) samples[key].push(await timedGet(`${base}${path}`, cookie));
  }
  const result = {};
  for (const [key, runs] of Object.entries(samples)) {
    const html = runs[0].body.toString("utf8");
    const assets = [...html.matchAll(/<(?:script[^>]*\ssrc|link[^>]*\shref)="(\/[^"]+)"/g)].map((m) => m[1]);
    let jsGzip = 0;
    let assetGzip = 0;
    for (const asset of new Set(assets)) {
      const { body } = await timedGet(`${base}${asset}`, cookie);
      const gz = gzipSync(body).length;
      assetGzip += gz;
      if (asset.endsWith(".js")) jsGzip += gz;
    }
    result[key] = {
      ttfbMedianMs: median(runs.map((r) => r.ttfbMs)),
      totalMedianMs: median(runs.map((r) => r.totalMs)),
      htmlBytes: runs[0].bytes,
      transferGzipBytes: gzipSync(runs[0].body).length + assetGzip,
      jsGzipBytes: jsGzip,
    };
  }
  return { rounds, ...result };
}

// ---------- the benchmark ----------

export async function benchHomeservers({ count = 5, idleSeconds = 60, samples = 6, sampleEveryS = 5 } = {}) {
  const defaults = await startDefaultsPair();
  let server;
  const pairs = [];
  try {
    server = await startDevServer({ httpsPort: await reservePortPair() });
    const caPath = join(server.persistTo, "caddy", "pki", "authorities", "local", "root.crt");
    let https;
    const creations = [];
    let owner;
    for (let i = 0; i < count; i++) {
      const { cookie } = await subscribedCustomer(server.base, server.stripeUrl, `hs${i}`);
      const name = `bench-${process.pid}-${i}`;
      // The local agent comes online a few seconds after the Worker: until then no host has room.
      let t0;
      const created = await until(
        "the local agent's host to take a server",
        async () => {
          t0 = performance.now();
          const response = await fetch(`${server.base}/api/servers`, postJson({ name, region: "us-east" }, { cookie }));
          if (response.status === 201) return response.json();
          const body = await response.text();
          if (response.status === 409 && body.includes("no_capacity")) return undefined;
          throw Object.assign(new Error(`POST /api/servers answered ${response.status}: ${body}`), { fatal: true });
        },
        { timeoutMs: 60_000, intervalMs: 500 },
      );
      // Caddy writes the file in place: read until it holds the whole certificate.
      const wholeRoot = () => {
        const pem = readFileSync(caPath, "utf8");
        new X509Certificate(pem);
        return pem;
      };
      https ??= caddyFetch(await until("Caddy's local CA", wholeRoot, { timeoutMs: 60_000 }));
      const url = `${created.homeserverUrl}/_matrix/client/versions`;
      await until(`${name} to answer over HTTPS`, async () => {
        const view = await call(`${server.base}/api/servers/${created.id}`, { headers: { cookie } });
        if (view.status === "failed") throw Object.assign(new Error(`${name} failed: ${view.statusReason}`), { fatal: true });
        return answersVersions(https.fetch, url);
      });
      creations.push(performance.now() - t0);
      pairs.push(created.id.replaceAll("-", "").slice(0, 12));
      owner = { cookie, serverId: created.id };
    }
    await https?.close();
    const pages = await benchPages(server.base, owner.cookie, owner.serverId);

    await sleep(idleSeconds * 1000);
    const ours = [];
    const theirs = [];
    for (let s = 0; s < samples; s++) {
      const usage = await memoryByContainer();
      const pair = (postgres, synapse) => (usage.get(postgres) ?? NaN) + (usage.get(synapse) ?? NaN);
      for (const short of pairs)
        ours.push({
          postgres: usage.get(`berth-${short}-postgres`),
          synapse: usage.get(`berth-${short}-synapse`),
          total: pair(`berth-${short}-postgres`, `berth-${short}-synapse`),
        });
      theirs.push({
        postgres: usage.get(defaults.containers.postgres),
        synapse: usage.get(defaults.containers.synapse),
        total: pair(defaults.containers.postgres, defaults.containers.synapse),
      });
      if (s < samples - 1) await sleep(sampleEveryS * 1000);
    }
    if ([...ours, ...theirs].some((m) => !Number.isFinite(m.total))) throw new Error("docker stats did not report every container");

    const tuned = {
      postgresMiB: median(ours.map((m) => m.postgres)),
      synapseMiB: median(ours.map((m) => m.synapse)),
      pairMiB: median(ours.map((m) => m.total)),
    };
    const synapseDefaults = {
      postgresMiB: median(theirs.map((m) => m.postgres)),
      synapseMiB: median(theirs.map((m) => m.synapse)),
      pairMiB: median(theirs.map((m) => m.total)),
    };
    const eightGiB = 8 * 1024;
    return {
      count,
      idleSeconds,
      samples,
      creation: { samplesMs: creations, medianMs: median(creations), minMs: Math.min(...creations), maxMs: Math.max(...creations) },
      defaultsStartMs: defaults.startMs,
      pages,
      memory: { tuned, defaults: synapseDefaults },
      fitIn8GiB: {
        byIdleMemoryTuned: Math.floor(eightGiB / tuned.pairMiB),
        byIdleMemoryDefaults: Math.floor(eightGiB / synapseDefaults.pairMiB),
        // What placement admits of Starters that each measure our idle pair.
        admittedStarters: admittedCount(eightGiB, tuned.pairMiB, planById("starter")),
      },
      ratios: {
        creationOverDefaultsStart: median(creations) / defaults.startMs,
        idleMemoryTunedOverDefaults: tuned.pairMiB / synapseDefaults.pairMiB,
      },
    };
  } finally {
    await server?.stop({ beforeRemove: (persistTo) => destroyDevHomeservers(persistTo) });
    await defaults.remove();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(await benchHomeservers(), null, 2));
}
