// Crash-safe file replacement: write a temporary file beside the target, fsync it,
// rename it over the target, fsync the directory. A reader sees the old file or
// the new one, never half of one; a crash leaves at most a `*.tmp` file behind.
import { closeSync, fchmodSync, fchownSync, fsyncSync, openSync, readdirSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { basename, dirname, join } from "node:path";

export const TEMP_SUFFIX = ".tmp";

/** `owner` (uid = gid) is set on the new file before it takes the target's name: never by path afterwards. */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644, owner?: number): void {
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}${TEMP_SUFFIX}`);
  // "wx": never follow or reuse an existing file; the mode applies from creation on.
  const fd = openSync(temp, "wx", mode);
  try {
    fchmodSync(fd, mode); // the umask may have narrowed it; make it exactly `mode`
    if (owner !== undefined) fchownSync(fd, owner, owner);
    const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
    let offset = 0;
    while (offset < bytes.length) offset += writeSync(fd, bytes, offset, bytes.length - offset);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    try {
      unlinkSync(temp);
    } catch {
      // already gone
    }
    throw error;
  }
  closeSync(fd);
  renameSync(temp, path);
  fsyncDir(dir);
}

export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, "r");
    fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Deletes temporary files a crashed writer left in `dir`; returns how many. */
export function removeStaleTempFiles(dir: string): number {
  let removed = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!name.startsWith(".") || !name.endsWith(TEMP_SUFFIX)) continue;
    try {
      unlinkSync(join(dir, name));
      removed++;
    } catch {
      // raced with another cleaner
    }
  }
  return removed;
}
