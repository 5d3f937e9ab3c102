// What a homeserver owns (its data directory, its media store, its secrets), handled as root: a
// compromised Synapse could swap a directory for a symbolic link between the agent listing it and
// entering it, or put a link where the agent expects a file, to reach another customer's data or
// the host's files. So no path is resolved twice: a directory is opened without following a link,
// then read, and its entries reached, through that open descriptor (/proc/self/fd/<fd>/<name>);
// files are opened without following a link, and their owner and mode set on the descriptor. One
// that is a link by then is not entered, or the operation fails.
import { closeSync, constants as fs, fchmodSync, fchownSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";

export const OPEN_DIRECTORY = fs.O_RDONLY | fs.O_DIRECTORY | fs.O_NOFOLLOW;
/** O_NONBLOCK: a FIFO put where a file belongs must not hang the agent on open (it is refused after fstat). */
const OPEN_FILE = fs.O_RDONLY | fs.O_NOFOLLOW | fs.O_NONBLOCK;

/** A path through an open directory's descriptor: what it names cannot be swapped underneath. */
export const throughDescriptor = (fd: number, entry = "") => `/proc/self/fd/${fd}/${entry}`;

function errorCode(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? "";
}

/** Gone, or no longer a directory (a link now): nothing to walk. */
function notThere(error: unknown): boolean {
  return ["ENOENT", "ENOTDIR", "ELOOP"].includes(errorCode(error));
}

/** The directory itself, never a symbolic link to one; nothing when it is not there. */
export async function openOwnedDirectory(path: string): Promise<FileHandle | undefined> {
  try {
    return await open(path, OPEN_DIRECTORY);
  } catch (error) {
    if (notThere(error)) return undefined;
    throw error;
  }
}

/** The same, as a descriptor, for walks done in synchronous slices. */
export function openOwnedDirectorySync(path: string): number | undefined {
  try {
    return openSync(path, OPEN_DIRECTORY);
  } catch (error) {
    if (notThere(error)) return undefined;
    throw error;
  }
}

/** Why `path` could not be opened as a directory (a link, or something else), for the error message. */
function notADirectory(path: string, name = path): Error {
  let link = false;
  try {
    link = lstatSync(path).isSymbolicLink();
  } catch {
    // gone meanwhile
  }
  return new Error(`${name} is ${link ? "a symbolic link" : "not a directory"}: refusing to follow or replace it`);
}

/**
 * The directory at `path`, made (mode 0700) when missing, owned by uid with `mode`: opened without
 * following a link and changed through its descriptor, so a link in its place changes nothing.
 */
export function ensureOwnedDirectorySync(path: string, uid: number, mode: number): void {
  try {
    mkdirSync(path, { mode: 0o700 });
  } catch (error) {
    if (errorCode(error) !== "EEXIST") throw error;
  }
  let fd: number;
  try {
    fd = openSync(path, OPEN_DIRECTORY);
  } catch (error) {
    if (errorCode(error) === "ENOTDIR" || errorCode(error) === "ELOOP") throw notADirectory(path);
    throw error;
  }
  try {
    fchownSync(fd, uid, uid);
    fchmodSync(fd, mode);
  } finally {
    closeSync(fd);
  }
}

/**
 * An existing regular file, opened for reading (and for fchown/fchmod on the descriptor): never
 * through a symbolic link, never a FIFO or device, never a file with other hard links (one could be
 * another customer's file or the host's). Nothing when it is not there; anything else fails.
 */
export function openOwnedFileSync(path: string, name = path): number | undefined {
  let fd: number;
  try {
    fd = openSync(path, OPEN_FILE);
  } catch (error) {
    if (errorCode(error) === "ENOENT") return undefined;
    if (errorCode(error) === "ELOOP") throw new Error(`${name} is a symbolic link: refusing to follow it`);
    throw error;
  }
  const stat = fstatSync(fd);
  const problem = !stat.isFile() ? "is not a regular file" : stat.nlink > 1 ? "has other hard links" : undefined;
  if (problem) {
    closeSync(fd);
    throw new Error(`${name} ${problem}: refusing to use it`);
  }
  return fd;
}

/**
 * Hands a tree to uid (directories and files), through descriptors from `dir` down. Meant for a
 * tree root made that nobody else can reach yet (a restore's extracted backup): a symbolic link,
 * or anything but directories and regular files, in it fails the whole operation.
 */
export function chownTreeSync(dir: string, uid: number): void {
  const fd = openSync(dir, OPEN_DIRECTORY);
  try {
    chownDirectory(fd, uid, dir);
  } finally {
    closeSync(fd);
  }
}

function chownDirectory(fd: number, uid: number, name: string): void {
  fchownSync(fd, uid, uid);
  for (const entry of readdirSync(throughDescriptor(fd), { withFileTypes: true })) {
    const path = throughDescriptor(fd, entry.name);
    const entryName = `${name}/${entry.name}`;
    if (entry.isDirectory()) {
      let child: number;
      try {
        child = openSync(path, OPEN_DIRECTORY);
      } catch (error) {
        if (errorCode(error) === "ENOTDIR" || errorCode(error) === "ELOOP") throw notADirectory(path, entryName);
        throw error;
      }
      try {
        chownDirectory(child, uid, entryName);
      } finally {
        closeSync(child);
      }
    } else {
      if (entry.isSymbolicLink()) throw new Error(`${entryName} is a symbolic link: refusing to follow it`);
      const file = openOwnedFileSync(path, entryName);
      if (file === undefined) continue;
      try {
        fchownSync(file, uid, uid);
      } finally {
        closeSync(file);
      }
    }
  }
}
