// The fleet on the real `npm run dev` server, started with --no-agent:
//
//  1. Simulated agents, all in this process: each is its own enrolled host (its
//     own join token from the development-only POST /dev/join-token, its own
//     Ed25519 key from node:crypto, so its own Durable Object) with its own
//     WebSocket speaking the real protocol from protocol/messages.ts: it answers
//     the challenge with a signed hello, waits for the welcome, sends "ping"
//     every heartbeat interval, acks every job at once and reports
//     job.result {ok:true}, and redials like berth-agent (full-jitter
//     exponential backoff, 1 s base, 60 s cap; the cap itself after 4001/4003).
//     The enroll route limits enrollments per client IP (enroll_ip, 30/hour);
//     wrangler dev passes a client-supplied cf-connecting-ip through to the
//     Worker, so each enrollment sends its own address from 198.18.0.0/15 (the
//     benchmarking range). The fleet grows to each size in turn (1, 100, 1,000).
//  2. Job dispatch at each size: POST /api/admin/hosts/:id/jobs {"kind":"noop"}
//     (operator session) spread over the connected hosts, timed in this process
//     from sending the POST to the simulated agent having the `job` message and
//     its ack sent; against the same transport without our bookkeeping: the
//     development-only POST /dev/hosts/:id/echo, which asks the host's Durable
//     Object to send one `echo` message over the agent's WebSocket (no D1) and
//     answers once the agent's echo.reply arrives. The baseline is timed to the
//     same point as the job (the POST sent → the simulated agent has the echo
//     and its reply sent); its whole round trip (→ the 200) is reported beside
//     it. Same hosts, same concurrency, rounds alternating.
//     Then, with the largest fleet connected and idle, the dev server's CPU
//     (heartbeats, and each host's Durable Object waking for its 30 s watch alarm).
//  3. Reconnect storm: with the whole fleet connected, the dev server's process
//     group is stopped and started again (same port, same state directory); the
//     time until every agent is welcomed again, overall and per agent.
//  4. The real berth-agent (`node agent/main.ts run`), enrolled against the same
//     server: its RSS and CPU time from /proc while it idles, connected (and the
//     dev server's CPU meanwhile, with that one host connected). This runs
//     first, before any simulated host exists.
//
// Only functional failures throw (a job never delivered, an agent never
// welcomed within a generous bound); timings are reported, never asserted.
import { spawn, spawnSync } from "node:child_process";
import { generateKeyPairSync, sign } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { Agent } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import WebSocket from "ws";
import { CLOSE, helloSigningInput, PING, PONG, PROTOCOL_VERSION, serverMessage } from "../protocol/messages.ts";
import { operatorSession } from "./customer.mjs";
import { percentile, root, send } from "./lib.mjs";

/** berth-agent's defaults (agent/config.ts): heartbeat until the welcome names one, and the redial backoff. */
const HEARTBEAT_MS = 20_000;
const RECONNECT_BASE_MS = 1_000;
const RECONNECT_MAX_MS = 15_000;
/** Generous bounds for functional failures, not timings. */
const JOB_DELIVERY_BOUND_MS = 30_000;
const WELCOME_BOUND_MS = 120_000;
const STORM_BOUND_MS = 180_000;

const stats = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    count: sorted.length,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    maxMs: sorted.at(-1) ?? NaN,
    meanMs: sorted.reduce((sum, value) => sum + value, 0) / sorted.length,
  };
};

/** `count` tasks, `concurrency` at a time; the first failure stops handing out more and is thrown. */
async function pool(count, concurrency, task) {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < count && !failed) {
      const i = next++;
      try {
        await task(i);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

/** Polls `done()` until it holds; throws `what` after `boundMs`, or the fleet's protocol failure at once. */
async function until(done, boundMs, what, fleet) {
  const deadline = performance.now() + boundMs;
  while (!done()) {
    if (fleet?.fatal) throw fleet.fatal;
    if (performance.now() > deadline) throw new Error(typeof what === "function" ? what() : what);
    await sleep(20);
  }
}

// ---------- HTTP ----------

function client(base) {
  const agent = new Agent({ keepAlive: true, maxSockets: 32 });
  const call = async (method, path, { body, headers = {}, expect }) => {
    const payload = body === undefined ? "" : JSON.stringify(body);
    const answer = await send(agent, `${base}${path}`, method, { "content-type": "application/json", ...headers }, payload, true);
    if (answer.status !== expect) throw new Error(`${method} ${path} answered ${answer.status}, not ${expect}: ${answer.body.slice(0, 500)}`);
    return answer.body ? JSON.parse(answer.body) : null;
  };
  return { call, destroy: () => agent.destroy() };
}

// ---------- simulated agents ----------

/**
 * One simulated host: what berth-agent's AgentConnection does on the wire,
 * without journal, handlers or usage reports. Times are performance.now().
 */
class SimAgent {
  constructor(host, fleet) {
    this.host = host;
    this.fleet = fleet;
    this.state = "idle";
    this.attempt = 0;
    this.generation = 0;
    this.dials = 0;
    this.welcomes = 0;
    this.welcomedAt = NaN;
    this.disconnectedAt = NaN;
    this.pings = [];
    this.heartbeatMs = HEARTBEAT_MS;
  }

  start() {
    this.startedAt = performance.now();
    this.connect();
  }

  connect() {
    if (this.state === "stopped") return;
    const generation = ++this.generation;
    const current = () => generation === this.generation;
    this.state = "connecting";
    this.helloSent = false;
    this.closeReason = "";
    this.heartbeatMs = HEARTBEAT_MS;
    this.dials++;
    const ws = new WebSocket(this.host.connectUrl, {
      perMessageDeflate: false,
      handshakeTimeout: 30_000,
      headers: { "user-agent": "berth-bench-simulated-agent" },
    });
    this.ws = ws;
    ws.on("open", () => {
      if (!current()) return;
      this.state = "handshake";
      this.openedAt = this.lastHeard = performance.now();
      this.startHeartbeat();
      // berth-agent waits 3 heartbeat intervals for the welcome, then redials.
      this.authTimer = setTimeout(() => {
        if (!current() || this.state === "ready") return;
        this.closeReason = "handshake timeout";
        ws.terminate();
      }, 3 * HEARTBEAT_MS);
    });
    ws.on("message", (data, isBinary) => {
      if (!current()) return;
      this.lastHeard = performance.now();
      if (isBinary) return this.fleet.fail(`${this.host.name}: binary frame from the control plane`);
      this.onText(ws, data.toString("utf8"));
    });
    ws.on("error", (error) => {
      if (current()) this.closeReason = error.message;
    });
    ws.on("close", (code, reason) => {
      if (current()) this.onClose(code, reason.toString("utf8") || this.closeReason);
    });
  }

  onText(ws, text) {
    if (text === PONG) {
      const waiter = this.pings.shift();
      waiter?.resolve(performance.now() - waiter.t0);
      return;
    }
    if (text === PING) {
      ws.send(PONG);
      return;
    }
    let raw;
    try {
      raw = JSON.parse(text);
    } catch {
      return this.fleet.fail(`${this.host.name}: a message from the control plane is not JSON: ${text.slice(0, 200)}`);
    }
    const parsed = serverMessage.safeParse(raw);
    if (!parsed.success) return this.fleet.fail(`${this.host.name}: invalid message from the control plane: ${text.slice(0, 200)}`);
    const message = parsed.data;
    switch (message.type) {
      case "challenge": {
        if (this.state !== "handshake" || this.helloSent) return this.fleet.fail(`${this.host.name}: unexpected challenge`);
        const signature = sign(null, Buffer.from(helloSigningInput(this.host.hostId, message.nonce), "utf8"), this.host.privateKey);
        this.helloSent = true;
        ws.send(
          JSON.stringify({
            type: "hello",
            protocols: [PROTOCOL_VERSION],
            hostId: this.host.hostId,
            nonce: message.nonce,
            signature: signature.toString("base64url"),
            agentVersion: "bench-simulated",
            diskEncryption: { dataRoot: "/var/lib/berth", encrypted: true, devices: ["dm-0 (crypt)", "vda2"], allowUnencrypted: false },
            workloads: [],
          }),
        );
        return;
      }
      case "welcome": {
        if (this.state !== "handshake" || !this.helloSent) return this.fleet.fail(`${this.host.name}: unexpected welcome`);
        if (message.hostId !== this.host.hostId) return this.fleet.fail(`${this.host.name}: welcomed as another host (${message.hostId})`);
        clearTimeout(this.authTimer);
        this.attempt = 0;
        this.state = "ready";
        this.welcomes++;
        this.welcomedAt = performance.now();
        const heartbeat = Math.min(HEARTBEAT_MS, message.heartbeatIntervalMs);
        if (heartbeat !== this.heartbeatMs) {
          this.heartbeatMs = heartbeat;
          this.startHeartbeat();
        }
        return;
      }
      case "echo": {
        if (this.state !== "ready") return; // as berth-agent: only on a welcomed connection
        this.fleet.echoArrived(message.id, performance.now());
        ws.send(JSON.stringify({ type: "echo.reply", id: message.id }));
        return;
      }
      case "job": {
        if (this.state !== "ready") return; // berth-agent ignores a job before the welcome, too
        ws.send(JSON.stringify({ type: "job.ack", id: message.job.id }));
        this.fleet.jobArrived(message.job, performance.now(), this);
        ws.send(JSON.stringify({ type: "job.result", id: message.job.id, ok: true, result: { ok: true } }));
        return;
      }
    }
  }

  startHeartbeat() {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => {
      const ws = this.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      if (performance.now() - this.lastHeard > 3 * this.heartbeatMs) {
        this.closeReason = "heartbeat timeout";
        ws.terminate();
        return;
      }
      ws.send(PING);
      this.pings.push({ t0: performance.now(), resolve: () => {}, reject: () => {} });
    }, this.heartbeatMs);
  }

  onClose(code, reason) {
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.authTimer);
    for (const waiter of this.pings.splice(0)) waiter.reject(new Error(`${this.host.name}: connection closed (${code})`));
    const was = this.state;
    this.ws = undefined;
    if (was === "stopped") return;
    if (was === "ready") this.disconnectedAt = performance.now();
    this.fleet.closed(was, code, reason);
    switch (code) {
      case CLOSE.REVOKED:
      case CLOSE.PROTOCOL_TOO_OLD:
      case CLOSE.INVALID_MESSAGE:
        this.state = "stopped";
        return this.fleet.fail(`${this.host.name}: closed by the control plane with ${code} ${reason}`);
      case CLOSE.UNAUTHORIZED:
      case CLOSE.REPLACED:
        return this.scheduleReconnect(true);
      default:
        return this.scheduleReconnect(/Unexpected server response: 40[13]\b/.test(reason));
    }
  }

  /** Full jitter: random(0, min(cap, base · 2^attempt)); "slow" waits the cap itself, as berth-agent does. */
  scheduleReconnect(slow) {
    const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** Math.min(this.attempt, 30));
    const delay = Math.round(slow ? RECONNECT_MAX_MS : Math.random() * ceiling);
    this.attempt++;
    this.state = "backoff";
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** Closes for good (1001), waiting briefly for the close handshake. */
  async stop() {
    this.state = "stopped";
    clearTimeout(this.reconnectTimer);
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.authTimer);
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    await new Promise((resolve) => {
      const timer = setTimeout(() => {
        ws.terminate();
        resolve();
      }, 5_000);
      ws.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else ws.close(1001, "benchmark over");
    });
  }
}

class Fleet {
  constructor() {
    this.agents = [];
    this.arrivals = new Map();
    this.echoes = new Map();
    this.waiters = new Map();
    this.closes = new Map();
    this.repeats = [];
    this.fatal = undefined;
  }

  fail(message) {
    this.fatal ??= new Error(message);
  }

  /** Counts closes: of a welcomed connection by code, of a dial or handshake by reason. */
  closed(state, code, reason) {
    const key =
      state === "ready"
        ? `connection closed, ${code}`
        : `${state === "connecting" ? "dial failed" : "handshake failed"}, ${code} ${reason.replace(/\d+\.\d+\.\d+\.\d+:\d+/g, "<address>").slice(0, 80)}`.trim();
    this.closes.set(key, (this.closes.get(key) ?? 0) + 1);
  }

  echoArrived(id, at) {
    this.echoes.set(id, at);
  }

  jobArrived({ id, attempt }, at, agent) {
    const first = this.arrivals.get(id);
    if (first) {
      // Delivered again: a resend has a higher attempt; the same attempt twice means two deliveries raced.
      this.repeats.push({ id, attempt, firstAttempt: first.attempt, afterMs: at - first.at });
      return; // the first arrival counts
    }
    this.arrivals.set(id, { at, attempt, hostId: agent.host.hostId });
    this.waiters.get(id)?.();
  }

  /** When job `id` reached its agent (and was acked); throws if it never does. */
  arrival(id, hostId) {
    const seen = this.arrivals.get(id);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new Error(`job ${id} for host ${hostId} never reached its agent within ${JOB_DELIVERY_BOUND_MS / 1000} s`));
      }, JOB_DELIVERY_BOUND_MS);
      this.waiters.set(id, () => {
        clearTimeout(timer);
        this.waiters.delete(id);
        resolve(this.arrivals.get(id));
      });
    });
  }

  ready() {
    return this.agents.filter((agent) => agent.state === "ready").length;
  }

  async stop() {
    await Promise.all(this.agents.map((agent) => agent.stop()));
  }
}

/** Enrolls one simulated host (its own join token, key and client address). Returns the host and the ms it took. */
async function enrollHost(http, index, tag) {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const name = `sim-${tag}-${index}`;
  const t0 = performance.now();
  const { token } = await http.call("POST", "/dev/join-token", { expect: 201 });
  const enrolled = await http.call("POST", "/api/agent/enroll", {
    body: {
      joinToken: token,
      publicKey: publicKey.export({ format: "jwk" }).x,
      name,
      capacity: { memoryMiB: 4096, cpus: 2, diskGiB: 100 },
      agentVersion: "bench-simulated",
    },
    // Each host its own client address: the enroll_ip limit is 30 per hour per address.
    headers: { "cf-connecting-ip": `198.18.${(index >> 8) & 255}.${index & 255}` },
    expect: 201,
  });
  return { host: { ...enrolled, name, privateKey }, ms: performance.now() - t0 };
}

/** Enrolls and connects hosts until the fleet has `size`; returns enrollment and open→welcome times of the new ones. */
async function growFleet(fleet, http, size, tag, concurrency) {
  const from = fleet.agents.length;
  const enrollMs = [];
  const start = performance.now();
  await pool(size - from, concurrency, async (i) => {
    const { host, ms } = await enrollHost(http, from + i, tag);
    enrollMs.push(ms);
    const agent = new SimAgent(host, fleet);
    fleet.agents.push(agent);
    agent.start();
  });
  const enrolledIn = performance.now() - start;
  const fresh = fleet.agents.slice(from);
  await until(
    () => fresh.every((agent) => agent.welcomes > 0),
    WELCOME_BOUND_MS,
    () => `${fresh.filter((agent) => agent.welcomes === 0).length} of ${fresh.length} new simulated agents not welcomed within ${WELCOME_BOUND_MS / 1000} s`,
    fleet,
  );
  return {
    added: fresh.length,
    enrollWallMs: enrolledIn,
    enrollPerSec: (fresh.length / enrolledIn) * 1000,
    enroll: stats(enrollMs),
    connect: stats(fresh.map((agent) => agent.welcomedAt - agent.startedAt)),
    allWelcomedMs: performance.now() - start,
  };
}

/** `count` jobs over the hosts from `next()`, `concurrency` in flight: POST → job at the agent, and POST → 202. */
async function dispatchRun(fleet, http, cookie, count, concurrency, next) {
  const toAgent = [];
  const toResponse = [];
  const ids = [];
  const hosts = [];
  const start = performance.now();
  await pool(count, concurrency, async () => {
    const agent = next();
    hosts.push(agent.host.hostId);
    const t0 = performance.now();
    const job = await http.call("POST", `/api/admin/hosts/${agent.host.hostId}/jobs`, { body: { kind: "noop" }, headers: { cookie }, expect: 202 });
    const answered = performance.now();
    const arrived = await fleet.arrival(job.id, agent.host.hostId);
    if (arrived.hostId !== agent.host.hostId) throw new Error(`job ${job.id} for ${agent.host.hostId} reached ${arrived.hostId}`);
    toAgent.push(arrived.at - t0);
    toResponse.push(answered - t0);
    ids.push(job.id);
  });
  return { ms: performance.now() - start, toAgent, toResponse, ids, hosts };
}

/** `count` echoes over the hosts from `next()`: POST → echo at the agent (as a job's), and POST → 200 (the whole round trip). */
async function echoRun(fleet, http, count, concurrency, next) {
  const latencies = [];
  const roundTrips = [];
  const start = performance.now();
  await pool(count, concurrency, async () => {
    const agent = next();
    const t0 = performance.now();
    const { id } = await http.call("POST", `/dev/hosts/${agent.host.hostId}/echo`, { expect: 200 });
    roundTrips.push(performance.now() - t0);
    const at = fleet.echoes.get(id);
    if (at === undefined) throw new Error(`echo ${id} answered, but no simulated agent saw it`);
    fleet.echoes.delete(id);
    latencies.push(at - t0);
  });
  return { ms: performance.now() - start, latencies, roundTrips };
}

/** Every job the agents acked ends `succeeded` in D1 (the job.result was recorded). */
async function verifyJobs(http, cookie, ids) {
  const deadline = performance.now() + 30_000;
  await pool(ids.length, 8, async (i) => {
    for (;;) {
      const job = await http.call("GET", `/api/admin/jobs/${ids[i]}`, { headers: { cookie }, expect: 200 });
      if (job.status === "succeeded") return;
      if (job.status === "failed" || performance.now() > deadline) throw new Error(`job ${ids[i]} is ${job.status}, not succeeded: ${job.error ?? ""}`);
      await sleep(100);
    }
  });
}

/** Dispatch against echo at the fleet's current size: a warm-up, then alternating rounds. */
async function measureDispatch(fleet, http, cookie, { jobs, warmupJobs, concurrency, rounds }) {
  const agents = fleet.agents;
  let cursor = fleet.cursor ?? 0;
  // Spread over the connected hosts: consecutive picks are different hosts.
  const next = () => agents[cursor++ % agents.length];
  const repeatsBefore = fleet.repeats.length;
  const ids = [];
  ids.push(...(await dispatchRun(fleet, http, cookie, warmupJobs, concurrency, next)).ids);
  await verifyJobs(http, cookie, ids);
  await echoRun(fleet, http, warmupJobs * 2, concurrency, next);
  const dispatchRuns = [];
  const echoRuns = [];
  const perRound = Math.ceil(jobs / rounds);
  for (let round = 0; round < rounds; round++) {
    for (const which of round % 2 === 0 ? ["echo", "dispatch"] : ["dispatch", "echo"]) {
      if (which === "echo") echoRuns.push(await echoRun(fleet, http, perRound, concurrency, next));
      else {
        const run = await dispatchRun(fleet, http, cookie, perRound, concurrency, next);
        dispatchRuns.push(run);
        // Not timed: every result recorded, and the Worker quiet again, before the next run.
        await verifyJobs(http, cookie, run.ids);
        await sleep(250);
      }
    }
  }
  fleet.cursor = cursor;
  for (const run of dispatchRuns) ids.push(...run.ids);
  const repeats = fleet.repeats.slice(repeatsBefore);
  const dispatch = stats(dispatchRuns.flatMap((run) => run.toAgent));
  const response = stats(dispatchRuns.flatMap((run) => run.toResponse));
  const echo = stats(echoRuns.flatMap((run) => run.latencies));
  const p50 = (values) =>
    percentile(
      [...values].sort((a, b) => a - b),
      50,
    );
  return {
    hosts: agents.length,
    concurrency,
    rounds,
    warmupJobs,
    hostsUsed: new Set(dispatchRuns.flatMap((run) => run.hosts)).size,
    jobsSent: ids.length,
    // Job messages for a job the agent already had, during this size's runs (warm-up included).
    repeatDeliveries: { total: repeats.length, sameAttempt: repeats.filter((r) => r.attempt === r.firstAttempt).length },
    dispatch: { ...dispatch, jobsPerSec: (dispatch.count / dispatchRuns.reduce((s, r) => s + r.ms, 0)) * 1000 },
    response,
    echo: { ...echo, perSec: (echo.count / echoRuns.reduce((s, r) => s + r.ms, 0)) * 1000 },
    echoRoundTrip: stats(echoRuns.flatMap((run) => run.roundTrips)),
    ratios: {
      p50: dispatch.p50Ms / echo.p50Ms,
      p99: dispatch.p99Ms / echo.p99Ms,
      p50ByRound: dispatchRuns.map((run, i) => p50(run.toAgent) / p50(echoRuns[i].latencies)),
    },
  };
}

/** Restarts the dev server under the connected fleet; times until every agent is welcomed again. */
async function reconnectStorm(fleet, server) {
  const agents = fleet.agents;
  if (fleet.ready() !== agents.length) throw new Error(`only ${fleet.ready()} of ${agents.length} simulated agents connected before the restart`);
  const before = new Map(agents.map((agent) => [agent, { welcomes: agent.welcomes, dials: agent.dials }]));
  fleet.closes.clear();
  const start = performance.now();
  let downAt = NaN;
  const { downMs, upMs } = await server.restart({ onDown: () => (downAt = performance.now()) });
  const upAt = performance.now();
  await until(
    () => agents.every((agent) => agent.welcomes > before.get(agent).welcomes && agent.state === "ready"),
    STORM_BOUND_MS,
    () =>
      `${agents.filter((agent) => agent.welcomes === before.get(agent).welcomes).length} of ${agents.length} simulated agents not welcomed again within ${STORM_BOUND_MS / 1000} s of the restarted server answering`,
    fleet,
  );
  const allAt = Math.max(...agents.map((agent) => agent.welcomedAt));
  const firstOpenAt = Math.min(...agents.map((agent) => agent.openedAt));
  const firstWelcomeAt = Math.min(...agents.map((agent) => agent.welcomedAt));
  const perAgent = stats(agents.map((agent) => agent.welcomedAt - agent.disconnectedAt));
  // Re-authentications per second, in 1 s buckets from the first welcome: the busiest bucket.
  const buckets = new Map();
  for (const agent of agents) {
    const bucket = Math.floor((agent.welcomedAt - firstWelcomeAt) / 1000);
    buckets.set(bucket, (buckets.get(bucket) ?? 0) + 1);
  }
  const dials = agents.map((agent) => agent.dials - before.get(agent).dials);
  // The distribution the goal is about: from the stop to each agent welcomed again, and a 5 s histogram of it.
  const fromStop = agents.map((agent) => agent.welcomedAt - start);
  const histogram = new Map();
  for (const ms of fromStop) histogram.set(Math.floor(ms / 5000) * 5, (histogram.get(Math.floor(ms / 5000) * 5) ?? 0) + 1);
  return {
    agents: agents.length,
    fromStop: {
      ...stats(fromStop),
      p90Ms: percentile(
        [...fromStop].sort((a, b) => a - b),
        90,
      ),
    },
    fromStopHistogram: Object.fromEntries([...histogram].sort(([a], [b]) => a - b).map(([s, n]) => [`${s}–${s + 5} s`, n])),
    stopMs: downMs,
    startMs: upMs,
    totalMs: allAt - start,
    // From the stop: the first WebSocket upgrade the restarted server accepted, and the first welcome.
    firstUpgradeMs: firstOpenAt - start,
    firstWelcomeMs: firstWelcomeAt - start,
    afterUpMs: allAt - upAt,
    peakWelcomesPerSec: Math.max(...buckets.values()),
    afterDownMs: allAt - downAt,
    perAgent,
    dials: { mean: dials.reduce((s, d) => s + d, 0) / dials.length, max: Math.max(...dials) },
    closes: Object.fromEntries(fleet.closes),
  };
}

// ---------- the real agent ----------

function procStat(pid) {
  // Fields after the command name (which may hold spaces): state is field 3; utime 14, stime 15, cutime 16, cstime 17.
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const at = (n) => Number(fields[n - 3]);
  return { cpuTicks: at(14) + at(15), childTicks: at(16) + at(17) };
}

function procStatus(pid) {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN);
  return { rssKiB: kib("VmRSS"), hwmKiB: kib("VmHWM") };
}

/** CPU ticks (user + system) of every process in process group `pgid`, by command name. */
function groupCpuTicks(pgid) {
  const byName = {};
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let text;
    try {
      text = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    if (Number(fields[5 - 3]) !== pgid) continue;
    const name = text.slice(text.indexOf("(") + 1, text.lastIndexOf(")"));
    byName[name] = (byName[name] ?? 0) + Number(fields[14 - 3]) + Number(fields[15 - 3]);
  }
  return byName;
}

/**
 * Starts a CPU reading of the dev server's process group (workerd, wrangler,
 * the emulator) and of this process; the returned function ends it:
 * { windowS, serverPercent, workerdPercent, loadProcessPercent } in % of one core.
 */
function cpuWindow(server, ticks = clockTicks()) {
  const pgid = server.pgid();
  const first = groupCpuTicks(pgid);
  const ownFirst = process.cpuUsage();
  const t0 = performance.now();
  return () => {
    const last = groupCpuTicks(pgid);
    const own = process.cpuUsage(ownFirst);
    const windowS = (performance.now() - t0) / 1000;
    const percent = (names) => (names.reduce((sum, name) => sum + (last[name] ?? 0) - (first[name] ?? 0), 0) / ticks / windowS) * 100;
    return {
      windowS,
      serverPercent: percent(Object.keys(last)),
      workerdPercent: percent(Object.keys(last).filter((name) => name === "workerd")),
      loadProcessPercent: ((own.user + own.system) / 1e6 / windowS) * 100,
    };
  };
}

function clockTicks() {
  const answer = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
  const ticks = Number(answer.stdout?.trim());
  return Number.isFinite(ticks) && ticks > 0 ? ticks : 100;
}

/**
 * Enrolls and runs one real berth-agent (`node agent/main.ts run
 * --allow-unencrypted-data-root`, in its own process group), waits for it to be
 * connected, lets it settle, then reads its RSS and CPU time over `idleMs`.
 */
async function realAgentIdle(server, { settleMs, idleMs }) {
  const dir = mkdtempSync(join(tmpdir(), "berth-bench-agent-"));
  const configDir = join(dir, "config");
  const agentMain = join(root, "agent", "main.ts");
  let child;
  const killGroup = (signal) => {
    try {
      process.kill(-child.pid, signal);
    } catch {}
  };
  const onExit = () => {
    if (child) killGroup("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };
  process.on("exit", onExit);
  let log = "";
  try {
    const token = await fetch(`${server.base}/dev/join-token`, { method: "POST" }).then(async (r) => {
      if (r.status !== 201) throw new Error(`POST /dev/join-token answered ${r.status}: ${await r.text()}`);
      return (await r.json()).token;
    });
    const enroll = spawnSync(
      process.execPath,
      [agentMain, "enroll", "--url", server.base, "--config", configDir, "--data-root", join(dir, "data"), "--name", "bench-agent"],
      { cwd: root, encoding: "utf8", env: { ...process.env, BERTH_AGENT_JOIN_TOKEN: token }, timeout: 60_000 },
    );
    if (enroll.status !== 0) throw new Error(`berth-agent enroll failed (${enroll.status ?? enroll.signal}): ${enroll.stderr || enroll.stdout}`);

    const launched = performance.now();
    child = spawn(process.execPath, [agentMain, "run", "--config", configDir, "--allow-unencrypted-data-root"], {
      cwd: root,
      env: process.env,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let exited = null;
    child.on("exit", (code, signal) => (exited = code ?? signal));
    let connectedAt = NaN;
    const lines = [];
    let pending = "";
    child.stdout.on("data", (chunk) => {
      log = (log + chunk).slice(-8000);
      const complete = (pending + chunk).split("\n");
      pending = complete.pop();
      for (const line of complete) {
        try {
          const entry = JSON.parse(line);
          lines.push({ at: performance.now(), level: entry.level, msg: entry.msg });
          if (entry.msg === "connected to the control plane" && Number.isNaN(connectedAt)) connectedAt = performance.now();
        } catch {}
      }
    });
    child.stderr.on("data", (chunk) => (log = (log + chunk).slice(-8000)));
    await until(() => !Number.isNaN(connectedAt) || exited !== null, 60_000, "the real berth-agent did not connect within 60 s");
    if (exited !== null) throw new Error(`the real berth-agent exited (${exited}) before connecting`);
    await sleep(settleMs);

    const ticks = clockTicks();
    const serverCpu = cpuWindow(server, ticks);
    const first = procStat(child.pid);
    const t0 = performance.now();
    const rss = [];
    while (performance.now() - t0 < idleMs) {
      if (exited !== null) throw new Error(`the real berth-agent exited (${exited}) while idle`);
      rss.push(procStatus(child.pid).rssKiB);
      await sleep(1000);
    }
    const last = procStat(child.pid);
    const server1 = serverCpu();
    const { rssKiB, hwmKiB } = procStatus(child.pid);
    const windowS = (performance.now() - t0) / 1000;
    const inWindow = lines.filter((line) => line.at >= t0);
    const result = {
      pid: child.pid,
      connectMs: connectedAt - launched,
      settleMs,
      windowS,
      rssMiB: rssKiB / 1024,
      rssMaxMiB: Math.max(...rss, rssKiB) / 1024,
      rssPeakMiB: hwmKiB / 1024,
      cpuSeconds: (last.cpuTicks - first.cpuTicks) / ticks,
      cpuPercent: ((last.cpuTicks - first.cpuTicks) / ticks / windowS) * 100,
      childCpuPercent: ((last.childTicks - first.childTicks) / ticks / windowS) * 100,
      clockTicks: ticks,
      // The dev server meanwhile, with this one idle host (and nothing else) connected.
      server: server1,
      logLines: inWindow.length,
      warnings: inWindow.filter((line) => line.level === "warn" || line.level === "error").map((line) => line.msg),
    };

    killGroup("SIGTERM");
    await until(() => exited !== null, 15_000, "the real berth-agent did not stop within 15 s of SIGTERM").catch(() => {});
    result.exit = exited;
    return result;
  } catch (error) {
    error.message += `\n--- berth-agent output (tail) ---\n${log}`;
    throw error;
  } finally {
    if (child) {
      killGroup("SIGKILL");
      for (let i = 0; i < 20 && exitedGroup(child.pid) === false; i++) await sleep(100);
    }
    rmSync(dir, { recursive: true, force: true });
    process.off("exit", onExit);
  }
}

function exitedGroup(pid) {
  try {
    process.kill(-pid, 0);
    return false;
  } catch {
    return true;
  }
}

// ---------- the benchmark ----------

/**
 * Runs against `server` (from startDevServer({ noAgent: true })), which it
 * restarts once for the reconnect storm. Returns the real agent's idle cost,
 * each fleet size's growth and dispatch numbers, and the storm.
 */
export async function benchFleet({
  server,
  sizes = [1, 100, 1000],
  jobs = 200,
  warmupJobs = 16,
  concurrency = 8,
  rounds = 6,
  enrollConcurrency = 8,
  settleMs = 5_000,
  idleMs = 45_000,
  idleFleetMs = 30_000,
} = {}) {
  if (!server.noAgent) throw new Error("the fleet benchmark needs a dev server started with --no-agent");
  const started = performance.now();
  const tag = Date.now().toString(36);
  const realAgent = await realAgentIdle(server, { settleMs, idleMs });

  const http = client(server.base);
  const fleet = new Fleet();
  try {
    const cookie = await operatorSession(server, `fleet-${tag}`);
    const bySize = [];
    for (const size of sizes) {
      const growth = await growFleet(fleet, http, size, tag, enrollConcurrency);
      await sleep(1000);
      const dispatch = await measureDispatch(fleet, http, cookie, { jobs, warmupJobs, concurrency, rounds });
      bySize.push({ hosts: size, growth, ...dispatch });
    }
    // The whole fleet connected and idle (heartbeats, each host's 30 s watch alarm): the dev server's CPU.
    await sleep(1000);
    const idle = cpuWindow(server);
    await sleep(idleFleetMs);
    const idleFleet = { hosts: fleet.agents.length, ...idle() };
    if (fleet.ready() !== fleet.agents.length) throw new Error(`${fleet.agents.length - fleet.ready()} simulated agents lost their connection while idle`);
    const storm = await reconnectStorm(fleet, server);
    // The restarted server still delivers: one job to each of a few hosts.
    const fresh = client(server.base);
    try {
      let i = 0;
      const after = await dispatchRun(fleet, fresh, cookie, concurrency, concurrency, () => fleet.agents[(i++ * 97) % fleet.agents.length]);
      await verifyJobs(fresh, cookie, after.ids);
      storm.jobsAfter = after.ids.length;
    } finally {
      fresh.destroy();
    }
    // For scale: the same restart with no agent connected or redialling.
    await fleet.stop();
    const plain = await server.restart();
    storm.plainRestartMs = plain.downMs + plain.upMs;
    return {
      enrollConcurrency,
      sizes: bySize,
      idleFleet,
      storm,
      realAgent,
      echo: "POST /dev/hosts/:id/echo: the host's Durable Object sends one message over the agent's WebSocket (no D1); timed to the agent having it",
      enrollAddresses: "one cf-connecting-ip per enrollment (198.18.0.0/15); wrangler dev passes it through to the Worker",
      durationMs: performance.now() - started,
    };
  } finally {
    await fleet.stop();
    http.destroy();
  }
}
