// Storage each homeserver keeps on the host's disk: the space allocated to its data directory
// (database, media, keys), counted as `du` does. Walking a large media store takes a while, so
// the directories are measured in the background every few minutes and usage samples carry the
// latest figures instead of walking on every sample. A homeserver whose directory is its storage
// quota's mounted filesystem also reports that quota's figures, so the control plane can warn
// before it fills.
import { closeSync, fstatSync, lstatSync, readdirSync, statfsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { workloadStorageSchema, type StorageQuotaFigures, type WorkloadStorage } from "../protocol/messages.ts";
import { mountedDevice, usedBytes } from "./homeserver/storage-quota.ts";
import { errorMessage, type Logger } from "./log.ts";
import { openOwnedDirectorySync, throughDescriptor } from "./owned-directories.ts";

/** Entries examined between two yields to the event loop. */
const ENTRIES_PER_SLICE = 512;

interface OpenDirectory {
  fd: number;
  names: string[];
  next: number;
}

/**
 * Allocated bytes under `path` (blocks, not apparent sizes; symlinks not followed; each hard-linked file once).
 * Synchronous calls in short slices, yielding between them: one awaited call per entry costs a
 * thread-pool round trip each (over ten times slower than `du` on a media store, by npm run bench),
 * and one long synchronous walk would stall the agent's connection for seconds on a large one.
 * Synapse owns most of the tree, so directories are entered as owned-directories.ts says: one
 * swapped for a link to another customer's data mid-walk is not counted.
 */
export async function allocatedBytes(path: string): Promise<number> {
  const top = lstatSync(path, { bigint: true, throwIfNoEntry: false });
  if (!top) return 0;
  if (!top.isDirectory()) return Number(top.blocks) * 512;
  let total = 0;
  const seenLinked = new Set<string>();
  const open: OpenDirectory[] = [];
  const enter = (dirPath: string) => {
    const fd = openOwnedDirectorySync(dirPath);
    if (fd === undefined) return;
    // Held before anything else can throw, so that the finally below closes it.
    const dir: OpenDirectory = { fd, names: [], next: 0 };
    open.push(dir);
    total += Number(fstatSync(fd, { bigint: true }).blocks) * 512;
    dir.names = readdirSync(throughDescriptor(fd)).sort();
  };
  try {
    enter(path);
    let inSlice = 0;
    while (open.length > 0) {
      if (++inSlice > ENTRIES_PER_SLICE) {
        inSlice = 0;
        await new Promise((resolve) => setImmediate(resolve));
      }
      const dir = open.at(-1)!;
      if (dir.next >= dir.names.length) {
        closeSync(open.pop()!.fd);
        continue;
      }
      const entry = throughDescriptor(dir.fd, dir.names[dir.next++]);
      // Files come and go while Synapse and PostgreSQL run: a vanished entry counts as nothing.
      const stat = lstatSync(entry, { bigint: true, throwIfNoEntry: false });
      if (!stat) continue;
      if (stat.isDirectory()) {
        enter(entry);
        continue;
      }
      if (stat.nlink > 1n) {
        const key = `${stat.dev}:${stat.ino}`;
        if (seenLinked.has(key)) continue;
        seenLinked.add(key);
      }
      total += Number(stat.blocks) * 512;
    }
  } finally {
    for (const dir of open) closeSync(dir.fd);
  }
  return total;
}

/**
 * The storage quota mounted at `directory`, as `statfs` counts it: the filesystem's usable bytes
 * and those in use. Nothing when no quota is mounted there (a server made before quotas, or one
 * whose quota is unmounted for a resize): the directory's own filesystem is the host's, not a quota.
 */
export async function mountedQuota(directory: string): Promise<StorageQuotaFigures | undefined> {
  if (!(await mountedDevice(directory))) return undefined;
  const fs = statfsSync(directory);
  return { usedBytes: usedBytes(directory), quotaBytes: fs.blocks * fs.bsize };
}

export interface StorageMeterOptions {
  /** One subdirectory per workload, named by its id (the agent's <dataRoot>/homeservers). */
  workloadsDir: string;
  everyMs: number;
  log: Logger;
}

export class StorageMeter {
  private readonly o: StorageMeterOptions;
  private figures: WorkloadStorage[] = [];
  private timer: NodeJS.Timeout | undefined;
  private measuring: Promise<void> | undefined;
  private failing = false;

  constructor(options: StorageMeterOptions) {
    this.o = options;
  }

  /** The figures of the last completed measurement. */
  latest(): WorkloadStorage[] {
    return this.figures;
  }

  start(): void {
    if (this.timer) return;
    void this.measure();
    this.timer = setInterval(() => void this.measure(), this.o.everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Measures every workload's directory (one walk at a time: the disk is shared with the workloads). */
  measure(): Promise<void> {
    this.measuring ??= this.measureAll().finally(() => (this.measuring = undefined));
    return this.measuring;
  }

  private async measureAll(): Promise<void> {
    let names: string[];
    try {
      names = (await readdir(this.o.workloadsDir, { withFileTypes: true })).filter((entry) => entry.isDirectory()).map((entry) => entry.name);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") this.warnOnce(error);
      this.figures = [];
      return;
    }
    const figures: WorkloadStorage[] = [];
    let failed = false;
    for (const name of names.sort()) {
      try {
        const dir = join(this.o.workloadsDir, name);
        const figure = workloadStorageSchema.safeParse({ workloadId: name, usedBytes: await allocatedBytes(dir), quota: await mountedQuota(dir) });
        if (figure.success) figures.push(figure.data);
      } catch (error) {
        failed = true;
        this.warnOnce(error);
      }
    }
    if (!failed && this.failing) {
      this.o.log.info("storage measurement works again");
      this.failing = false;
    }
    this.figures = figures.slice(0, 1000);
  }

  private warnOnce(error: unknown): void {
    if (!this.failing) this.o.log.warn("storage measurement failed", { dir: this.o.workloadsDir, error: errorMessage(error) });
    this.failing = true;
  }
}
