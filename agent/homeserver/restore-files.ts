// The files a restore puts back on the host: which live ones the restored ones
// replace, and moving them in (or back) around Synapse's restart.
import { chownSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { MEDIA_STORE_DIR } from "./config.ts";
import type { HomeserverPaths } from "./names.ts";
import { SECRET_FILES, signingKeyFileName } from "./secrets.ts";

/**
 * What a restore puts back, each as (live path, restored path, where the live
 * one is kept until the restore succeeded). The configuration is not among
 * them (the agent writes it), nor PostgreSQL's own credentials (the cluster
 * being restored into keeps its password).
 */
export function restoredFiles(serverName: string, paths: HomeserverPaths, staging: string): Array<{ live: string; restored: string; kept: string }> {
  const pairs: Array<[string, string]> = [
    [join(paths.synapse, MEDIA_STORE_DIR), join(staging, "synapse", MEDIA_STORE_DIR)],
    [join(paths.synapse, signingKeyFileName(serverName)), join(staging, "synapse", signingKeyFileName(serverName))],
    ...[SECRET_FILES.registrationSharedSecret, SECRET_FILES.macaroonSecretKey, SECRET_FILES.formSecret].map(
      (name): [string, string] => [join(paths.secrets, name), join(staging, "secrets", name)],
    ),
  ];
  return pairs.map(([live, restored]) => ({ live, restored, kept: `${live}.before-restore` }));
}

/** Moves the live file or directory aside and the restored one in (a backup without local media gets an empty store). */
export function swapIn(live: string, restored: string, kept: string): void {
  rmSync(kept, { recursive: true, force: true });
  if (existsSync(live)) renameSync(live, kept);
  if (existsSync(restored)) renameSync(restored, live);
  else mkdirSync(live, { mode: 0o700 });
}

export function swapBack(live: string, kept: string): void {
  if (!existsSync(kept)) return;
  rmSync(live, { recursive: true, force: true });
  renameSync(kept, live);
}

/** Hands an extracted tree (made by root) to the server's uid. */
export function chownTree(dir: string, uid: number): void {
  chownSync(dir, uid, uid);
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) chownTree(path, uid);
    else chownSync(path, uid, uid);
  }
}
