// The files a restore puts back on the host: which live ones the restored ones
// replace, and moving them in (or back) while Synapse is stopped.
//
// The live files sit in directories the server's uid owns (a compromised
// Synapse may have planted links there), so they are only ever renamed, which
// moves a link as a link: out of the tenant's directories into one beside the
// staging directory, in the server's root-owned directory that no container
// can reach. Only there is anything deleted, once Synapse runs again: a
// recursive delete in a directory Synapse can write to, while it runs, could
// be sent through a link swapped in mid-walk.
import { lstatSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { basename, join } from "node:path";
import { chownTreeSync } from "../owned-directories.ts";
import { MEDIA_STORE_DIR } from "./config.ts";
import type { HomeserverPaths } from "./names.ts";
import { SECRET_FILES, signingKeyFileName } from "./secrets.ts";

export interface RestoredFile {
  /** Where the server uses it (in a directory its uid owns). */
  live: string;
  /** Where the backup was extracted to. */
  restored: string;
  /** Where the live one waits until the restore succeeded (root's). */
  kept: string;
}

/** Where the replaced data waits: beside the staging directory, under the server's root-owned directory. */
function replacedDir(staging: string): string {
  return `${staging}.replaced`;
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * What a restore puts back. The configuration is not among them (the agent
 * writes it), nor PostgreSQL's own credentials (the cluster being restored
 * into keeps its password).
 */
export function restoredFiles(serverName: string, paths: HomeserverPaths, staging: string): RestoredFile[] {
  const pairs: Array<[string, string]> = [
    [join(paths.synapse, MEDIA_STORE_DIR), join(staging, "synapse", MEDIA_STORE_DIR)],
    [join(paths.synapse, signingKeyFileName(serverName)), join(staging, "synapse", signingKeyFileName(serverName))],
    ...[SECRET_FILES.registrationSharedSecret, SECRET_FILES.macaroonSecretKey, SECRET_FILES.formSecret].map((name): [string, string] => [
      join(paths.secrets, name),
      join(staging, "secrets", name),
    ]),
  ];
  return pairs.map(([live, restored]) => ({ live, restored, kept: join(replacedDir(staging), basename(live)) }));
}

/**
 * Hands the extracted backup (made by root, in the server's root-owned directory) to the server's
 * uid, with an empty media store when the backup had no local media.
 */
export function prepareRestoredTree(staging: string, uid: number): void {
  mkdirSync(join(staging, "synapse", MEDIA_STORE_DIR), { recursive: true, mode: 0o700 });
  chownTreeSync(staging, uid);
}

/** Moves each live file or directory aside and its restored one in (one the backup lacks stays as it is). Synapse is stopped. */
export function swapIn(files: RestoredFile[]): void {
  for (const { live, restored, kept } of files) {
    if (!exists(restored)) continue;
    mkdirSync(join(kept, ".."), { recursive: true, mode: 0o700 });
    rmSync(kept, { recursive: true, force: true });
    if (exists(live)) renameSync(live, kept);
    renameSync(restored, live);
  }
}

/** Puts the live files back, moving the restored ones out of the tenant's directories. Synapse is stopped. */
export function swapBack(files: RestoredFile[]): void {
  for (const { live, kept } of files) {
    if (!exists(kept)) continue;
    if (exists(live)) {
      rmSync(`${kept}.restored`, { recursive: true, force: true });
      renameSync(live, `${kept}.restored`);
    }
    renameSync(kept, live);
  }
}

/** Deletes what the restore replaced (or, after swapBack, what it brought): nothing there is reachable from a container. */
export function dropReplaced(staging: string): void {
  rmSync(replacedDir(staging), { recursive: true, force: true });
}
