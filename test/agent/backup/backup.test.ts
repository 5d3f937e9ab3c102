import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { generateAgeKeyPair } from "../../../agent/backup/age.ts";
import { DUMP_FILE, MANIFEST_NAME } from "../../../agent/backup/archive.ts";
import { backupStream, restoreStream } from "../../../agent/backup/backup.ts";
import { agentNodeFlags } from "../../../bench/lib.mjs";
import { REPO_ROOT, runCleanups, tempDir } from "../helpers.ts";
import { MANIFEST, agePayloadOffset, makeServerTree, pseudoRandomBytes, pseudoRandomChunks, serverFiles, sha256, shell, treeHashes } from "./helpers.ts";

afterEach(runCleanups);

const keys = generateAgeKeyPair();
const MiB = 1024 * 1024;

/** The source tree's files as a restore lays them out (local media only, under synapse/). */
function expectedTree(dataDir: string, dumpSha256: string): Record<string, string> {
  const expected: Record<string, string> = { [MANIFEST_NAME]: expect.any(String), [DUMP_FILE]: dumpSha256 };
  for (const [path, hash] of Object.entries(treeHashes(dataDir))) if (!/remote_|url_cache/.test(path)) expected[`synapse/${path}`] = hash;
  return expected;
}

async function backUp(dataDir: string, dump: Buffer): Promise<string> {
  const file = join(tempDir(), "backup.age");
  await pipeline(backupStream({ manifest: MANIFEST, dump: [dump], files: serverFiles(dataDir), recipient: keys.recipient }), createWriteStream(file));
  return file;
}

describe("backup pipeline (tar → zstd → age)", () => {
  it("restores what it backed up, byte for byte", async () => {
    const dataDir = makeServerTree(tempDir());
    const dump = pseudoRandomBytes(9 * MiB, "dump");
    const file = await backUp(dataDir, dump);
    const target = join(tempDir(), "restored");

    const restored = await restoreStream(createReadStream(file), keys.identity, target);

    expect(restored).toMatchObject({ manifest: MANIFEST, dumpBytes: dump.length });
    expect(treeHashes(target)).toEqual(expectedTree(dataDir, sha256(dump)));
  });

  it("holds no plaintext: neither file contents, names nor the manifest show in the ciphertext", async () => {
    const dataDir = makeServerTree(tempDir());
    writeFileSync(join(dataDir, "homeserver.yaml"), "a_very_recognisable_config_line: 1\n");
    const file = readFileSync(await backUp(dataDir, Buffer.from("CREATE TABLE users")));
    for (const plaintext of ["a_very_recognisable_config_line", "CREATE TABLE", "chat.example.org", "local_content", MANIFEST_NAME, "ustar"]) {
      expect(file.includes(plaintext)).toBe(false);
    }
  });

  it("opens by hand with the standard tools: age -d | zstd -d | tar x", async () => {
    const dataDir = makeServerTree(tempDir());
    const dump = pseudoRandomBytes(MiB, "by hand");
    const file = await backUp(dataDir, dump);
    const keyFile = join(tempDir(), "key.txt");
    writeFileSync(keyFile, `${keys.identity}\n`, { mode: 0o600 });
    const out = tempDir();

    shell(`age -d -i ${keyFile} ${file} | zstd -d | tar -xf - -C ${out}`);

    const extracted = treeHashes(out);
    expect(extracted["database/pg_dump.part-00000"]).toBe(sha256(dump));
    delete extracted["database/pg_dump.part-00000"];
    expect(extracted).toEqual(Object.fromEntries(Object.entries(expectedTree(dataDir, "")).filter(([path]) => path !== DUMP_FILE)));
  });

  it("fails the stream, never ends it cleanly, when the dump fails midway", async () => {
    async function* failingDump() {
      yield pseudoRandomBytes(MiB, "partial");
      throw new Error("pg_dump exited 1");
    }
    const stream = backupStream({ manifest: MANIFEST, dump: failingDump(), files: [], recipient: keys.recipient });
    await expect(pipeline(stream, createWriteStream(join(tempDir(), "backup.age")))).rejects.toThrow("pg_dump exited 1");
  });

  it("refuses an invalid manifest before writing anything", async () => {
    const stream = backupStream({ manifest: { ...MANIFEST, createdAt: "yesterday" }, dump: [], files: [], recipient: keys.recipient });
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    await expect(new Promise((resolve, reject) => stream.on("end", resolve).on("error", reject))).rejects.toThrow(/createdAt/);
    expect(Buffer.concat(chunks).length).toBeLessThan(300); // at most the age header: no payload chunk
  });
});

describe("restore failures leave nothing behind", () => {
  async function restoreError(file: Buffer, identity = keys.identity): Promise<Error & { code?: string }> {
    const target = join(tempDir(), "restored");
    const error = await restoreStream(Readable.from([file]), identity, target).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    if (!error) throw new Error("restore succeeded");
    expect(existsSync(target)).toBe(false);
    return error;
  }

  it("a backup for another key", async () => {
    const file = readFileSync(await backUp(makeServerTree(tempDir()), Buffer.from("dump")));
    expect(await restoreError(file, generateAgeKeyPair().identity)).toMatchObject({ code: "no-identity-matches" });
  });

  it("a truncated backup, after some of it was already extracted", async () => {
    const file = readFileSync(await backUp(makeServerTree(tempDir()), pseudoRandomBytes(3 * MiB, "big")));
    const sealedChunk = 64 * 1024 + 16;
    const withoutLastChunk = agePayloadOffset(file) + Math.floor((file.length - agePayloadOffset(file) - 1) / sealedChunk) * sealedChunk;
    expect(await restoreError(file.subarray(0, withoutLastChunk))).toMatchObject({ code: "truncated" });
    expect(await restoreError(file.subarray(0, file.length - 5000))).toMatchObject({ code: "corrupted-chunk" });
  });

  it("a corrupted backup, and one with data appended", async () => {
    const original = readFileSync(await backUp(makeServerTree(tempDir()), pseudoRandomBytes(MiB, "big")));
    const corrupted = Buffer.from(original);
    corrupted[Math.floor(corrupted.length / 2)]! ^= 1;
    expect(await restoreError(corrupted)).toMatchObject({ code: "corrupted-chunk" });
    expect(await restoreError(Buffer.concat([original, Buffer.from("appended")]))).toMatchObject({ name: "AgeError" });
  });
});

// What the pipeline holds is a few MiB of buffers plus one 8 MiB dump part. The peak is higher
// because V8 frees buffers lazily, letting garbage build up between collections: 52–54 MiB
// measured with the agent's Node flags (58–62 without them), whatever the backup's size; one that
// held the backup would grow by 256 MiB. The child runs with the flags the agent's bundle starts with.
it("backs up and restores 256 MiB while the process's peak memory grows by under 72 MiB each way", async () => {
  const dataDir = makeServerTree(tempDir());
  const media = join(dataDir, "media_store/local_content/big");
  mkdirSync(media, { recursive: true });
  for (let i = 0; i < 28; i++) writeFileSync(join(media, `file-${i}`), pseudoRandomBytes(8 * MiB, `big-${i}`));
  const dumpBytes = 32 * MiB;
  const work = tempDir();
  const child = join(REPO_ROOT, "test/agent/backup/memory-child.ts");
  const options = { dataDir, dumpBytes, output: join(work, "backup.age"), restoreTo: join(work, "restored"), ...keys };

  const { stdout } = await promisify(execFile)(process.execPath, [...agentNodeFlags(), child, JSON.stringify(options)], { maxBuffer: MiB });
  const growth = JSON.parse(stdout) as { backup: number; restore: number };

  expect(growth.backup).toBeLessThan(72);
  expect(growth.restore).toBeLessThan(72);
  const dumpHash = createHash("sha256");
  for (const chunk of pseudoRandomChunks(dumpBytes, "dump")) dumpHash.update(chunk);
  expect(treeHashes(options.restoreTo)).toEqual(expectedTree(dataDir, dumpHash.digest("hex")));
}, 120_000);
