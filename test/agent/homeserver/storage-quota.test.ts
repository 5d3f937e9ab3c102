import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  statSync,
  statfsSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  QuotaTooSmallError,
  ensureStorageQuota,
  mountedDevice,
  removeStorageQuota,
  resizeStorageQuota,
  usedBytes,
  type StorageQuota,
  type WhileStopped,
} from "../../../agent/homeserver/storage-quota.ts";
import { postgresContainer } from "../../../agent/homeserver/containers.ts";
import { HomeserverCore } from "../../../agent/homeserver/core.ts";
import { homeserverNames, homeserverPaths } from "../../../agent/homeserver/names.ts";
import { DockerRuntime } from "../../../agent/runtime/docker.ts";
import { captureLog, onCleanup, runCleanups, tempDir } from "../helpers.ts";
import { homeserverHandlers } from "../../../agent/handlers/homeserver.ts";
import { POSTGRES_IMAGE, TestRun, ensureImages } from "./helpers.ts";

afterEach(runCleanups);

const MiB = 1024 * 1024;
const SERVER_ID = "0b5d3c1e-8a1f-4c56-9d3e-333333333333";

/** A quota laid out as a server's under a fresh data root; whatever a test leaves mounted is unmounted (its loop device released) before the root is deleted. */
function quotaUnderDataRoot(): StorageQuota & { dataRoot: string } {
  const dataRoot = tempDir("berth-quota-test-");
  const paths = homeserverPaths(dataRoot, SERVER_ID);
  return { dataRoot, ...releasedAfterwards({ image: paths.storageImage, mountpoint: paths.root }) };
}

function releasedAfterwards(quota: StorageQuota): StorageQuota {
  onCleanup(() => {
    while (mountedDeviceSync(quota.mountpoint)) execFileSync("umount", [quota.mountpoint]);
    const loops = execFileSync("losetup", ["--noheadings", "--output", "NAME", "--associated", quota.image], { encoding: "utf8" }).trim();
    for (const loop of loops.split("\n").filter(Boolean)) execFileSync("losetup", ["--detach", loop]);
  });
  return quota;
}

function mountedDeviceSync(mountpoint: string): string | undefined {
  try {
    return execFileSync("findmnt", ["--noheadings", "--output", "SOURCE", "--mountpoint", mountpoint], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Writes 1 MiB chunks of random data into `path` until the filesystem refuses one; the error it refused with. */
function fillUntilRefused(path: string, limitMiB: number): { written: number; error: NodeJS.ErrnoException | undefined } {
  const fd = openSync(path, "w");
  const chunk = Buffer.alloc(MiB, 0xa5);
  let written = 0;
  try {
    for (let i = 0; i < limitMiB; i++) {
      try {
        written += writeSync(fd, chunk);
      } catch (error) {
        return { written, error: error as NodeJS.ErrnoException };
      }
    }
    return { written, error: undefined };
  } finally {
    closeSync(fd);
  }
}

/** Nothing runs on the quota's filesystem in these tests: a change that needs it stopped runs at once, and is counted. */
function stoppedCounter(): { whileStopped: WhileStopped; times: () => number } {
  let times = 0;
  return {
    whileStopped: (change) => {
      times++;
      return change();
    },
    times: () => times,
  };
}
const nothingRunning: WhileStopped = (change) => change();

/** Whether this process may resize a mounted ext4 (CAP_SYS_RESOURCE, bit 24): root on a host may; some sandboxes drop it. */
const effectiveCapabilities = BigInt(`0x${/CapEff:\s*([0-9a-f]+)/.exec(readFileSync("/proc/self/status", "utf8"))?.[1] ?? "0"}`);
const canResizeOnline = ((effectiveCapabilities >> 24n) & 1n) === 1n;

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const sizeMiB = (mountpoint: string) => Number(execFileSync("df", ["--output=size", "--block-size=1M", mountpoint], { encoding: "utf8" }).split("\n")[1]);

/** A mounted quota of `quotaMiB` holding one file of `dataMiB`, and that file's digest. */
async function quotaHolding(quotaMiB: number, dataMiB: number) {
  const quota = quotaUnderDataRoot();
  await ensureStorageQuota(quota, quotaMiB * MiB, nothingRunning);
  const file = join(quota.mountpoint, "kept");
  writeFileSync(file, Buffer.alloc(dataMiB * MiB, dataMiB));
  return { quota, file, before: sha256(file) };
}

describe("a homeserver's storage quota: its own filesystem, bounded by the kernel", () => {
  it("writes past the quota fail with ENOSPC inside it; the data root outside takes no more than the image and stays writable", async () => {
    const quota = quotaUnderDataRoot();
    await ensureStorageQuota(quota, 64 * MiB, nothingRunning);
    expect(await mountedDevice(quota.mountpoint)).toMatch(/^\/dev\/loop\d+$/);
    mkdirSync(join(quota.mountpoint, "synapse", "media"), { recursive: true });

    const { written, error } = fillUntilRefused(join(quota.mountpoint, "synapse", "media", "upload"), 200);
    expect(error?.code).toBe("ENOSPC");
    expect(written).toBeGreaterThan(48 * MiB);
    expect(written).toBeLessThanOrEqual(64 * MiB);
    // Full, and another file is refused too.
    expect(() => writeFileSync(join(quota.mountpoint, "more"), Buffer.alloc(MiB))).toThrow(/ENOSPC/);

    // On the host, the image never holds more than the quota, and the data root beside it still takes writes.
    expect(statSync(quota.image).blocks * 512).toBeLessThanOrEqual(64 * MiB);
    writeFileSync(join(quota.dataRoot, "outside"), Buffer.alloc(8 * MiB, 1));
    expect(statSync(join(quota.dataRoot, "outside")).size).toBe(8 * MiB);
  });

  it("grows online where the kernel allows it (else while stopped): the data stays, the new room takes writes", async () => {
    const { quota, file, before } = await quotaHolding(64, 40);
    const device = await mountedDevice(quota.mountpoint);
    const stopped = stoppedCounter();

    const change = await ensureStorageQuota(quota, 128 * MiB, stopped.whileStopped);

    expect(change).toBe(canResizeOnline ? "grown online" : "grown offline");
    expect(stopped.times()).toBe(canResizeOnline ? 0 : 1);
    expect(await mountedDevice(quota.mountpoint)).toMatch(/^\/dev\/loop\d+$/);
    if (canResizeOnline) expect(await mountedDevice(quota.mountpoint)).toBe(device);
    expect(sha256(file)).toBe(before);
    expect(sizeMiB(quota.mountpoint)).toBeGreaterThan(100);
    const { written, error } = fillUntilRefused(join(quota.mountpoint, "rest"), 200);
    expect(error?.code).toBe("ENOSPC");
    expect(written).toBeGreaterThan(60 * MiB);
    expect(usedBytes(quota.mountpoint)).toBeLessThanOrEqual(128 * MiB);
  });

  it("refuses to shrink below the data, saying how much it holds, and changes nothing", async () => {
    const { quota, file, before } = await quotaHolding(128, 90);
    const device = await mountedDevice(quota.mountpoint);
    const stopped = stoppedCounter();

    const refusal = resizeStorageQuota(quota, 64 * MiB, stopped.whileStopped);
    await expect(refusal).rejects.toBeInstanceOf(QuotaTooSmallError);
    await expect(refusal).rejects.toThrow(/uses \d+ MiB: its storage cannot shrink to 64 MiB/);

    expect(stopped.times()).toBe(0);
    expect(statSync(quota.image).size).toBe(128 * MiB);
    expect(await mountedDevice(quota.mountpoint)).toBe(device);
    expect(sha256(file)).toBe(before);
  });

  it("shrinks when the data fits (unmounted, as ext4 requires), keeping the data and the new bound", async () => {
    const { quota, file, before } = await quotaHolding(128, 20);
    const stopped = stoppedCounter();

    expect(await resizeStorageQuota(quota, 64 * MiB, stopped.whileStopped)).toBe("shrunk");

    expect(stopped.times()).toBe(1);
    expect(statSync(quota.image).size).toBe(64 * MiB);
    expect(await mountedDevice(quota.mountpoint)).toMatch(/^\/dev\/loop\d+$/);
    expect(sha256(file)).toBe(before);
    expect(fillUntilRefused(join(quota.mountpoint, "rest"), 200).error?.code).toBe("ENOSPC");
    expect(usedBytes(quota.mountpoint)).toBeLessThanOrEqual(64 * MiB);
  });

  it("is mounted again after a reboot (unmounted, loop device gone) with its data", async () => {
    const quota = quotaUnderDataRoot();
    await ensureStorageQuota(quota, 64 * MiB, nothingRunning);
    writeFileSync(join(quota.mountpoint, "kept"), "before the reboot\n");
    execFileSync("umount", [quota.mountpoint]);
    expect(existsSync(join(quota.mountpoint, "kept"))).toBe(false);

    await ensureStorageQuota(quota, 64 * MiB, nothingRunning);

    expect(readFileSync(join(quota.mountpoint, "kept"), "utf8")).toBe("before the reboot\n");
  });

  it("refuses to mount over a directory that holds data (it would hide it)", async () => {
    const quota = quotaUnderDataRoot();
    mkdirSync(quota.mountpoint, { recursive: true });
    writeFileSync(join(quota.mountpoint, "PG_VERSION"), "15\n");

    await expect(ensureStorageQuota(quota, 64 * MiB, nothingRunning)).rejects.toThrow(
      /holds data outside its storage quota \(PG_VERSION\): refusing to mount over it/,
    );
    expect(await mountedDevice(quota.mountpoint)).toBeUndefined();
    expect(readFileSync(join(quota.mountpoint, "PG_VERSION"), "utf8")).toBe("15\n");
  });

  it("removal unmounts, releases the loop device and deletes the image", async () => {
    const quota = quotaUnderDataRoot();
    await ensureStorageQuota(quota, 64 * MiB, nothingRunning);
    const device = await mountedDevice(quota.mountpoint);
    writeFileSync(join(quota.mountpoint, "data"), Buffer.alloc(MiB));

    await removeStorageQuota(quota);

    expect(await mountedDevice(quota.mountpoint)).toBeUndefined();
    expect(existsSync(quota.image)).toBe(false);
    const stillAttached = execFileSync("losetup", ["--noheadings", "--output", "NAME,BACK-FILE"], { encoding: "utf8" });
    expect(stillAttached).not.toContain(`${device} `);
    expect(stillAttached).not.toContain(quota.image);
  });

  it("homeserver.delete unmounts the server's quota filesystem and deletes its image with the data", async () => {
    const run = new TestRun();
    onCleanup(() => run.cleanup());
    const serverId = run.serverId("quota");
    const paths = run.paths(serverId);
    const quota = releasedAfterwards({ image: paths.storageImage, mountpoint: paths.root });
    await ensureStorageQuota(quota, 64 * MiB, nothingRunning);
    writeFileSync(join(paths.root, "kept"), Buffer.alloc(MiB));

    expect(await run.run("homeserver.delete", { serverId })).toEqual({ serverId, state: "deleted" });

    expect(await mountedDevice(paths.root)).toBeUndefined();
    expect(existsSync(paths.storageImage)).toBe(false);
    expect(existsSync(paths.root)).toBe(false);
  });

  it("a container is refused, not started on an empty directory, while the quota is not mounted (Docker restarting it at boot)", async () => {
    const run = new TestRun();
    onCleanup(() => run.cleanup());
    const serverId = run.serverId("boot");
    const paths = run.paths(serverId);
    mkdirSync(paths.root, { recursive: true });
    const spec = postgresContainer({
      names: run.names(serverId),
      paths,
      serverName: "boot.example.org",
      uid: 200_999,
      image: POSTGRES_IMAGE,
      resources: { memoryMiB: 256, cpus: 0.5 },
      extraLabels: run.labels,
      maxUploadMiB: 50,
    });

    await expect(run.runtime.createContainer(spec)).rejects.toThrow(/bind source path does not exist/);
    expect(existsSync(paths.postgres)).toBe(false);
  });

  it("a server's data from before quotas is moved onto one as it is; only --allow-no-storage-quota leaves a server without; a plan below the smallest quota is refused", async () => {
    const dataRoot = tempDir("berth-quota-test-");
    const core = new HomeserverCore({ stateDir: join(dataRoot, "state"), runtime: new DockerRuntime({}) });
    const noQuota = new HomeserverCore({ stateDir: join(dataRoot, "state"), runtime: new DockerRuntime({}), allowNoStorageQuota: true });
    const log = captureLog();
    const ctx = { dataRoot, signal: new AbortController().signal, progress: () => undefined };
    const server = (id: string) => {
      const paths = homeserverPaths(dataRoot, id);
      releasedAfterwards({ image: paths.storageImage, mountpoint: paths.root });
      return { names: homeserverNames(id), paths };
    };

    const old = server("0b5d3c1e-8a1f-4c56-9d3e-000000000001");
    mkdirSync(old.paths.postgres, { recursive: true, mode: 0o700 });
    writeFileSync(join(old.paths.postgres, "PG_VERSION"), "15\n", { mode: 0o600 });
    writeFileSync(join(old.paths.postgres, "big"), Buffer.alloc(3 * MiB, 7));
    symlinkSync("/etc/shadow", join(old.paths.postgres, "planted-link"));
    chownSync(old.paths.postgres, 200_123, 200_123);
    chownSync(join(old.paths.postgres, "PG_VERSION"), 200_123, 200_123);
    expect(await core.ensureQuota(0.25, old.names, old.paths, ctx, log.log)).toBe("moved onto a quota");
    expect(log.has(/predates storage quotas: moving it onto its quota/)).toBe(true);
    expect(await mountedDevice(old.paths.root)).toMatch(/^\/dev\/loop\d+$/);
    expect(statfsSync(old.paths.root).blocks * statfsSync(old.paths.root).bsize).toBeLessThanOrEqual(256 * MiB);
    expect(readFileSync(join(old.paths.postgres, "PG_VERSION"), "utf8")).toBe("15\n");
    expect(sha256(join(old.paths.postgres, "big"))).toBe(
      createHash("sha256")
        .update(Buffer.alloc(3 * MiB, 7))
        .digest("hex"),
    );
    expect(readlinkSync(join(old.paths.postgres, "planted-link"))).toBe("/etc/shadow");
    const owner = statSync(join(old.paths.postgres, "PG_VERSION"));
    expect([owner.uid, owner.mode & 0o777, statSync(old.paths.postgres).uid, statSync(old.paths.postgres).mode & 0o777]).toEqual([
      200_123, 0o600, 200_123, 0o700,
    ]);
    expect(existsSync(`${old.paths.root}.pre-quota`)).toBe(false);
    expect(readdirSync(dirname(old.paths.storageImage)).sort()).toEqual([basename(old.paths.storageImage)]);

    const development = server("0b5d3c1e-8a1f-4c56-9d3e-000000000002");
    expect(await noQuota.ensureQuota(10, development.names, development.paths, ctx, log.log)).toBe("no quota");
    expect(log.has(/NO STORAGE QUOTA for this homeserver \(--allow-no-storage-quota/)).toBe(true);
    expect(existsSync(development.paths.storageImage)).toBe(false);

    const tiny = server("0b5d3c1e-8a1f-4c56-9d3e-000000000003");
    await expect(core.ensureQuota(0.1, tiny.names, tiny.paths, ctx, log.log)).rejects.toThrow(/below the smallest quota a homeserver runs in \(256 MiB\)/);
    expect(existsSync(tiny.paths.storageImage)).toBe(false);

    // With the flag, a quota that exists is still mounted: else the containers would write beside it.
    const quota = server("0b5d3c1e-8a1f-4c56-9d3e-000000000004");
    expect(await core.ensureQuota(0.25, quota.names, quota.paths, ctx, log.log)).toBe("unchanged");
    execFileSync("umount", [quota.paths.root]);
    expect(await noQuota.ensureQuota(0.25, quota.names, quota.paths, ctx, log.log)).toBe("unchanged");
    expect(await mountedDevice(quota.paths.root)).toMatch(/^\/dev\/loop\d+$/);
  });

  it("a running homeserver provisioned without a quota is moved onto one by the next provisioning: its users and data come along", {
    timeout: 600_000,
  }, async () => {
    await ensureImages();
    const run = new TestRun({ allowNoStorageQuota: true });
    onCleanup(() => run.cleanup());
    const spec = run.spec("old", { resources: { memoryMiB: 1024, cpus: 1, storageGiB: 1 } });
    await run.run("homeserver.provision", spec);
    const paths = run.paths(spec.serverId);
    expect(await mountedDevice(paths.root)).toBeUndefined();
    expect(run.manager.records.read(spec.serverId)?.storageQuota).toBe(false);
    const password = await run.registerUser(spec.serverId, spec.serverName, "alice");

    const withQuotas = homeserverHandlers(run.handlerOptions());
    run.handlers = withQuotas.handlers;
    run.manager = withQuotas.manager;
    await run.run("homeserver.provision", spec);
    expect(await mountedDevice(paths.root)).toMatch(/^\/dev\/loop\d+$/);
    expect(run.manager.records.read(spec.serverId)?.storageQuota).toBe(true);
    expect(run.progress.some((p) => p.message === "storage quota: 1 GiB (moved onto a quota)")).toBe(true);
    expect((await run.login(spec.serverId, "alice", password)).status).toBe(200);
    expect(existsSync(`${paths.root}.pre-quota`)).toBe(false);
  });
});
