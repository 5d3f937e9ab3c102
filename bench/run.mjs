// `npm run bench`: the KDF, session-check and Stripe webhook benchmarks, printed
// as tables and written to bench-results/latest.json. Ratios are the headline;
// absolute numbers depend on the machine, printed first. The two HTTP benchmarks
// share one dev server (Worker + Stripe emulator), started after the KDF one.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startDevServer } from "./dev-server.mjs";
import { benchKdf } from "./kdf.mjs";
import { machineInfo, root, round, table } from "./lib.mjs";
import { benchSessionCheck } from "./session-check.mjs";
import { benchWebhooks } from "./webhooks.mjs";

const TIME_BUDGET_MS = 180_000;

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

const server = await startDevServer();
let session, webhooks;
try {
  session = await benchSessionCheck({ server });
  webhooks = await benchWebhooks({ server });
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
      ["events/s, duplicate webhook / /api/health req/s", round(webhooks.ratios.duplicateOverHealthThroughput), spread(webhooks.ratios.duplicateOverHealthThroughputByRound)],
      ["events/s, new / duplicate webhook", round(webhooks.ratios.freshOverDuplicateThroughput), spread(webhooks.ratios.freshOverDuplicateThroughputByRound)],
      ["p50 latency, new / duplicate webhook", round(webhooks.ratios.freshOverDuplicateP50)],
      ["mean latency, new / duplicate webhook", round(webhooks.ratios.freshOverDuplicateMean)],
    ],
  ),
);

const results = { date: new Date().toISOString(), durationMs: Date.now() - started, machine, kdf, sessionCheck: session, webhooks };
mkdirSync(join(root, "bench-results"), { recursive: true });
writeFileSync(join(root, "bench-results", "latest.json"), `${JSON.stringify(results, null, 2)}\n`);
console.log(`\nWrote bench-results/latest.json in ${round(results.durationMs / 1000, 1)} s`);
