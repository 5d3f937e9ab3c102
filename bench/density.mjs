// How many Starter homeservers one 8 GiB host holds, and what each costs.
//
// Idle: Starter homeservers provisioned by the agent's handlers (the tuned
// configuration) against a pair started by hand with Synapse's and PostgreSQL's
// defaults (bench/homeservers.mjs's baseline), both idle; each container's memory
// as `docker stats` counts it and its processes' RSS and PSS (smaps_rollup).
//
// Fill: homeservers added one at a time, each with a few users who long-poll
// /sync and send a message every few seconds in a room with m.room.encryption
// state. The messages are m.room.encrypted-shaped events sent with plain
// client-API calls (random ciphertext: Synapse stores and relays it without
// reading it, as it does real Megolm). After each addition the load runs a
// window; the fill stops at the first of: p95 /sync round trip (a message's send
// → another member's /sync returning it) over 1 s, any container OOM-killed, the
// 8 GiB budget (the sum of every homeserver container's memory, docker stats)
// unable to take one more at the mean per homeserver, a homeserver that cannot be
// set up (Docker's address pools exhausted, say), or `maxServers`.
// Requests go straight to Synapse on its -hs network (no proxy in between).
//
// Needs Docker Engine and the images (images/build.sh); run as root.
// Run alone: node_modules/.bin/node bench/density.mjs [maxServers]
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import os from "node:os";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { registerWithSharedSecret, requestJson } from "../agent/homeserver/synapse-api.ts";
import { TestRun, ensureImages } from "../test/agent/homeserver/helpers.ts";
import { docker, median, memoryByContainer, startDefaultsPair } from "./homeservers.mjs";
import { machineInfo, percentile, round, table } from "./lib.mjs";

const STARTER = { memoryMiB: 1024, cpus: 1, storageGiB: 10 };
const BUDGET_MIB = 8 * 1024;
/** The agent's host namespace for this bench's homeservers: names apart from the tests' and the dev agent's. */
const HOST_NAMESPACE = "zd";

// ---------- memory and CPU of containers ----------

/** The text of /proc/<pid>/<file> for each process of a container (those still there once read). */
async function procFiles(container, file) {
  const pids = (await docker(["top", container, "-eo", "pid"])).split("\n").slice(1).map(Number).filter(Number.isInteger);
  const texts = [];
  for (const pid of pids) {
    try {
      texts.push(readFileSync(`/proc/${pid}/${file}`, "utf8"));
    } catch {
      // gone since docker top listed it
    }
  }
  return texts;
}

/** Sum of smaps_rollup's RSS and PSS (and PSS's anonymous/file/shmem parts) over a container's processes, MiB. */
export async function processMemory(container) {
  const texts = await procFiles(container, "smaps_rollup");
  const sum = { processes: texts.length, rss: 0, pss: 0, pssAnon: 0, pssFile: 0, pssShmem: 0 };
  const fields = { Rss: "rss", Pss: "pss", Pss_Anon: "pssAnon", Pss_File: "pssFile", Pss_Shmem: "pssShmem" };
  for (const text of texts) {
    for (const match of text.matchAll(/^(\w+):\s+(\d+) kB$/gm)) {
      const key = fields[match[1]];
      if (key) sum[key] += Number(match[2]) / 1024;
    }
  }
  return sum;
}

/** Host CPU use over an interval from /proc/stat: busy share of all cores (0–1). */
function cpuTimes() {
  const [, ...values] = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/);
  const numbers = values.map(Number);
  const idle = numbers[3] + numbers[4];
  return { idle, total: numbers.reduce((a, b) => a + b, 0) };
}

const busyShare = (before, after) => 1 - (after.idle - before.idle) / (after.total - before.total);

/** Kernel clock ticks per second (USER_HZ: 100 on Linux). */
const TICKS_PER_SECOND = 100;

/**
 * CPU seconds of a container's processes so far: user + system time of each, plus what its
 * exited children took (reaped by their parent: PostgreSQL's postmaster for its backends).
 */
async function containerCpuSeconds(container) {
  let ticks = 0;
  for (const stat of await procFiles(container, "stat")) {
    // fields after the command's closing parenthesis: utime, stime, cutime, cstime are the 12th–15th
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ticks += Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
  }
  return ticks / TICKS_PER_SECOND;
}

async function cpuSecondsOf(names) {
  const seconds = new Map();
  for (const name of names) seconds.set(name, await containerCpuSeconds(name));
  return seconds;
}

// ---------- idle memory: tuned against Synapse's defaults ----------

async function idleProfile(containers) {
  const out = {};
  for (const [role, name] of Object.entries(containers)) out[role] = await processMemory(name);
  return out;
}

/**
 * `count` tuned Starter homeservers and the defaults pair, idle for `idleSeconds`, then `samples`
 * docker stats samples (medians per pair) and one smaps_rollup profile of each container.
 */
export async function benchIdleMemory({ count = 2, idleSeconds = 60, samples = 5, sampleEveryS = 5 } = {}) {
  await ensureImages();
  const run = new TestRun({ hostNamespace: HOST_NAMESPACE, healthcheck: undefined });
  let defaults;
  try {
    defaults = await startDefaultsPair();
    const pairs = [];
    for (let i = 0; i < count; i++) {
      const spec = run.spec(`idle${i}`, { resources: STARTER });
      await run.run("homeserver.provision", spec);
      const names = run.names(spec.serverId);
      pairs.push({ postgres: names.postgres, synapse: names.synapse });
    }
    await sleep(idleSeconds * 1000);
    const ours = [];
    const theirs = [];
    for (let s = 0; s < samples; s++) {
      const usage = await memoryByContainer();
      const pair = ({ postgres, synapse }) => ({ postgres: usage.get(postgres), synapse: usage.get(synapse), total: usage.get(postgres) + usage.get(synapse) });
      for (const p of pairs) ours.push(pair(p));
      theirs.push(pair(defaults.containers));
      if (s < samples - 1) await sleep(sampleEveryS * 1000);
    }
    if ([...ours, ...theirs].some((m) => !Number.isFinite(m.total))) throw new Error("docker stats did not report every container");
    const medians = (list) => ({
      postgresMiB: median(list.map((m) => m.postgres)),
      synapseMiB: median(list.map((m) => m.synapse)),
      pairMiB: median(list.map((m) => m.total)),
    });
    const tuned = medians(ours);
    const synapseDefaults = medians(theirs);
    return {
      count,
      idleSeconds,
      samples,
      tuned: { ...tuned, processes: await idleProfile(pairs[0]) },
      defaults: { ...synapseDefaults, processes: await idleProfile(defaults.containers) },
      ratios: { idleMemoryTunedOverDefaults: tuned.pairMiB / synapseDefaults.pairMiB },
    };
  } finally {
    await defaults?.remove();
    await run.cleanup();
  }
}

export function idleMemoryReport(result) {
  const row = (label, side) => [
    label,
    round(side.postgresMiB, 1),
    round(side.synapseMiB, 1),
    round(side.pairMiB, 1),
    round(side.processes.synapse.rss, 1),
    round(side.processes.synapse.pss, 1),
    round(side.processes.postgres.rss, 1),
    round(side.processes.postgres.pss, 1),
    side.processes.postgres.processes,
  ];
  return [
    `Idle memory of a Starter homeserver (${result.count} provisioned by the agent's handlers) against Synapse's defaults (same images and limits), ` +
      `after ${result.idleSeconds} s idle: docker stats medians of ${result.samples} samples (page cache excluded), and smaps_rollup of each container's processes`,
    table(
      ["pair", "PG MiB", "Synapse MiB", "pair MiB", "Synapse RSS", "Synapse PSS", "PG RSS (sum)", "PG PSS (sum)", "PG processes"],
      [row("ours (tuned)", result.tuned), row("Synapse's defaults", result.defaults)],
    ),
  ].join("\n");
}

// ---------- the fill: homeservers under a light load until one bound ----------

const USERS_PER_SERVER = 3;
const MESSAGE_EVERY_MS = 6_000; // per user; Synapse's message rate limit is one per 5 s sustained
const SYNC_TIMEOUT_MS = 30_000;
const P95_LIMIT_MS = 1_000;

/** An m.room.encrypted event's content as a Megolm client sends it, its ciphertext random; `probe` identifies it in the others' /sync. */
function encryptedContent(probe) {
  return {
    algorithm: "m.megolm.v1.aes-sha2",
    ciphertext: randomBytes(300).toString("base64").replace(/=+$/, ""),
    sender_key: randomBytes(32).toString("base64").replace(/=+$/, ""),
    session_id: randomBytes(32).toString("base64").replace(/=+$/, ""),
    device_id: "BENCHDEVICE",
    probe,
  };
}

/** Registers the users, one of whom makes a private room with m.room.encryption state that the others join. */
async function populate(run, spec, base) {
  const secret = run.registrationSecret(spec.serverId);
  const users = [];
  for (let i = 0; i < USERS_PER_SERVER; i++) {
    const outcome = await registerWithSharedSecret(base, secret, {
      localpart: `user${i}`,
      password: randomBytes(12).toString("hex"),
      admin: false,
      serverName: spec.serverName,
    });
    users.push({ userId: outcome.userId, token: outcome.accessToken });
  }
  const created = await requestJson(`${base}/_matrix/client/v3/createRoom`, {
    method: "POST",
    token: users[0].token,
    body: {
      preset: "private_chat",
      invite: users.slice(1).map((u) => u.userId),
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    },
  });
  const roomId = created.body?.room_id;
  if (created.status !== 200 || !roomId) throw new Error(`createRoom answered ${created.status}: ${JSON.stringify(created.body)}`);
  for (const user of users.slice(1)) {
    const joined = await requestJson(`${base}/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, { method: "POST", token: user.token, body: {} });
    if (joined.status !== 200) throw new Error(`join answered ${joined.status}`);
  }
  return { users, roomId };
}

/**
 * Each user long-polls /sync and sends a message every MESSAGE_EVERY_MS (first one at a random
 * offset); every other member's /sync returning a message is one round-trip sample, pushed to
 * `window.samples`. Returns stop().
 */
function startLoad(base, { users, roomId }, window) {
  const sent = new Map();
  const controller = new AbortController();
  const { signal } = controller;
  const syncLoop = async (user) => {
    let since;
    while (!signal.aborted) {
      const query = since ? `?since=${encodeURIComponent(since)}&timeout=${SYNC_TIMEOUT_MS}` : "?timeout=0";
      const answer = await requestJson(`${base}/_matrix/client/v3/sync${query}`, { token: user.token, timeoutMs: SYNC_TIMEOUT_MS + 60_000, signal }).catch(
        (error) => ({ status: 0, body: String(error) }),
      );
      if (signal.aborted) return;
      if (answer.status !== 200) {
        window.errors++;
        await sleep(1_000);
        continue;
      }
      const receivedAt = performance.now();
      if (since) {
        for (const event of answer.body.rooms?.join?.[roomId]?.timeline?.events ?? []) {
          const sentAt = event.sender !== user.userId ? sent.get(event.content?.probe) : undefined;
          if (sentAt !== undefined) window.samples.push(receivedAt - sentAt);
        }
      }
      since = answer.body.next_batch;
    }
  };
  const sendLoop = async (user) => {
    await sleep(Math.random() * MESSAGE_EVERY_MS, undefined, { signal }).catch(() => undefined);
    let txn = 0;
    while (!signal.aborted) {
      const probe = randomBytes(8).toString("hex");
      const started = performance.now();
      sent.set(probe, started);
      const url = `${base}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.encrypted/${probe}-${txn++}`;
      const answer = await requestJson(url, { method: "PUT", token: user.token, body: encryptedContent(probe), signal }).catch(() => ({ status: 0 }));
      if (signal.aborted) return;
      if (answer.status === 200) window.sent++;
      else window.errors++;
      await sleep(Math.max(0, MESSAGE_EVERY_MS - (performance.now() - started)), undefined, { signal }).catch(() => undefined);
    }
  };
  const loops = users.flatMap((user) => [syncLoop(user), sendLoop(user)]);
  return async () => {
    controller.abort();
    await Promise.allSettled(loops);
  };
}

/** Whether any of the containers was OOM-killed (docker inspect State.OOMKilled). */
async function oomKilled(names) {
  const states = (await docker(["inspect", "--format", "{{.Name}} {{.State.OOMKilled}}", ...names])).split("\n");
  return states.filter((line) => line.endsWith(" true")).map((line) => line.split(" ")[0].slice(1));
}

/**
 * Adds Starter homeservers one at a time under the light load; after each, `settleSeconds` then a
 * `windowSeconds` window measured (every round trip of every server; CPU of the host from
 * /proc/stat and of the containers' processes from /proc/<pid>/stat; docker stats' memory at its
 * end). Stops at the first bound (see the head of this file).
 */
export async function benchDensity({ maxServers = 40, windowSeconds = 60, settleSeconds = 15 } = {}) {
  await ensureImages();
  const run = new TestRun({ hostNamespace: HOST_NAMESPACE, healthcheck: undefined });
  const servers = [];
  const steps = [];
  let stoppedBy = `maxServers (${maxServers})`;
  try {
    for (let n = 1; n <= maxServers; n++) {
      const spec = run.spec(`fill${n}`, { resources: STARTER });
      const provisionStarted = performance.now();
      let base;
      let members;
      try {
        await run.run("homeserver.provision", spec);
        base = await run.synapseBase(spec.serverId);
        members = await populate(run, spec, base);
      } catch (error) {
        // a bound of the machine too (Docker's address pools run out at two networks per homeserver)
        stoppedBy = `homeserver ${n} could not be set up: ${error.message.split("\n")[0]}`;
        break;
      }
      const provisionMs = performance.now() - provisionStarted;
      const names = run.names(spec.serverId);
      const window = { samples: [], sent: 0, errors: 0 };
      servers.push({ names, base, window, stop: startLoad(base, members, window) });
      await sleep(settleSeconds * 1000);
      const containers = servers.flatMap((s) => [s.names.synapse, s.names.postgres]);
      for (const server of servers) Object.assign(server.window, { samples: [], sent: 0, errors: 0 });
      const hostBefore = cpuTimes();
      const containersBefore = await cpuSecondsOf(containers);
      const windowStarted = performance.now();
      await sleep(windowSeconds * 1000);
      const containersAfter = await cpuSecondsOf(containers);
      const windowMs = performance.now() - windowStarted;
      const hostBusy = busyShare(hostBefore, cpuTimes());
      const samples = servers.flatMap((s) => s.window.samples).sort((a, b) => a - b);
      const memory = await memoryByContainer();
      const cpuSeconds = containers.reduce((sum, name) => sum + containersAfter.get(name) - containersBefore.get(name), 0);
      const step = {
        servers: n,
        provisionMs,
        roundTrips: samples.length,
        p50Ms: percentile(samples, 50),
        p95Ms: percentile(samples, 95),
        sent: servers.reduce((sum, s) => sum + s.window.sent, 0),
        errors: servers.reduce((sum, s) => sum + s.window.errors, 0),
        memoryMiB: containers.reduce((sum, name) => sum + (memory.get(name) ?? NaN), 0),
        containerCpuPercent: (cpuSeconds / (windowMs / 1000)) * 100,
        hostBusyShare: hostBusy,
        oomKilled: await oomKilled(containers),
      };
      steps.push(step);
      console.error(`density: ${JSON.stringify(step)}`);
      if (step.oomKilled.length > 0) {
        stoppedBy = `OOM kill (${step.oomKilled.join(", ")})`;
        break;
      }
      if (!(step.p95Ms <= P95_LIMIT_MS)) {
        stoppedBy = `p95 /sync round trip ${round(step.p95Ms, 0)} ms > ${P95_LIMIT_MS} ms`;
        break;
      }
      if (step.memoryMiB + step.memoryMiB / n > BUDGET_MIB) {
        stoppedBy = `the 8 GiB budget (${round(step.memoryMiB, 0)} MiB used)`;
        break;
      }
    }
    const profiles = [];
    for (const server of servers) profiles.push({ synapse: await processMemory(server.names.synapse), postgres: await processMemory(server.names.postgres) });
    const fitting = steps.filter((s) => s.oomKilled.length === 0 && s.p95Ms <= P95_LIMIT_MS);
    const last = fitting.at(-1);
    const perServer = (key) => median(profiles.map((p) => p.synapse[key] + p.postgres[key]));
    return {
      usersPerServer: USERS_PER_SERVER,
      messageEveryMs: MESSAGE_EVERY_MS,
      windowSeconds,
      steps,
      stoppedBy,
      fitted: last?.servers ?? 0,
      perServer: last && {
        memoryMiB: last.memoryMiB / last.servers,
        rssMiB: perServer("rss"),
        pssMiB: perServer("pss"),
        synapsePssMiB: median(profiles.map((p) => p.synapse.pss)),
        postgresPssMiB: median(profiles.map((p) => p.postgres.pss)),
        cpuPercent: last.containerCpuPercent / last.servers,
      },
      host: { cores: os.cpus().length, hostBusyShare: last?.hostBusyShare },
    };
  } finally {
    for (const server of servers) await server.stop();
    await run.cleanup();
  }
}

/** The figures per GiB and per core: what binds is whichever runs out first. */
export function densityReport(result, idle) {
  const per = result.perServer;
  const lines = [
    `Density: Starter homeservers added one at a time (the agent's handlers), each with ${result.usersPerServer} users long-polling /sync and ` +
      `each sending an m.room.encrypted-shaped event every ${result.messageEveryMs / 1000} s; ${result.windowSeconds} s measured after each addition. ` +
      `Stopped by: ${result.stoppedBy}.`,
    table(
      ["servers", "p50 ms", "p95 ms", "round trips", "errors", "memory MiB", "containers' CPU %", "host busy"],
      result.steps.map((s) => [
        s.servers,
        round(s.p50Ms, 0),
        round(s.p95Ms, 0),
        s.roundTrips,
        s.errors,
        round(s.memoryMiB, 0),
        round(s.containerCpuPercent, 1),
        `${round(s.hostBusyShare * 100, 0)} %`,
      ]),
    ),
  ];
  if (per) {
    lines.push(
      `Fitted: ${result.fitted}. Per homeserver under the load: ${round(per.memoryMiB, 1)} MiB (docker stats), RSS ${round(per.rssMiB, 1)} MiB, ` +
        `PSS ${round(per.pssMiB, 1)} MiB (Synapse ${round(per.synapsePssMiB, 1)}, PostgreSQL ${round(per.postgresPssMiB, 1)}), CPU ${round(per.cpuPercent, 1)} % of a core. ` +
        `By memory alone 8 GiB holds ${Math.floor(BUDGET_MIB / per.memoryMiB)} (${round(1024 / per.memoryMiB, 1)} per GiB); ` +
        `by CPU alone a core holds ${round(100 / per.cpuPercent, 1)}.`,
    );
  }
  if (idle) lines.push(idleMemoryReport(idle));
  return lines.join("\n");
}

/** The plan reservation's count: placement reserves a Starter's 1 GiB, and 1 GiB per host. */
const ADMITTED_BY_RESERVATION = 7;

/** Ratio rows: memory per homeserver under the load against Synapse's defaults' idle pair (same run), and, for a whole fill, the count against placement's. */
export function densityRatios(result, defaultsIdlePairMiB) {
  const per = result.perServer;
  if (!per) return [["density: no homeserver held the load", "–"]];
  const rows = [["density: memory per homeserver under light load / Synapse's defaults idle pair", round(per.memoryMiB / defaultsIdlePairMiB)]];
  if (!result.stoppedBy.startsWith("maxServers")) {
    rows.push([
      `density: Starters fitted on 8 GiB (${result.stoppedBy.split(/ \(|:/)[0]}) / ${ADMITTED_BY_RESERVATION} by plan reservation`,
      round(result.fitted / ADMITTED_BY_RESERVATION),
    ]);
  }
  return rows;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const maxServers = Number(process.argv[2] ?? 40);
  const idle = await benchIdleMemory();
  const density = await benchDensity({ maxServers });
  console.log(JSON.stringify({ machine: machineInfo(), load: os.loadavg(), idle, density }, null, 2));
  console.log(densityReport(density, idle));
}
