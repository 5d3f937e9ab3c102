// What a homeserver's storage quota costs in write throughput: the same write-heavy loads into the
// quota's filesystem (an ext4 image mounted through a loop device, made and mounted by
// agent/homeserver/storage-quota.ts as for a homeserver) and into a plain directory of the data
// root beside it, where the image itself lives. Two loads: many files of mixed sizes, each
// fsync'd (what Synapse's media store and PostgreSQL's WAL do), and one large sequential write
// fsync'd at its end. Rounds alternate between the two places, so that both see the same noise.
// Needs root (mount, loop devices) and mkfs.ext4.
import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { ensureStorageQuota, removeStorageQuota } from "../agent/homeserver/storage-quota.ts";
import { homeserverPaths } from "../agent/homeserver/names.ts";
import { percentile } from "./lib.mjs";

const MiB = 2 ** 20;
const ROUNDS = 5;
const QUOTA_BYTES = 1024 * MiB;
/** 500 files: 200 of 4 KiB (thumbnails, small events), 200 of 64 KiB, 100 of 1 MiB (photos): 113 MiB. */
const MIXED_SIZES = [...Array(200).fill(4096), ...Array(200).fill(64 * 1024), ...Array(100).fill(MiB)];
const SEQUENTIAL_BYTES = 256 * MiB;
const SERVER_ID = "0b5d3c1e-8a1f-4c56-9d3e-bench0000000";

const median = (values) =>
  percentile(
    [...values].sort((a, b) => a - b),
    50,
  );

/** A buffer of pseudo-random bytes (ext4 does not compress, but nothing should be able to cheat with zeros). */
function noise(bytes) {
  const buffer = Buffer.allocUnsafe(bytes);
  let x = 0x9e3779b9;
  for (let i = 0; i < bytes; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buffer.writeUInt32LE(x >>> 0, i);
  }
  return buffer;
}

function writeFile(path, chunk, bytes) {
  const fd = openSync(path, "w");
  try {
    for (let written = 0; written < bytes; written += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - written));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Milliseconds to write the mixed files into a fresh directory under `dir`, each fsync'd, and the directory too. */
function mixedFiles(dir, chunk) {
  const target = join(dir, "mixed");
  rmSync(target, { recursive: true, force: true });
  mkdirSync(target);
  const started = performance.now();
  for (const [i, size] of MIXED_SIZES.entries()) writeFile(join(target, `f${i}`), chunk, size);
  const fd = openSync(target, "r");
  fsyncSync(fd);
  closeSync(fd);
  const ms = performance.now() - started;
  rmSync(target, { recursive: true, force: true });
  return ms;
}

/** Milliseconds to write one large file in 1 MiB writes, fsync'd at the end. */
function sequential(dir, chunk) {
  const path = join(dir, "sequential");
  rmSync(path, { force: true });
  const started = performance.now();
  writeFile(path, chunk, SEQUENTIAL_BYTES);
  const ms = performance.now() - started;
  rmSync(path, { force: true });
  return ms;
}

export async function benchQuota({ dataRoot: parent = tmpdir() } = {}) {
  const dataRoot = mkdtempSync(join(parent, "berth-bench-quota-"));
  const paths = homeserverPaths(dataRoot, SERVER_ID);
  const quota = { image: paths.storageImage, mountpoint: paths.root };
  const plain = join(dataRoot, "plain");
  mkdirSync(plain);
  const chunk = noise(MiB);
  try {
    await ensureStorageQuota(quota, QUOTA_BYTES, (change) => change());
    const times = { mixed: { plain: [], quota: [] }, sequential: { plain: [], quota: [] } };
    // A warm-up of each, not counted: the first writes into a fresh image allocate its blocks on the host.
    for (const dir of [plain, quota.mountpoint]) {
      mixedFiles(dir, chunk);
      sequential(dir, chunk);
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const [place, dir] of round % 2
        ? [
            ["quota", quota.mountpoint],
            ["plain", plain],
          ]
        : [
            ["plain", plain],
            ["quota", quota.mountpoint],
          ]) {
        times.mixed[place].push(mixedFiles(dir, chunk));
        times.sequential[place].push(sequential(dir, chunk));
      }
    }
    const mixedBytes = MIXED_SIZES.reduce((sum, size) => sum + size, 0);
    const mbPerSec = (bytes, ms) => bytes / MiB / (ms / 1000);
    const figures = (bytes, { plain: p, quota: q }) => ({
      plainMedianMs: median(p),
      quotaMedianMs: median(q),
      plainMiBPerSec: mbPerSec(bytes, median(p)),
      quotaMiBPerSec: mbPerSec(bytes, median(q)),
      /** Throughput into the quota over throughput into the plain data root: 1 costs nothing, 0.5 halves it. */
      throughputRatio: median(p) / median(q),
      throughputRatioByRound: p.map((ms, i) => ms / q[i]),
    });
    return {
      rounds: ROUNDS,
      quotaMiB: QUOTA_BYTES / MiB,
      mixed: { files: MIXED_SIZES.length, bytes: mixedBytes, ...figures(mixedBytes, times.mixed) },
      sequential: { bytes: SEQUENTIAL_BYTES, ...figures(SEQUENTIAL_BYTES, times.sequential) },
    };
  } finally {
    await removeStorageQuota(quota);
    rmSync(dataRoot, { recursive: true, force: true });
  }
}
