// A homeserver's hard storage limit: its whole directory (PostgreSQL's data, Synapse's data and
// media, its secrets) lives on a filesystem of its own, an ext4 image file mounted through a loop
// device at that directory. The kernel refuses writes past the plan's storage (ENOSPC) inside it,
// and the host's data root outside never sees more than the image's size. The image is sparse:
// it takes on the host only what the homeserver has written.
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, statfsSync, truncateSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Ext4's block size: 4 KiB keeps a filesystem made small growable to many GiB online. */
const BLOCK_BYTES = 4096;
/** Kept free after a shrink, so that PostgreSQL and Synapse can still write (WAL, logs) the moment it is back. */
const SHRINK_HEADROOM_BYTES = 16 * 1024 * 1024;

export interface StorageQuota {
  /** The image file (outside the directory it is mounted at). */
  image: string;
  /** The homeserver's directory. */
  mountpoint: string;
}

/** A shrink the data does not fit in: nothing was changed. */
export class QuotaTooSmallError extends Error {
  override name = "QuotaTooSmallError";
}

/** Runs a tool; exit codes besides `accepted` fail with its message. */
async function tool(command: string, args: string[], accepted = [0]): Promise<string> {
  try {
    return (await run(command, args, { encoding: "utf8" })).stdout;
  } catch (error) {
    const exit = (error as { code?: unknown }).code;
    if (typeof exit === "number" && accepted.includes(exit)) return (error as { stdout?: string }).stdout ?? "";
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new Error(`${command} ${args.join(" ")} failed${stderr ? `: ${stderr.slice(0, 300)}` : ""}`);
  }
}

/** The device mounted at `mountpoint` (a /dev/loopN), or nothing when none is. */
export async function mountedDevice(mountpoint: string): Promise<string | undefined> {
  try {
    const { stdout } = await run("findmnt", ["--noheadings", "--output", "SOURCE", "--mountpoint", mountpoint], { encoding: "utf8" });
    return stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Whole blocks, at least one: what the image and its filesystem are sized to. */
function roundedToBlocks(bytes: number): number {
  return Math.max(1, Math.floor(bytes / BLOCK_BYTES)) * BLOCK_BYTES;
}

/** Bytes in use on the mounted filesystem (as df counts them). */
export function usedBytes(mountpoint: string): number {
  const fs = statfsSync(mountpoint);
  return (fs.blocks - fs.bfree) * fs.bsize;
}

/**
 * Runs `change` while nothing uses the quota's filesystem (the homeserver's containers stopped,
 * started again after): ext4 shrinks only unmounted, and grows online only for a process with
 * CAP_SYS_RESOURCE.
 */
export type WhileStopped = (change: () => Promise<void>) => Promise<void>;

export type QuotaChange = "unchanged" | "grown online" | "grown offline" | "shrunk";

/**
 * The quota's filesystem made (when its image is missing), mounted at its directory (when it is
 * not: after a reboot) and sized to `bytes` (as resizeStorageQuota says). Before the containers
 * start: they must see the mounted filesystem, never the directory beneath.
 */
export async function ensureStorageQuota(quota: StorageQuota, bytes: number, whileStopped: WhileStopped): Promise<QuotaChange> {
  const size = roundedToBlocks(bytes);
  if (!existsSync(quota.image)) await makeImage(quota.image, size);
  if (!(await mountedDevice(quota.mountpoint))) await mount(quota);
  return resizeStorageQuota(quota, size, whileStopped);
}

/** The quota's filesystem mounted at its directory when it has an image and is not mounted (after a reboot); returns whether it mounted it. */
export async function mountStorageQuota(quota: StorageQuota): Promise<boolean> {
  if (!existsSync(quota.image) || (await mountedDevice(quota.mountpoint))) return false;
  await mount(quota);
  return true;
}

/**
 * A server's data from before quotas moved onto one, with its containers stopped: a new image (under
 * another name until the copy is whole) mounted beside, the directory copied into it as it is
 * (`cp -a`: owners, modes, links as links, hard links kept), the directory renamed aside and the
 * quota mounted in its place; the old copy is deleted only then. A copy that fails (the data does not
 * fit) leaves the data where it was and no image.
 */
export async function migrateIntoStorageQuota(quota: StorageQuota, bytes: number, whileStopped: WhileStopped): Promise<void> {
  const copying = `${quota.image}.copying`;
  const staging = `${quota.image}.mnt`;
  const aside = `${quota.mountpoint}.pre-quota`;
  await whileStopped(async () => {
    await makeImage(copying, roundedToBlocks(bytes));
    mkdirSync(staging, { recursive: true, mode: 0o700 });
    await tool("mount", ["-t", "ext4", "-o", "loop,nodev,nosuid", copying, staging]);
    try {
      await tool("cp", ["-a", "--", `${quota.mountpoint}/.`, `${staging}/`]);
    } finally {
      await tool("umount", [staging]);
      rmSync(staging, { recursive: true, force: true });
    }
    renameSync(copying, quota.image);
    renameSync(quota.mountpoint, aside);
    await mount(quota);
  }).catch((error: unknown) => {
    rmSync(copying, { force: true });
    throw error;
  });
  // Nothing of the tenant's runs on it any more (its containers use the quota): safe to delete recursively.
  rmSync(aside, { recursive: true, force: true });
}

async function makeImage(image: string, size: number): Promise<void> {
  mkdirSync(dirname(image), { recursive: true, mode: 0o700 });
  // Made under another name and renamed: a crash mid-mkfs leaves no image that looks finished.
  const making = `${image}.making`;
  rmSync(making, { force: true });
  writeFileSync(making, "", { mode: 0o600 });
  truncateSync(making, size);
  // -m 0: no blocks reserved for root (the tenant's uid is not root: it would lose 5 % of its plan).
  await tool("mkfs.ext4", ["-q", "-F", "-m", "0", "-b", String(BLOCK_BYTES), "-T", "default", "-E", "nodiscard", making]);
  renameSync(making, image);
}

async function mount(quota: StorageQuota): Promise<void> {
  mkdirSync(quota.mountpoint, { recursive: true, mode: 0o700 });
  // Mounting over data would hide it (and the containers would write beside it): only an empty directory.
  const present = readdirSync(quota.mountpoint);
  if (present.length > 0) {
    throw new Error(`${quota.mountpoint} holds data outside its storage quota (${present.slice(0, 3).join(", ")}): refusing to mount over it`);
  }
  // The loop device is allocated by mount and released when it is unmounted (autoclear).
  await tool("mount", ["-t", "ext4", "-o", "loop,nodev,nosuid", quota.image, quota.mountpoint]);
}

/**
 * The quota set to `bytes`. Growing happens online (the containers keep running): the image, the
 * loop device's capacity, then the filesystem; where the kernel refuses an online resize (no
 * CAP_SYS_RESOURCE) it happens unmounted, while stopped. Shrinking is refused with the figures
 * when the data does not fit (nothing changed); when it fits, it happens unmounted, while stopped.
 */
export async function resizeStorageQuota(quota: StorageQuota, bytes: number, whileStopped: WhileStopped): Promise<QuotaChange> {
  const size = roundedToBlocks(bytes);
  const current = statSync(quota.image).size;
  if (size === current) return "unchanged";
  const device = await mountedDevice(quota.mountpoint);
  if (!device) throw new Error(`${quota.mountpoint} is not mounted: its storage quota cannot be resized`);
  if (size > current) {
    truncateSync(quota.image, size);
    await tool("losetup", ["--set-capacity", device]);
    try {
      await tool("resize2fs", [device]);
      return "grown online";
    } catch (error) {
      if (!/Permission denied/.test(errorText(error))) throw error;
    }
    await unmounted(quota, whileStopped, () => tool("resize2fs", [quota.image]));
    return "grown offline";
  }
  const used = usedBytes(quota.mountpoint);
  if (used + SHRINK_HEADROOM_BYTES > size) {
    throw new QuotaTooSmallError(
      `the homeserver uses ${mebibytes(used)} MiB: its storage cannot shrink to ${mebibytes(size)} MiB (it needs ${mebibytes(SHRINK_HEADROOM_BYTES)} MiB free besides)`,
    );
  }
  await unmounted(quota, whileStopped, async () => {
    await tool("resize2fs", [quota.image, `${size / 1024}K`]);
    truncateSync(quota.image, size);
  });
  return "shrunk";
}

/** `change` made to the image while unmounted (checked first, as resize2fs requires), mounted again whatever happens. */
async function unmounted(quota: StorageQuota, whileStopped: WhileStopped, change: () => Promise<unknown>): Promise<void> {
  await whileStopped(async () => {
    await tool("umount", [quota.mountpoint]);
    try {
      await tool("e2fsck", ["-f", "-p", quota.image], [0, 1]);
      await change();
    } finally {
      await mount(quota);
    }
  });
}

const errorText = (error: unknown) => (error instanceof Error ? error.message : String(error));
const mebibytes = (bytes: number) => Math.ceil(bytes / (1024 * 1024));

/** Unmounted (releasing its loop device) and its image deleted: the caller has removed the containers. */
export async function removeStorageQuota(quota: StorageQuota): Promise<void> {
  if (await mountedDevice(quota.mountpoint)) await tool("umount", [quota.mountpoint]);
  rmSync(quota.image, { force: true });
  rmSync(`${quota.image}.making`, { force: true });
}
