// `npm run bench`: the migration, KDF, session-check, Stripe webhook, fleet, homeserver,
// backup, storage-measurement, upkeep and promise-check benchmarks, printed as tables and written to
// bench-results/latest.json. Ratios are the headline; absolute numbers depend
// on the machine, printed first. The HTTP and fleet benchmarks share one dev
// server (Worker + Stripe emulator, --no-agent: no local berth-agent beside it),
// started after the KDF one; the fleet benchmark comes after them, as it
// restarts that server for its reconnect storm. The homeserver benchmark runs
// on a dev server of its own with the local agent and Caddy (it needs Docker
// Engine, Caddy and the images, as root); backups, storage and the storage quota (root: loop
// devices) run in Node; upkeep and the promise checks run the agent's handlers against Docker Engine. The migration
// benchmark runs first, on a dev server of its own with two local hosts (the same needs as the
// homeserver one); `npm run bench -- migration` runs it alone. The density benchmark fills the
// machine with Starter homeservers under a light load: a short fill in the whole run, the whole
// fill (with the idle comparison) as `npm run bench -- density`. `npm run bench -- backup` runs the
// backup benchmark alone.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startDevServer } from "./dev-server.mjs";
import { backupReport, benchBackup } from "./backup.mjs";
import { benchFleet } from "./fleet.mjs";
import { benchWorkerBundle } from "./worker-bundle.mjs";
import { benchHomeservers } from "./homeservers.mjs";
import { benchKdf } from "./kdf.mjs";
import { benchMigration, migrationReport } from "./migration.mjs";
import { benchQuota } from "./quota.mjs";
import { machineInfo, root, round, table } from "./lib.mjs";
import { HOST_RESERVED_MEMORY_MIB, MEMORY_HEADROOM_MIB, MEMORY_OVERCOMMIT } from "../worker/servers/admission.ts";
import { benchSessionCheck } from "./session-check.mjs";
import { benchStorage } from "./storage.mjs";
import { benchChecks, checksReport } from "./checks.mjs";
import { benchDensity, benchIdleMemory, densityRatios, densityReport } from "./density.mjs";
import { benchUpkeep, upkeepReport } from "./upkeep.mjs";
import { benchWebhooks } from "./webhooks.mjs";

/** The benchmarks `npm run bench -- <name>` runs alone. */
const ALONE = ["migration", "density", "backup"];

const only = process.argv.slice(2);
/** The whole fill adds a homeserver every minute or two, up to about 40. */
const TIME_BUDGET_MS = only[0] === "density" ? 6_000_000 : 2_400_000;
if (only.length > 1 || (only.length === 1 && !ALONE.includes(only[0]))) {
  console.error(`usage: npm run bench [-- ${ALONE.join(" | ")}]`);
  process.exit(2);
}

// process.exit runs the 'exit' handlers, which stop the dev server.
setTimeout(() => {
  console.error(`bench: over the ${TIME_BUDGET_MS / 1000} s budget, giving up`);
  process.exit(2);
}, TIME_BUDGET_MS).unref();
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(130));

const started = Date.now();
const machine = machineInfo();
console.log(`Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.platform}`);
console.log(`Node ${machine.node}, wrangler ${machine.wrangler}, workerd ${machine.workerd}, miniflare ${machine.miniflare}`);

/** bench-results/latest.json: what this run measured. */
function writeResults(results) {
  mkdirSync(join(root, "bench-results"), { recursive: true });
  writeFileSync(join(root, "bench-results", "latest.json"), `${JSON.stringify(results, null, 2)}\n`);
  console.log(`\nWrote bench-results/latest.json in ${round(results.durationMs / 1000, 1)} s`);
}

if (only[0] === "density") {
  const idle = await benchIdleMemory();
  const density = await benchDensity();
  console.log(`\n${densityReport(density, idle)}`);
  console.log(`\nRatios\n${table(["ratio", "value"], densityRatios(density, idle.defaults.pairMiB))}`);
  writeResults({ date: new Date().toISOString(), durationMs: Date.now() - started, machine, only, idle, density });
  process.exit(0);
}

if (only[0] === "backup") {
  const backup = await benchBackup();
  console.log(`\n${backupReport(backup)}`);
  writeResults({ date: new Date().toISOString(), durationMs: Date.now() - started, machine, only, backup });
  process.exit(0);
}

const migration = await benchMigration();
console.log(`\n${migrationReport(migration)}`);
if (only.length) {
  writeResults({ date: new Date().toISOString(), durationMs: Date.now() - started, machine, only, migration });
  process.exit(0);
}

const kdf = await benchKdf();
const { ln, r, p } = kdf.params;
const vsNode = (ms) => `${round(ms / kdf.nodeNative.msPerHash)}x`;
const kdfRows = [
  ["workerd node:crypto (product)", kdf.workerdNative.msPerHashInside, kdf.workerdNative.msPerHashWall],
  ["Node crypto.scrypt", kdf.nodeNative.msPerHash],
  ...(kdf.workerdPortable
    ? [
        ["workerd @noble/hashes", kdf.workerdPortable.msPerHashInside, kdf.workerdPortable.msPerHashWall],
        ["Node @noble/hashes", kdf.nodePortable.msPerHash],
      ]
    : []),
];
console.log(`\nKDF: scrypt N=2^${ln} r=${r} p=${p}, ${kdf.count} hashes each (${kdf.portableCount} for pure JS) after a warm-up`);
console.log(
  table(
    ["implementation", "ms/hash", "wall ms/hash", "vs Node native"],
    kdfRows.map(([name, ms, wall]) => [name, round(ms, 1), wall === undefined ? "" : round(wall, 1), vsNode(ms)]),
  ),
);
console.log("ms/hash is timed inside the Worker for workerd rows; wall is Node's clock around dispatchFetch.");

const server = await startDevServer({ noAgent: true });
let session, webhooks, fleet;
try {
  session = await benchSessionCheck({ server });
  webhooks = await benchWebhooks({ server });
  fleet = await benchFleet({ server });
} finally {
  await server.stop();
}
console.log(
  `\nSession check on wrangler dev: ${session.concurrency} in flight, ${session.rounds} alternating rounds, after ${session.warmup} warm-up requests each`,
);
console.log(
  table(
    ["route", "requests", "req/s", "p50 ms", "p99 ms"],
    [
      ["GET /api/health", session.health],
      ["GET /api/me (session)", session.me],
    ].map(([name, s]) => [name, s.requests, round(s.reqPerSec, 0), round(s.p50Ms, 1), round(s.p99Ms, 1)]),
  ),
);

console.log(
  `\nStripe webhooks on wrangler dev: signed invoice.paid events (${webhooks.payloadBytes} bytes) for a real paid invoice, ` +
    `${webhooks.concurrency} in flight, ${webhooks.rounds} rounds of health / new / same events again, ` +
    `after ${webhooks.warmup.events} warm-up events (new and duplicate) and ${webhooks.warmup.health} health requests`,
);
console.log(
  table(
    ["route", "requests", "req/s", "p50 ms", "p99 ms", "mean ms"],
    [
      ["GET /api/health", webhooks.health],
      ["POST /webhooks/stripe, new event", webhooks.fresh],
      ["POST /webhooks/stripe, duplicate", webhooks.duplicate],
    ].map(([name, s]) => [name, s.requests, round(s.reqPerSec, 0), round(s.p50Ms, 1), round(s.p99Ms, 1), round(s.meanMs, 1)]),
  ),
);
console.log("A new event is verified, recorded, and re-reads the invoice and subscription from the emulator; a duplicate is verified and found.");

const fmt = (ms, digits = 1) => round(ms, digits);
const count = (n) => n.toLocaleString("en-US");
console.log(
  `\nFleet on wrangler dev: simulated agents in this process, each its own enrolled host (own Ed25519 key, join token, ` +
    `Durable Object and WebSocket speaking the agent protocol); the fleet grows to each size in turn`,
);
console.log(
  table(
    ["hosts", "enrolled", "enroll/s", "enroll p50 ms", "enroll p99 ms", "dial→welcome p50 ms", "dial→welcome p99 ms"],
    fleet.sizes.map(({ hosts, growth: g }) => [
      count(hosts),
      g.added,
      round(g.enrollPerSec, 0),
      fmt(g.enroll.p50Ms),
      fmt(g.enroll.p99Ms),
      fmt(g.connect.p50Ms),
      fmt(g.connect.p99Ms),
    ]),
  ),
);
console.log(
  `Each enrollment is POST /dev/join-token, then POST /api/agent/enroll with its own cf-connecting-ip (wrangler dev passes a ` +
    `client-supplied one through, so the enroll_ip limit, 30/hour per address, is not hit); ${fleet.enrollConcurrency} at a time. ` +
    "Dial→welcome: from dialling the WebSocket to the welcome (challenge, signed hello, welcome).",
);
const [first] = fleet.sizes;
console.log(
  `\nJob dispatch: POST /api/admin/hosts/:id/jobs {"kind":"noop"} (operator session), ${first.dispatch.count} jobs per size, ` +
    `${first.concurrency} in flight, spread over the hosts, ${first.rounds} rounds alternating with the echo, after ${first.warmupJobs} warm-up jobs`,
);
console.log(
  table(
    [
      "hosts",
      "hosts used",
      "jobs/s",
      "POST→ack p50 ms",
      "POST→ack p99 ms",
      "POST→202 p50 ms",
      "echo p50 ms",
      "echo p99 ms",
      "echo →200 p50 ms",
      "repeat deliveries",
    ],
    fleet.sizes.map((s) => [
      count(s.hosts),
      s.hostsUsed,
      round(s.dispatch.jobsPerSec, 0),
      fmt(s.dispatch.p50Ms),
      fmt(s.dispatch.p99Ms),
      fmt(s.response.p50Ms),
      fmt(s.echo.p50Ms, 2),
      fmt(s.echo.p99Ms, 2),
      fmt(s.echoRoundTrip.p50Ms),
      `${s.repeatDeliveries.total} / ${s.jobsSent}`,
    ]),
  ),
);
console.log(
  "POST→ack: from sending the POST to the simulated agent having the job message and its job.ack sent (timed in this process).\n" +
    "Echo (the baseline): POST /dev/hosts/:id/echo (development only), the same transport without our bookkeeping: the request,\n" +
    "the host's Durable Object sending one message over the agent's WebSocket, no D1; timed as the job, to the simulated agent\n" +
    "having it and its reply sent (echo →200: until the reply came back through the object and the Worker).\n" +
    "Repeat deliveries: job messages for a job the agent already had (same attempt number: deliveries that raced), per jobs sent.",
);

const { idleFleet, realAgent: agent, storm } = fleet;
console.log(
  `\nIdle, ${round(idleFleet.windowS, 0)} s: the dev server's processes (workerd, wrangler, emulator) used ` +
    `${fmt(idleFleet.serverPercent)}% of one core (workerd ${fmt(idleFleet.workerdPercent)}%) with ${count(idleFleet.hosts)} simulated hosts connected ` +
    `(this load process: ${fmt(idleFleet.loadProcessPercent)}%); ${fmt(agent.server.serverPercent)}% (workerd ${fmt(agent.server.workerdPercent)}%) ` +
    `with only the real agent connected (${round(agent.windowS, 0)} s).`,
);

console.log(
  `\nReconnect storm: ${count(storm.agents)} simulated agents connected; the dev server's whole process group stopped ` +
    `(${fmt(storm.stopMs / 1000)} s) and started again on the same port and state. The agents redial with full-jitter ` +
    "exponential backoff, 1 s base, 60 s cap.",
);
console.log(
  table(
    ["measure", "s"],
    [
      ["per agent, connection lost → welcomed again, p50", fmt(storm.perAgent.p50Ms / 1000)],
      ["per agent, p99", fmt(storm.perAgent.p99Ms / 1000)],
      ["per agent, max", fmt(storm.perAgent.maxMs / 1000)],
      ["from the stop: first WebSocket upgrade accepted", fmt(storm.firstUpgradeMs / 1000)],
      ["from the stop: first agent welcomed again", fmt(storm.firstWelcomeMs / 1000)],
      ["from the stop: /api/health answered within 2 s", fmt((storm.stopMs + storm.startMs) / 1000)],
      ["from the stop: all welcomed again (total)", fmt(storm.totalMs / 1000)],
      ["from the stop to each agent welcomed again, p50", fmt(storm.fromStop.p50Ms / 1000)],
      ["from the stop to each agent welcomed again, p90", fmt(storm.fromStop.p90Ms / 1000)],
      ["from the stop to each agent welcomed again, p99", fmt(storm.fromStop.p99Ms / 1000)],
      ["for scale: the same restart with no agents, until /api/health answered", fmt(storm.plainRestartMs / 1000)],
    ],
  ),
);
console.log(
  `Busiest second: ${storm.peakWelcomesPerSec} agents welcomed. Dials per agent: mean ${fmt(storm.dials.mean)}, max ${storm.dials.max}. Closes: ` +
    Object.entries(storm.closes)
      .map(([what, n]) => `${what}: ${n}`)
      .join("; ") +
    `. Afterwards ${storm.jobsAfter} jobs to ${storm.jobsAfter} hosts were delivered and succeeded.`,
);
console.log(
  `Agents welcomed again, by time from the stop: ${Object.entries(storm.fromStopHistogram)
    .map(([span, n]) => `${span}: ${n}`)
    .join("; ")}.`,
);

const bundle = await benchWorkerBundle();
console.log(
  `\nThe Worker's bundle (wrangler deploy --dry-run --outdir, minified): ${bundle.modules.join(", ")}, ${count(bundle.bytes)} bytes, ` +
    `${count(bundle.gzipBytes)} gzipped. Startup (wrangler check startup, minified; the global scope's CPU profile in a local ` +
    `workerd, busy time): median ${fmt(bundle.startupMedianMs)} ms of ${bundle.runs} runs (${bundle.startupMs.map((ms) => fmt(ms)).join(", ")}).`,
);

console.log(
  `\nReal berth-agent (node agent/main.ts run --allow-unencrypted-data-root), connected and idle for ${round(agent.windowS, 0)} s ` +
    `after ${round(agent.settleMs / 1000, 0)} s to settle`,
);
console.log(
  table(
    ["measure", "value"],
    [
      ["RSS at the end, MiB (VmRSS)", fmt(agent.rssMiB)],
      ["RSS max while idle, MiB", fmt(agent.rssMaxMiB)],
      ["RSS peak since start, MiB (VmHWM)", fmt(agent.rssPeakMiB)],
      ["CPU, % of one core (utime+stime)", fmt(agent.cpuPercent, 2)],
      ["CPU of waited-for children, % of one core", fmt(agent.childCpuPercent, 2)],
      ["CPU seconds in the window", fmt(agent.cpuSeconds, 2)],
    ],
  ),
);
if (agent.warnings.length) console.log(`Agent warnings while idle: ${[...new Set(agent.warnings)].join("; ")}`);

const homeservers = await benchHomeservers();
const { creation, memory } = homeservers;
console.log(
  `\nHomeservers on npm run dev (local agent, Caddy with its local CA, images present): ${homeservers.count} paying customers ` +
    "each create one; from POST /api/servers to /_matrix/client/versions answering over HTTPS. Baseline: the same images started " +
    "by hand (docker run, Synapse's own generated config, PostgreSQL's defaults), from the first docker run to /_matrix/client/versions over HTTP.",
);
console.log(
  table(
    ["measure", "s"],
    [
      ["POST /api/servers → HTTPS versions, median", fmt(creation.medianMs / 1000)],
      ["  min / max", `${fmt(creation.minMs / 1000)} / ${fmt(creation.maxMs / 1000)}`],
      ["baseline: docker run by hand → HTTP versions", fmt(homeservers.defaultsStartMs / 1000)],
    ],
  ),
);
console.log(
  `\nIdle memory after ${homeservers.idleSeconds} s, median of ${homeservers.samples} docker stats samples (page cache excluded); ` +
    "ours: the median over the servers above; defaults: the hand-started pair",
);
console.log(
  table(
    ["pair", "PostgreSQL MiB", "Synapse MiB", "pair MiB", "idle pairs in 8 GiB"],
    [
      ["ours (tuned)", memory.tuned, homeservers.fitIn8GiB.byIdleMemoryTuned],
      ["Synapse's defaults", memory.defaults, homeservers.fitIn8GiB.byIdleMemoryDefaults],
    ].map(([name, m, fit]) => [name, fmt(m.postgresMiB), fmt(m.synapseMiB), fmt(m.pairMiB), fit]),
  ),
);
console.log(
  `Idle pairs in 8 GiB divides 8 GiB by the idle pair. Placement admits each homeserver by its measured peak plus ${MEMORY_HEADROOM_MIB} MiB ` +
    `of headroom within the host's memory less ${HOST_RESERVED_MEMORY_MIB} MiB, its plans' limits (starter: 1 GiB) adding up to at most ` +
    `${MEMORY_OVERCOMMIT}× that: ${homeservers.fitIn8GiB.admittedStarters} idle starters (ours) on an 8 GiB host once measured (7 when it reserved each plan's limit).`,
);

const { pages } = homeservers;
console.log(
  `\nDashboard pages on npm run dev (a customer with a running server), ${pages.rounds} sequential rounds of each, fresh connections; ` +
    "transfer counts the HTML and the same-origin assets it links, gzipped",
);
console.log(
  table(
    ["page", "TTFB p50 ms", "total p50 ms", "HTML bytes", "transfer gzip bytes", "JS gzip bytes (budget 100 KB)"],
    [
      ["GET /servers (dashboard)", pages.dashboard],
      ["GET /servers/:id (server page)", pages.server],
      ["GET /api/health (baseline)", pages.baseline],
    ].map(([name, p]) => [name, fmt(p.ttfbMedianMs), fmt(p.totalMedianMs), p.htmlBytes, p.transferGzipBytes, p.jsGzipBytes]),
  ),
);

const backup = await benchBackup();
console.log(`\n${backupReport(backup)}`);

const storage = await benchStorage();
console.log(
  `\nStorage measurement (agent/storage.ts) of a media store of ${count(storage.files)} files (${round(storage.bytes / 2 ** 20, 1)} MiB), median of ${storage.rounds}: ` +
    `${round(storage.agentMedianMs)} ms vs du -s ${round(storage.duMedianMs)} ms; the agent's event loop waited ${round(storage.longestEventLoopStallMs, 1)} ms at most`,
);

const upkeep = await benchUpkeep();
console.log(`\n${upkeepReport(upkeep)}`);
const checks = await benchChecks();
console.log(`\n${checksReport(checks)}`);
const density = await benchDensity({ maxServers: 4, windowSeconds: 30 });
console.log(`\n${densityReport(density)}`);
const quota = await benchQuota();
console.log(
  `\nStorage quota (agent/homeserver/storage-quota.ts: a ${quota.quotaMiB} MiB ext4 image on a loop device) vs a plain directory of the data root ` +
    `beside the image, rounds alternating, median of ${quota.rounds}`,
);
console.log(
  table(
    ["load", "plain MiB/s", "quota MiB/s", "throughput, quota / plain"],
    [
      [`${quota.mixed.files} files of 4 KiB–1 MiB (${round(quota.mixed.bytes / 2 ** 20, 0)} MiB), each fsync'd`, quota.mixed],
      [`one ${round(quota.sequential.bytes / 2 ** 20, 0)} MiB file in 1 MiB writes, fsync'd at its end`, quota.sequential],
    ].map(([name, f]) => [name, round(f.plainMiBPerSec, 1), round(f.quotaMiBPerSec, 1), round(f.throughputRatio)]),
  ),
);

const spread = (values) => `${round(Math.min(...values))}–${round(Math.max(...values))}`;
console.log("\nRatios");
console.log(
  table(
    ["ratio", "value", "per round"],
    [
      ["KDF ms/hash, workerd / Node native", round(kdf.ratios.workerdOverNode), spread(kdf.ratios.workerdOverNodeByRound)],
      ["KDF ms/hash, workerd wall / Node native", round(kdf.ratios.workerdWallOverNode)],
      ...(kdf.workerdPortable
        ? [
            ["KDF ms/hash, pure JS / native, in workerd", round(kdf.ratios.workerdPortableOverWorkerdNative)],
            ["KDF ms/hash, pure JS / native, in Node", round(kdf.ratios.nodePortableOverNodeNative)],
          ]
        : []),
      ["req/s, /api/me / /api/health", round(session.ratios.meOverHealthThroughput), spread(session.ratios.meOverHealthThroughputByRound)],
      ["p50 latency, /api/me / /api/health", round(session.ratios.meOverHealthP50)],
      ["events/s, new webhook / /api/health req/s", round(webhooks.ratios.freshOverHealthThroughput), spread(webhooks.ratios.freshOverHealthThroughputByRound)],
      [
        "events/s, duplicate webhook / /api/health req/s",
        round(webhooks.ratios.duplicateOverHealthThroughput),
        spread(webhooks.ratios.duplicateOverHealthThroughputByRound),
      ],
      ["events/s, new / duplicate webhook", round(webhooks.ratios.freshOverDuplicateThroughput), spread(webhooks.ratios.freshOverDuplicateThroughputByRound)],
      ["p50 latency, new / duplicate webhook", round(webhooks.ratios.freshOverDuplicateP50)],
      ["mean latency, new / duplicate webhook", round(webhooks.ratios.freshOverDuplicateMean)],
      ...fleet.sizes.flatMap((s) => [
        [
          `job POST→ack p50 / echo p50 (goal ≤ 2), ${count(s.hosts)} host${s.hosts === 1 ? "" : "s"}`,
          round(s.ratios.p50, 2),
          spread(s.ratios.p50ByRound.map((r) => round(r, 2))),
        ],
        [`job POST→ack p99 / echo p99, ${count(s.hosts)} host${s.hosts === 1 ? "" : "s"}`, round(s.ratios.p99, 1)],
      ]),
      [
        `job POST→ack p50, ${count(fleet.sizes.at(-1).hosts)} hosts / ${count(first.hosts)} host${first.hosts === 1 ? "" : "s"}`,
        round(fleet.sizes.at(-1).dispatch.p50Ms / first.dispatch.p50Ms),
      ],
      [`storm: all ${count(storm.agents)} welcomed again / restart with no agents`, round(storm.totalMs / storm.plainRestartMs)],
      [`storm: all ${count(storm.agents)} welcomed again / the 30 s goal`, round(storm.totalMs / 30_000)],
      ["Worker bundle gzip bytes / 3 MB (Workers Free limit)", round(bundle.gzipBytes / 3_000_000, 3)],
      ["Worker startup, median busy ms / 1 s (Workers limit)", round(bundle.startupMedianMs / 1000, 3)],
      ["move downtime (lastMove) / backup + restore time, medians", round(migration.ratios.moveDowntimeOverBackupRestore)],
      ["homeserver: POST → HTTPS versions / docker run by hand (median)", round(homeservers.ratios.creationOverDefaultsStart)],
      ["homeserver idle memory: tuned / Synapse's defaults", round(homeservers.ratios.idleMemoryTunedOverDefaults)],
      ["TTFB p50, dashboard / /api/health", round(pages.dashboard.ttfbMedianMs / pages.baseline.ttfbMedianMs)],
      ["TTFB p50, server page / /api/health", round(pages.server.ttfbMedianMs / pages.baseline.ttfbMedianMs)],
      ["JS gzip bytes, server page / 100 KB budget", round(pages.server.jsGzipBytes / 102_400, 3)],
      [
        "backup MiB/s, agent / shell (tar | zstd | age), both uploading, median",
        round(backup.ratios.agentOverShell),
        spread(backup.ratios.agentOverShellByRound),
      ],
      ["backup CPU time, agent / shell, both uploading, median", round(backup.ratios.agentOverShellCpu), spread(backup.ratios.agentOverShellCpuByRound)],
      ["backup MiB/s, pure-JS age / agent", round(backup.ratios.pureJsOverAgent)],
      ["storage measurement time, agent / du -s", round(storage.ratios.agentOverDu)],
      ["upkeep: state_groups_state rows after / before", round(upkeep.ratios.rowsAfterOverBefore)],
      ["upkeep: database bytes after / before", round(upkeep.ratios.databaseAfterOverBefore)],
      ["daily host checks / a backup of the same server, wall", round(checks.ratios.checksOverSmallBackup)],
      ...densityRatios(density, homeservers.memory.defaults.pairMiB),
      [
        "restore verification / its backup, wall (small, large)",
        `${round(checks.ratios.verifyOverBackupSmall)}, ${round(checks.ratios.verifyOverBackupLarge)}`,
      ],
      [
        "write MiB/s into a storage quota / the plain data root, mixed files fsync'd",
        round(quota.mixed.throughputRatio),
        spread(quota.mixed.throughputRatioByRound),
      ],
      [
        "write MiB/s into a storage quota / the plain data root, sequential",
        round(quota.sequential.throughputRatio),
        spread(quota.sequential.throughputRatioByRound),
      ],
    ],
  ),
);

writeResults({
  date: new Date().toISOString(),
  durationMs: Date.now() - started,
  machine,
  migration,
  kdf,
  sessionCheck: session,
  webhooks,
  fleet,
  bundle,
  homeservers,
  backup,
  storage,
  upkeep,
  checks,
  density,
  quota,
});
