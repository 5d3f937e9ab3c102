// Walking, as root, directories a homeserver owns (its data directory, its media store): a
// compromised Synapse could swap a directory for a symbolic link between the agent listing it and
// entering it, to reach another customer's data or the host's files. So no path is resolved twice:
// a directory is opened without following a link, then read, and its entries reached, through
// that open descriptor (/proc/self/fd/<fd>/<name>). One that is a link by then is not entered.
import { constants as fs, openSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";

const OPEN_DIRECTORY = fs.O_RDONLY | fs.O_DIRECTORY | fs.O_NOFOLLOW;

/** A path through an open directory's descriptor: what it names cannot be swapped underneath. */
export const throughDescriptor = (fd: number, entry = "") => `/proc/self/fd/${fd}/${entry}`;

/** Gone, or no longer a directory (a link now): nothing to walk. */
function notThere(error: unknown): boolean {
  return ["ENOENT", "ENOTDIR", "ELOOP"].includes((error as NodeJS.ErrnoException).code ?? "");
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
