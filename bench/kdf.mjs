// KDF cost per password hash: the product's scryptKey inside workerd (Miniflare)
// against Node's native crypto.scrypt with the same parameters.
import { scryptAsync } from "@noble/hashes/scrypt.js";
import { scrypt } from "node:crypto";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { root } from "./lib.mjs";

const nodeScrypt = promisify(scrypt);
const PASSWORD = "correct horse battery staple";
// A fixed salt, so every implementation must produce the same key: proof they did the same work.
const SALT = Buffer.alloc(16, 0x5a);
const KEY_BYTES = 32;

async function bundleWorker() {
  const result = await build({
    entryPoints: [fileURLToPath(new URL("./kdf-worker.ts", import.meta.url))],
    absWorkingDir: root,
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    conditions: ["workerd", "worker", "browser"],
    external: ["node:*"],
    logLevel: "silent",
  });
  return result.outputFiles[0].text;
}

async function startWorker() {
  // Miniflare 5 takes each Worker as `{ config }`, its code as a module manifest.
  const mf = new Miniflare({
    workers: [
      {
        config: {
          name: "kdf-bench",
          compatibilityDate: "2026-10-01",
          compatibilityFlags: ["nodejs_compat"],
          manifest: { mainModule: "index.mjs", modules: { "index.mjs": { type: "esm", contents: await bundleWorker() } } },
        },
      },
    ],
  });
  /** Hashes `count` times in the Worker: its own timing (inside) and ours around the request (wall). */
  const hash = async (count, implementation) => {
    const start = performance.now();
    const response = await mf.dispatchFetch("http://bench/", {
      method: "POST",
      body: JSON.stringify({ password: PASSWORD, salt: SALT.toString("hex"), count, implementation }),
    });
    if (!response.ok) throw new Error(`kdf worker answered ${response.status}: ${await response.text()}`);
    const body = await response.json();
    return { ...body, insideMs: body.msPerHash * count, wallMs: performance.now() - start };
  };
  return { hash, dispose: () => mf.dispose() };
}

/** Wall time of `count` sequential hashes in this Node process. */
async function timeNode(count, hash) {
  let key;
  const start = performance.now();
  for (let i = 0; i < count; i++) key = await hash();
  return { ms: performance.now() - start, key: Buffer.from(key).toString("hex") };
}

/**
 * `rounds` alternating batches of workerd and Node hashes (the machine's speed drifts;
 * alternating spreads the drift over both), after one warm-up hash each.
 */
export async function benchKdf({ rounds = 2, perRound = 5, portableCount = 2 } = {}) {
  const worker = await startWorker();
  try {
    const warm = await worker.hash(1); // isolate start-up and first 32 MiB allocation
    if (!warm.nativeScrypt) throw new Error("node:crypto scrypt is missing in workerd: the product would use the JS fallback");
    // Node gets the parameters the product reports, so a change to CURRENT_PARAMS carries over.
    const { ln, r, p } = warm.params;
    const N = 2 ** ln;
    const options = { N, r, p, maxmem: 256 * N * r };
    const hashNative = () => nodeScrypt(PASSWORD, SALT, KEY_BYTES, options);
    await hashNative();

    const keys = new Set();
    const total = { inside: 0, wall: 0, node: 0 };
    const roundRatios = [];
    for (let i = 0; i < rounds; i++) {
      const w = await worker.hash(perRound);
      const n = await timeNode(perRound, hashNative);
      total.inside += w.insideMs;
      total.wall += w.wallMs;
      total.node += n.ms;
      roundRatios.push(w.insideMs / n.ms);
      keys.add(w.key).add(n.key);
    }
    const count = rounds * perRound;
    const workerdNative = { msPerHashInside: total.inside / count, msPerHashWall: total.wall / count };
    const nodeNative = { msPerHash: total.node / count };

    // Context: the pure-JS fallback (@noble/hashes), in both runtimes.
    let workerdPortable = null;
    let nodePortable = null;
    if (portableCount > 0) {
      const w = await worker.hash(portableCount, "portable");
      const n = await timeNode(portableCount, () => scryptAsync(PASSWORD, SALT, { N, r, p, dkLen: KEY_BYTES }));
      keys.add(w.key).add(n.key);
      workerdPortable = { msPerHashInside: w.insideMs / portableCount, msPerHashWall: w.wallMs / portableCount };
      nodePortable = { msPerHash: n.ms / portableCount };
    }
    if (keys.size !== 1) throw new Error(`scrypt implementations disagree: ${[...keys].join(" ")}`);

    return {
      params: { ln, N, r, p, keyBytes: KEY_BYTES, saltBytes: SALT.length, maxmemBytes: options.maxmem },
      count,
      portableCount,
      workerdNative,
      nodeNative,
      workerdPortable,
      nodePortable,
      ratios: {
        workerdOverNode: workerdNative.msPerHashInside / nodeNative.msPerHash,
        workerdOverNodeByRound: roundRatios,
        workerdWallOverNode: workerdNative.msPerHashWall / nodeNative.msPerHash,
        workerdPortableOverWorkerdNative: workerdPortable && workerdPortable.msPerHashInside / workerdNative.msPerHashInside,
        nodePortableOverNodeNative: nodePortable && nodePortable.msPerHash / nodeNative.msPerHash,
      },
    };
  } finally {
    await worker.dispose();
  }
}
