// Moving a homeserver between hosts against a plain backup + restore of it, the product way:
// `npm run dev -- --hosts 2` (two local agents, each its own Caddy on 127.0.0.<i+1>), one paying
// customer's homeserver with a little data (a user, a room, some messages, a small media upload).
// Then, alternating, `rounds` times each:
//   - an operator moves it to the other host (POST /api/admin/servers/:id/migrate): its downtime as
//     the product reports it (the owner's lastMove) and its duration, POST → succeeded;
//   - its owner takes a backup and restores it in place (POST …/backups, then …/restore): from the
//     backup's request to the server running the restored data and answering again.
// All along, a client asks /_matrix/client/versions over HTTPS every PROBE_EVERY_MS through the
// route: the host the name resolves to. Locally there is no DNS, so the bench stands in for it
// as the product's route switch does: the source until the move's phase is past the switch
// (polled every PHASE_POLL_MS), the target after. The unavailable window is from the first
// failed probe to the first answer after the last failed one.
// Each round checks the data came through: the messages and the media, byte for byte.
//
// Needs Docker Engine, Caddy and the images (bash images/build.sh); run as root.
import { randomBytes, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { Agent, fetch as undiciFetch } from "undici";
import { destroyDevHomeservers } from "../scripts/dev-reset.mjs";
import { localHosts, routedServerNames } from "../scripts/local-hosts.mjs";
import { reservePorts } from "../test/ports.ts";
import { call, operatorSession, postJson, subscribedCustomer } from "./customer.mjs";
import { startDevServer } from "./dev-server.mjs";
import { fatal, percentile, round, table, until } from "./lib.mjs";

const HOSTS = 2;
const PROBE_EVERY_MS = 100;
const PROBE_TIMEOUT_MS = 2_000;
const PHASE_POLL_MS = 200;
const MESSAGES = 20;
const MEDIA_BYTES = 64 * 1024;
/** Phases of a move in which its route points at the target (worker/servers/migration.ts switches it when the restore succeeded). */
const ROUTED_TO_TARGET = new Set(["checking_target", "destroying_source", "succeeded"]);

const median = (values) =>
  percentile(
    [...values].sort((a, b) => a - b),
    50,
  );

/** HTTPS to the homeservers through one host's Caddy (its address for every name), trusting only the hosts' CAs. */
function hostDispatcher(address, roots) {
  const lookup = (_hostname, options, callback) => {
    if (options.all) callback(null, [{ address, family: 4 }]);
    else callback(null, address, 4);
  };
  return new Agent({ connect: { ca: roots, lookup, rejectUnauthorized: true } });
}

/** Matrix's client API through `dispatcher`, retrying while Synapse starts (502/503) or rate-limits (429). */
async function matrix(dispatcher, method, url, { token, body, raw } = {}) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = raw ? "application/octet-stream" : "application/json";
    let response;
    try {
      response = await undiciFetch(url, {
        method,
        headers,
        body: body === undefined || raw ? body : JSON.stringify(body),
        dispatcher,
        signal: AbortSignal.timeout(30_000),
      });
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(500);
      continue;
    }
    if (response.status === 200) return raw && method === "GET" ? Buffer.from(await response.arrayBuffer()) : response.json();
    const text = await response.text();
    if (![429, 502, 503].includes(response.status) || Date.now() > deadline) throw new Error(`${method} ${url} answered ${response.status}: ${text}`);
    await sleep(response.status === 429 ? (JSON.parse(text).retry_after_ms ?? 1_000) : 500);
  }
}

/**
 * Asks /_matrix/client/versions through the route every PROBE_EVERY_MS until stop():
 * `hostOf()` says which host's dispatcher the name resolves to at each probe.
 * stop() returns the unavailable window in ms (0 when every probe answered) and the probes' count.
 */
function probeVersions(url, dispatchers, hostOf) {
  const probes = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const at = performance.now();
      let ok = false;
      try {
        const response = await undiciFetch(url, { dispatcher: dispatchers[hostOf()], signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
        ok = response.status === 200 && Array.isArray((await response.json()).versions);
      } catch {}
      probes.push({ at, ok });
      await sleep(Math.max(0, PROBE_EVERY_MS - (performance.now() - at)));
    }
  })();
  return async () => {
    running = false;
    await loop;
    const firstFailed = probes.findIndex((probe) => !probe.ok);
    if (firstFailed === -1) return { unavailableMs: 0, probes: probes.length };
    const lastFailed = probes.findLastIndex((probe) => !probe.ok);
    const back = probes[lastFailed + 1];
    if (!back) throw new Error(`${url} did not answer again by the end of the round`);
    return { unavailableMs: back.at - probes[firstFailed].at, probes: probes.length };
  };
}

/** A user, a room with MESSAGES messages and a media upload on the homeserver; what checkData() looks for. */
async function seedData(base, customer, server, dispatcher) {
  const users = `${base}/api/servers/${server.id}/users`;
  const created = await fetch(users, postJson({ localpart: "bench" }, { cookie: customer.cookie }));
  let answer = await created.json();
  if (created.status === 202) {
    answer = await until("the user to be created on the host", async () => {
      const { job } = await call(`${base}${answer.job.poll}`, { headers: { cookie: customer.cookie } });
      if (job.status === "failed") throw fatal(`creating the user failed: ${JSON.stringify(job.error)}`);
      return job.status === "succeeded" ? job.result : undefined;
    });
  } else if (created.status !== 201 && created.status !== 200) throw new Error(`POST ${users} answered ${created.status}: ${JSON.stringify(answer)}`);
  const password = `bench ${randomBytes(12).toString("hex")}`;
  const token = new URL(answer.passwordLink.url).searchParams.get("token");
  const setting = await fetch(`${users}/${encodeURIComponent(answer.userId)}/password`, postJson({ token, password }));
  if (setting.status !== 200 && setting.status !== 202) throw new Error(`setting the user's password answered ${setting.status}: ${await setting.text()}`);
  const hs = server.homeserverUrl;
  // "setting" (202): the host is still writing it; a log-in works once it has.
  const login = await until(
    "a log-in as the new user",
    () =>
      matrix(dispatcher, "POST", `${hs}/_matrix/client/v3/login`, {
        body: { type: "m.login.password", identifier: { type: "m.id.user", user: "bench" }, password },
      }),
    { timeoutMs: 90_000, intervalMs: 1_000 },
  );
  const accessToken = login.access_token;
  const { room_id: roomId } = await matrix(dispatcher, "POST", `${hs}/_matrix/client/v3/createRoom`, { token: accessToken, body: { name: "bench" } });
  const bodies = Array.from({ length: MESSAGES }, (_, i) => `bench message ${i} ${randomBytes(4).toString("hex")}`);
  for (const [i, text] of bodies.entries()) {
    const path = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/bench${i}`;
    await matrix(dispatcher, "PUT", `${hs}${path}`, { token: accessToken, body: { msgtype: "m.text", body: text } });
  }
  const media = randomBytes(MEDIA_BYTES);
  const { content_uri: contentUri } = await matrix(dispatcher, "POST", `${hs}/_matrix/media/v3/upload?filename=bench.bin`, {
    token: accessToken,
    body: media,
    raw: true,
  });
  return { accessToken, roomId, bodies, media, contentUri };
}

/** The room's messages and the media, as seeded, read back through `dispatcher`. */
async function checkData(server, dispatcher, data) {
  const hs = server.homeserverUrl;
  const { chunk } = await matrix(dispatcher, "GET", `${hs}/_matrix/client/v3/rooms/${encodeURIComponent(data.roomId)}/messages?dir=b&limit=100`, {
    token: data.accessToken,
  });
  const found = new Set(chunk.filter((event) => event.type === "m.room.message").map((event) => event.content.body));
  const missing = data.bodies.filter((body) => !found.has(body));
  if (missing.length) throw new Error(`${missing.length} of the ${data.bodies.length} messages are gone`);
  const mediaPath = data.contentUri.slice("mxc://".length);
  const media = await matrix(dispatcher, "GET", `${hs}/_matrix/client/v1/media/download/${mediaPath}`, { token: data.accessToken, raw: true });
  if (!media.equals(data.media)) throw new Error("the media upload came back different");
}

/** One move to `target` (a host index), timed; `routedTo` follows the route as the product switches it. */
async function timedMove({ base, operator, customer, server, hosts, source, target, route }) {
  const t0 = performance.now();
  const started = await call(`${base}/api/admin/servers/${server.id}/migrate`, postJson({ targetHostId: hosts[target].id }, { cookie: operator }), 202);
  const finished = await until(
    `the move to host ${target}`,
    async () => {
      const { migrations } = await call(`${base}/api/admin/migrations?serverId=${server.id}`, { headers: { cookie: operator } });
      const migration = migrations.find((candidate) => candidate.id === started.id);
      if (migration && ROUTED_TO_TARGET.has(migration.phase)) route.to = target;
      if (migration?.phase === "failed") throw fatal(`the move failed: ${migration.error}`);
      return migration?.phase === "succeeded" ? migration : undefined;
    },
    { timeoutMs: 300_000, intervalMs: PHASE_POLL_MS },
  );
  const totalMs = performance.now() - t0;
  const { lastMove } = await call(`${base}/api/servers/${server.id}`, { headers: { cookie: customer.cookie } });
  if (lastMove?.outcome !== "moved" || lastMove.downtimeMs !== finished.downtimeMs) throw new Error(`the owner's lastMove is ${JSON.stringify(lastMove)}`);
  return { from: source, to: target, totalMs, downtimeMs: lastMove.downtimeMs };
}

/** The owner's backup, then its restore in place, timed from the backup's request to the restored server answering. */
async function backupAndRestore({ base, customer, server, answersAgain }) {
  const headers = { cookie: customer.cookie };
  const t0 = performance.now();
  const backup = await call(`${base}/api/servers/${server.id}/backups`, postJson({}, headers), 202);
  await until("the backup to succeed", async () => {
    const { backups } = await call(`${base}/api/servers/${server.id}/backups`, { headers });
    const mine = backups.find((candidate) => candidate.id === backup.id);
    if (mine?.status === "failed") throw fatal(`the backup failed: ${JSON.stringify(mine)}`);
    return mine?.status === "succeeded";
  });
  const backedUp = performance.now();
  await call(`${base}/api/servers/${server.id}/restore`, postJson({ backupId: backup.id }, headers), 202);
  await until("the restore to succeed", async () => {
    const view = await call(`${base}/api/servers/${server.id}`, { headers });
    if (view.lastJob?.kind === "homeserver.restore" && view.lastJob.status === "failed") throw fatal(`the restore failed: ${view.lastJob.error}`);
    return view.status === "running" && view.lastJob?.kind === "homeserver.restore" && view.lastJob.status === "succeeded";
  });
  await until("the restored server to answer", answersAgain, { timeoutMs: 120_000, intervalMs: PROBE_EVERY_MS });
  const end = performance.now();
  return { totalMs: end - t0, backupMs: backedUp - t0, restoreMs: end - backedUp };
}

/**
 * `rounds` moves and as many backups + restores of one homeserver, alternating. Rounds are at
 * most 3: a homeserver's owner may back up and restore 3 times an hour (worker/auth/rate-limit.ts).
 */
export async function benchMigration({ rounds = 3 } = {}) {
  const httpsPort = await reservePorts(HOSTS + 1);
  const server = await startDevServer({ httpsPort, hosts: HOSTS });
  const dispatchers = {};
  try {
    const started = performance.now();
    const operator = await operatorSession(server, "migration-operator");
    const layout = localHosts(server.persistTo, HOSTS, httpsPort);
    const { hosts: listed } = await until("both local hosts online", async () => {
      const answer = await call(`${server.base}/api/admin/hosts`, { headers: { cookie: operator } });
      return answer.hosts.filter((host) => host.status === "online").length === HOSTS && answer;
    });
    const hosts = Object.fromEntries(layout.map((host) => [host.index, { ...host, id: listed.find((h) => h.name === host.name).id }]));

    const customer = await subscribedCustomer(server.base, server.stripeUrl, "migration");
    const created = await until(
      "a host to take the server",
      async () => {
        const response = await fetch(`${server.base}/api/servers`, postJson({ name: `move-${process.pid}`, region: "us-east" }, { cookie: customer.cookie }));
        if (response.status === 201) return response.json();
        const body = await response.text();
        if (response.status === 409 && body.includes("no_capacity")) return undefined;
        throw fatal(`POST /api/servers answered ${response.status}: ${body}`);
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    await until("the server to run", async () => {
      const view = await call(`${server.base}/api/servers/${created.id}`, { headers: { cookie: customer.cookie } });
      if (view.status === "failed") throw fatal(`the server failed: ${view.statusReason}`);
      return view.status === "running";
    });
    // Each host's Caddy has its own local CA; it writes the root in place, so read until it parses.
    const roots = await until("both Caddies' local CAs", () =>
      layout.map((host) => {
        const pem = readFileSync(join(host.caddyDir, "pki", "authorities", "local", "root.crt"), "utf8");
        new X509Certificate(pem);
        return pem;
      }),
    );
    for (const host of layout) dispatchers[host.index] = hostDispatcher(host.address, roots);
    const route = {
      to: await until("one host to route the name", () => layout.find((host) => routedServerNames(host.configDir).includes(created.serverName))?.index),
    };
    const versionsUrl = `${created.homeserverUrl}/_matrix/client/versions`;
    const answers = async () => {
      const response = await undiciFetch(versionsUrl, { dispatcher: dispatchers[route.to], signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
      return response.status === 200 && Array.isArray((await response.json()).versions);
    };
    await until("the server to answer over HTTPS", answers);
    const data = await seedData(server.base, customer, created, dispatchers[route.to]);
    await checkData(created, dispatchers[route.to], data);
    const setupMs = performance.now() - started;

    const moves = [];
    const restores = [];
    for (let i = 0; i < rounds; i++) {
      const source = route.to;
      const target = source === 1 ? 2 : 1;
      let stop = probeVersions(versionsUrl, dispatchers, () => route.to);
      const moved = await timedMove({ base: server.base, operator, customer, server: created, hosts, source, target, route });
      await until("the moved server to answer", answers, { timeoutMs: 120_000, intervalMs: PROBE_EVERY_MS });
      moves.push({ ...moved, observed: await stop() });
      await checkData(created, dispatchers[route.to], data);

      stop = probeVersions(versionsUrl, dispatchers, () => route.to);
      const restored = await backupAndRestore({ base: server.base, customer, server: created, answersAgain: answers });
      restores.push({ ...restored, observed: await stop() });
      await checkData(created, dispatchers[route.to], data);
    }

    const stats = (values) => ({ medianMs: median(values), minMs: Math.min(...values), maxMs: Math.max(...values) });
    const move = {
      reported: stats(moves.map((m) => m.downtimeMs)),
      observed: stats(moves.map((m) => m.observed.unavailableMs)),
      total: stats(moves.map((m) => m.totalMs)),
    };
    const backupRestore = {
      total: stats(restores.map((r) => r.totalMs)),
      observed: stats(restores.map((r) => r.observed.unavailableMs)),
      backup: stats(restores.map((r) => r.backupMs)),
      restore: stats(restores.map((r) => r.restoreMs)),
    };
    return {
      rounds,
      data: { messages: MESSAGES, mediaBytes: MEDIA_BYTES },
      probeEveryMs: PROBE_EVERY_MS,
      setupMs,
      moves,
      restores,
      move,
      backupRestore,
      ratios: {
        moveDowntimeOverBackupRestore: move.reported.medianMs / backupRestore.total.medianMs,
        moveObservedOverBackupRestore: move.observed.medianMs / backupRestore.total.medianMs,
        moveObservedOverRestoreObserved: move.observed.medianMs / backupRestore.observed.medianMs,
      },
    };
  } finally {
    await Promise.all(Object.values(dispatchers).map((dispatcher) => dispatcher.close().catch(() => undefined)));
    await server.stop({ beforeRemove: (persistTo) => destroyDevHomeservers(persistTo) });
  }
}

/** The results as printed by `npm run bench`. */
export function migrationReport(result) {
  const s = (ms) => round(ms / 1000, 1);
  const spread = ({ medianMs, minMs, maxMs }) => [s(medianMs), s(minMs), s(maxMs)];
  return [
    `Moving a homeserver between two local hosts (npm run dev -- --hosts 2) vs a plain backup + restore in place of the same homeserver ` +
      `(${result.data.messages} messages, ${round(result.data.mediaBytes / 1024, 0)} KiB of media), ${result.rounds} rounds of each, alternating`,
    table(
      ["measure", "median s", "min s", "max s"],
      [
        ["move: downtime, as the product reports it (lastMove)", ...spread(result.move.reported)],
        ["move: unavailable, observed through the route", ...spread(result.move.observed)],
        ["move: POST migrate → succeeded (source destroyed)", ...spread(result.move.total)],
        ["backup + restore: request → restored and answering", ...spread(result.backupRestore.total)],
        ["  of which backup", ...spread(result.backupRestore.backup)],
        ["  of which restore", ...spread(result.backupRestore.restore)],
        ["backup + restore: unavailable, observed", ...spread(result.backupRestore.observed)],
      ],
    ),
    `Observed: /_matrix/client/versions over HTTPS every ${result.probeEveryMs} ms through the host the name resolves to (the source until ` +
      "the move's route switch, then the target); unavailable from the first failed probe to the first answer after the last one.",
    `Ratio move downtime ÷ backup + restore time (medians): ${round(result.ratios.moveDowntimeOverBackupRestore)} as reported, ` +
      `${round(result.ratios.moveObservedOverBackupRestore)} as observed; observed unavailability, move ÷ restore: ${round(result.ratios.moveObservedOverRestoreObserved)}.`,
  ].join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(migrationReport(await benchMigration()));
}
