import { execFileSync } from "node:child_process";
import { linkSync, mkdirSync, renameSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { usageSampleSchema } from "../../protocol/messages.ts";
import { ensureStorageQuota, removeStorageQuota } from "../../agent/homeserver/storage-quota.ts";
import { homeserverPaths, homeserversDir } from "../../agent/homeserver/names.ts";
import { sampler } from "../../agent/metrics.ts";
import { StorageMeter, allocatedBytes } from "../../agent/storage.ts";
import { captureLog, onCleanup, runCleanups, tempDir } from "./helpers.ts";

afterEach(runCleanups);

const MiB = 1024 * 1024;
const SERVER_A = "0b5d3c1e-8a1f-4c56-9d3e-111111111111";
const SERVER_B = "0b5d3c1e-8a1f-4c56-9d3e-222222222222";

/** What `du` says: allocated bytes, each hard-linked file once, symlinks not followed. */
const du = (path: string) => Number(execFileSync("du", ["-s", "--block-size=1", path], { encoding: "utf8" }).split("\t")[0]);

function homeserverDir(root: string, serverId: string, mediaMiB: number): string {
  const dir = join(root, serverId);
  mkdirSync(join(dir, "media", "local_content"), { recursive: true });
  mkdirSync(join(dir, "postgres"), { recursive: true });
  writeFileSync(join(dir, "media", "local_content", "upload"), Buffer.alloc(mediaMiB * MiB, 7));
  writeFileSync(join(dir, "postgres", "PG_VERSION"), "15\n");
  return dir;
}

describe("a homeserver's storage, counted as du counts it", () => {
  it("allocated blocks, not apparent sizes; hard links once; symlinks not followed", async () => {
    const root = tempDir();
    const dir = homeserverDir(root, SERVER_A, 3);
    // Sparse: 64 MiB long, nothing written, nothing allocated.
    writeFileSync(join(dir, "sparse"), "");
    truncateSync(join(dir, "sparse"), 64 * MiB);
    linkSync(join(dir, "media", "local_content", "upload"), join(dir, "media", "hard-link"));
    const outside = join(tempDir(), "elsewhere");
    writeFileSync(outside, Buffer.alloc(8 * MiB, 1));
    symlinkSync(outside, join(dir, "media", "link-out"));

    const bytes = await allocatedBytes(dir);
    expect(bytes).toBe(du(dir));
    expect(bytes).toBeGreaterThanOrEqual(3 * MiB);
    expect(bytes).toBeLessThan(4 * MiB);
  });

  it("a directory swapped for a link mid-walk is counted as it was, not where the link points", async () => {
    const root = tempDir();
    const dir = join(root, SERVER_A);
    // a/ has enough entries for the walk to yield to the event loop inside it, after entering the server's directory.
    mkdirSync(join(dir, "a"), { recursive: true });
    for (let i = 0; i < 600; i++) writeFileSync(join(dir, "a", `f${i}`), "x");
    mkdirSync(join(dir, "b"));
    writeFileSync(join(dir, "b", "upload"), Buffer.alloc(MiB, 1));
    const before = du(dir);
    const elsewhere = tempDir();
    mkdirSync(join(elsewhere, "b"));
    writeFileSync(join(elsewhere, "b", "someone-elses"), Buffer.alloc(16 * MiB, 2));
    // Runs at the walk's first yield: the server's directory moves away and a link to elsewhere takes its name.
    setImmediate(() => {
      renameSync(dir, join(root, "moved"));
      symlinkSync(elsewhere, dir);
    });
    expect(await allocatedBytes(dir)).toBe(before);
  });

  it("a directory that is gone counts as nothing", async () => {
    expect(await allocatedBytes(join(tempDir(), "gone"))).toBe(0);
  });

  it("the meter measures each homeserver's directory, and forgets one that was removed", async () => {
    const root = tempDir();
    homeserverDir(root, SERVER_A, 2);
    const removed = homeserverDir(root, SERVER_B, 1);
    const { log, has } = captureLog();
    const meter = new StorageMeter({ workloadsDir: root, everyMs: 60_000, log });
    expect(meter.latest()).toEqual([]);

    await meter.measure();
    expect(meter.latest()).toEqual([
      { workloadId: SERVER_A, usedBytes: du(join(root, SERVER_A)) },
      { workloadId: SERVER_B, usedBytes: du(removed) },
    ]);

    rmSync(removed, { recursive: true });
    await meter.measure();
    expect(meter.latest().map((figure) => figure.workloadId)).toEqual([SERVER_A]);
    expect(has("storage measurement failed")).toBe(false);
  });

  it("a host without homeservers yet reports none, without a warning", async () => {
    const { log, lines } = captureLog();
    const meter = new StorageMeter({ workloadsDir: join(tempDir(), "homeservers"), everyMs: 60_000, log });
    await meter.measure();
    expect(meter.latest()).toEqual([]);
    expect(lines).toEqual([]);
  });

  it("every usage sample carries the latest figures", async () => {
    const root = tempDir();
    homeserverDir(root, SERVER_A, 1);
    const meter = new StorageMeter({ workloadsDir: root, everyMs: 60_000, log: captureLog().log });
    await meter.measure();
    const host = { cpuLoadPercent: 1, memoryUsedBytes: 1, memoryAvailableBytes: 1, disks: [], networkRxBytes: 0, networkTxBytes: 0 };
    const sample = usageSampleSchema.parse(
      await sampler(
        async () => host,
        async () => [],
        () => meter.latest(),
      )(),
    );
    expect(sample.storage).toEqual([{ workloadId: SERVER_A, usedBytes: du(join(root, SERVER_A)) }]);
  });

  it("a homeserver on its storage quota also reports the quota's figures as df counts them; unmounted, no quota", async () => {
    const dataRoot = tempDir("berth-quota-meter-");
    const paths = homeserverPaths(dataRoot, SERVER_A);
    const quota = { image: paths.storageImage, mountpoint: paths.root };
    // Registered after tempDir: cleanups run last first, so the quota is unmounted before its directory is removed.
    onCleanup(() => removeStorageQuota(quota));
    await ensureStorageQuota(quota, 64 * MiB, (change) => change());
    writeFileSync(join(paths.root, "upload"), Buffer.alloc(8 * MiB, 7));
    execFileSync("sync", ["--file-system", paths.root]);
    const [size, used] = execFileSync("df", ["--block-size=1", "--output=size,used", paths.root], { encoding: "utf8" })
      .trim()
      .split("\n")[1]!
      .trim()
      .split(/\s+/)
      .map(Number);

    const meter = new StorageMeter({ workloadsDir: homeserversDir(dataRoot), everyMs: 60_000, log: captureLog().log });
    await meter.measure();
    expect(meter.latest()).toEqual([{ workloadId: SERVER_A, usedBytes: du(paths.root), quota: { usedBytes: used, quotaBytes: size } }]);
    // The filesystem's usable bytes: under the 64 MiB image (journal, inode tables), over the 8 MiB written.
    expect(size).toBeLessThan(64 * MiB);
    expect(size).toBeGreaterThan(56 * MiB);
    expect(used).toBeGreaterThanOrEqual(8 * MiB);

    // Unmounted (as for an offline resize): the directory left is the host's disk, which is no quota to report.
    execFileSync("umount", [paths.root]);
    await meter.measure();
    expect(meter.latest()).toEqual([{ workloadId: SERVER_A, usedBytes: du(paths.root) }]);
  });
});
