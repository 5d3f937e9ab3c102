// How long the agent takes to measure one homeserver's storage (agent/storage.ts, the walk it
// does every 5 minutes and when homeservers come or go) against `du -s` on the same tree: a
// media store shaped like Synapse's (local_content/ab/cd/<id>), warm page cache for both; and the
// longest the walk keeps the agent's event loop (its WebSocket, its jobs) waiting.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { allocatedBytes } from "../agent/storage.ts";
import { percentile } from "./lib.mjs";

const FILES = 20_000;
const ROUNDS = 5;

function mediaStore(dir) {
  const content = randomBytes(2048);
  for (let i = 0; i < FILES; i++) {
    const id = randomBytes(12).toString("hex");
    const parent = join(dir, "media", "local_content", id.slice(0, 2), id.slice(2, 4));
    mkdirSync(parent, { recursive: true });
    writeFileSync(join(parent, id.slice(4)), content);
  }
}

const median = (values) =>
  percentile(
    [...values].sort((a, b) => a - b),
    50,
  );

export async function benchStorage() {
  const dir = mkdtempSync(join(tmpdir(), "berth-bench-storage-"));
  try {
    mediaStore(dir);
    const du = () => Number(execFileSync("du", ["-s", "--block-size=1", dir], { encoding: "utf8" }).split("\t")[0]);
    const expected = du();
    const agentMs = [];
    const duMs = [];
    // The longest gap between ticks of a 1 ms timer while the agent walks (du runs in a child process).
    let lastTick = performance.now();
    let longestStallMs = 0;
    const ticker = setInterval(() => {
      const now = performance.now();
      longestStallMs = Math.max(longestStallMs, now - lastTick);
      lastTick = now;
    }, 1);
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const started = performance.now();
        lastTick = started;
        const measured = await allocatedBytes(dir);
        agentMs.push(performance.now() - started);
        if (measured !== expected) throw new Error(`storage bench: the agent counted ${measured} bytes, du ${expected}`);
      }
    } finally {
      clearInterval(ticker);
    }
    for (let round = 0; round < ROUNDS; round++) {
      const started = performance.now();
      du();
      duMs.push(performance.now() - started);
    }
    return {
      files: FILES,
      rounds: ROUNDS,
      bytes: expected,
      agentMedianMs: median(agentMs),
      duMedianMs: median(duMs),
      longestEventLoopStallMs: longestStallMs,
      ratios: { agentOverDu: median(agentMs) / median(duMs) },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
