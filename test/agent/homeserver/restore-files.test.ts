// What a restore moves on the host, as root, in directories a compromised Synapse owns (it runs as the server's uid):
// nothing may follow a link the tenant planted there, and nothing is deleted where the tenant could swap a directory
// for a link while it runs again.
import { lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { homeserverPaths, type HomeserverPaths } from "../../../agent/homeserver/names.ts";
import { dropReplaced, prepareRestoredTree, restoredFiles, swapBack, swapIn } from "../../../agent/homeserver/restore-files.ts";
import { SECRET_FILES, ensureDataDirs, ensureSecrets, ensureSigningKey } from "../../../agent/homeserver/secrets.ts";
import { runCleanups, tempDir } from "../helpers.ts";

afterEach(runCleanups);

const UID = 234_567;
const SERVER_NAME = "chat.example.org";
const KEY = `${SERVER_NAME}.signing.key`;

/** A provisioned server's directories, with one local media file. */
function server(): HomeserverPaths {
  const paths = homeserverPaths(tempDir(), "srv-1");
  ensureDataDirs(paths, UID);
  ensureSecrets(paths, UID);
  ensureSigningKey(paths, SERVER_NAME, UID);
  mkdirSync(join(paths.synapse, "media_store", "local_content"), { recursive: true });
  writeFileSync(join(paths.synapse, "media_store", "local_content", "live-upload"), "live");
  return paths;
}

/** An extracted backup (as root made it) in the server's staging directory. */
function staged(paths: HomeserverPaths, { media = true } = {}): string {
  const staging = join(paths.root, "restore", "b1");
  mkdirSync(join(staging, "synapse"), { recursive: true });
  mkdirSync(join(staging, "secrets"), { recursive: true });
  if (media) {
    mkdirSync(join(staging, "synapse", "media_store", "local_content"), { recursive: true });
    writeFileSync(join(staging, "synapse", "media_store", "local_content", "restored-upload"), "restored");
  }
  writeFileSync(join(staging, "synapse", KEY), "restored key\n");
  for (const name of [SECRET_FILES.registrationSharedSecret, SECRET_FILES.macaroonSecretKey, SECRET_FILES.formSecret]) {
    writeFileSync(join(staging, "secrets", name), `restored ${name}\n`);
  }
  return staging;
}

/** Everything under dir, relative, with its owner (links not followed). */
function tree(dir: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    out[relative(dir, path)] = lstatSync(path).uid;
  }
  return out;
}

describe("a restore's files", () => {
  it("the extracted tree goes to the server's uid, with a media store even when the backup had no media", () => {
    const paths = server();
    const staging = staged(paths, { media: false });
    prepareRestoredTree(staging, UID);
    const files = restoredFiles(SERVER_NAME, paths, staging);
    swapIn(files);
    const media = statSync(join(paths.synapse, "media_store"));
    expect([media.isDirectory(), media.uid, media.mode & 0o777]).toEqual([true, UID, 0o700]);
    expect(readdirSync(join(paths.synapse, "media_store"))).toEqual([]);
    expect(Object.values(tree(paths.synapse)).every((uid) => uid === UID)).toBe(true);
    expect(Object.values(tree(paths.secrets)).every((uid) => uid === UID)).toBe(true);
  });

  it("a symbolic link in the extracted tree is refused, and its target keeps its owner", () => {
    const paths = server();
    const staging = staged(paths);
    const elsewhere = join(tempDir(), "host-file");
    writeFileSync(elsewhere, "root's");
    symlinkSync(elsewhere, join(staging, "synapse", "media_store", "local_content", "planted"));
    expect(() => prepareRestoredTree(staging, UID)).toThrow(/symbolic link/);
    expect(statSync(elsewhere).uid).toBe(0);
  });

  it("the data a restore replaces waits in a directory only root can enter, never in the tenant's, and is dropped from there", () => {
    const paths = server();
    const staging = staged(paths);
    prepareRestoredTree(staging, UID);
    const synapseBefore = readdirSync(paths.synapse).sort();
    const secretsBefore = readdirSync(paths.secrets).sort();
    const files = restoredFiles(SERVER_NAME, paths, staging);
    swapIn(files);

    expect(readdirSync(join(paths.synapse, "media_store", "local_content"))).toEqual(["restored-upload"]);
    expect(readFileSync(join(paths.synapse, KEY), "utf8")).toBe("restored key\n");
    expect(readdirSync(paths.synapse).sort()).toEqual(synapseBefore);
    expect(readdirSync(paths.secrets).sort()).toEqual(secretsBefore);
    for (const { kept } of files) {
      expect(relative(paths.root, kept)).not.toMatch(/^(\.\.|synapse|secrets|postgres)/);
      const holder = statSync(join(kept, ".."));
      expect([holder.uid, holder.mode & 0o777]).toEqual([0, 0o700]);
    }
    expect(readFileSync(join(files[0]!.kept, "local_content", "live-upload"), "utf8")).toBe("live");

    dropReplaced(staging);
    for (const { kept } of files) expect(() => lstatSync(kept)).toThrow(/ENOENT/);
    expect(readdirSync(join(paths.synapse, "media_store", "local_content"))).toEqual(["restored-upload"]);
  });

  it("putting the previous data back leaves nothing of the restore in the tenant's directories", () => {
    const paths = server();
    const staging = staged(paths);
    prepareRestoredTree(staging, UID);
    const synapseBefore = tree(paths.synapse);
    const secretsBefore = readdirSync(paths.secrets).map((name) => readFileSync(join(paths.secrets, name), "utf8"));
    const files = restoredFiles(SERVER_NAME, paths, staging);
    swapIn(files);
    swapBack(files);
    expect(tree(paths.synapse)).toEqual(synapseBefore);
    expect(readdirSync(paths.secrets).map((name) => readFileSync(join(paths.secrets, name), "utf8"))).toEqual(secretsBefore);
    dropReplaced(staging);
    expect(tree(paths.synapse)).toEqual(synapseBefore);
  });

  it("a link the tenant planted in place of its media store is moved aside as a link, never followed, and its target survives", () => {
    const paths = server();
    const elsewhere = tempDir();
    writeFileSync(join(elsewhere, "another-customers-upload"), "not this customer's");
    rmSync(join(paths.synapse, "media_store"), { recursive: true });
    symlinkSync(elsewhere, join(paths.synapse, "media_store"));

    const staging = staged(paths);
    prepareRestoredTree(staging, UID);
    const files = restoredFiles(SERVER_NAME, paths, staging);
    swapIn(files);
    expect(lstatSync(join(paths.synapse, "media_store")).isDirectory()).toBe(true);
    swapBack(files);
    expect(lstatSync(join(paths.synapse, "media_store")).isSymbolicLink()).toBe(true);
    swapIn(restoredFiles(SERVER_NAME, paths, staged(paths)));
    dropReplaced(staging);
    expect(readdirSync(elsewhere)).toEqual(["another-customers-upload"]);
    expect(statSync(join(elsewhere, "another-customers-upload")).uid).toBe(0);
  });
});
