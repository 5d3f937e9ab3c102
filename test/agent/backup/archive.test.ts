import { execFileSync } from "node:child_process";
import {
  createReadStream,
  createWriteStream,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { type Duplex, Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { afterEach, describe, expect, it } from "vitest";
import {
  BLOCKS_IN_FLIGHT,
  BlockPool,
  DUMP_FILE,
  DUMP_PART_SIZE,
  MANIFEST_NAME,
  READ_SIZE,
  archiveStream,
  extractArchive,
  localMediaFiles,
  restoreArchive,
  tarArchive,
  type ArchiveContents,
} from "../../../agent/backup/archive.ts";
import { TAR_END, readTar, tarFileHeader, tarPadding } from "../../../agent/backup/tar.ts";
import { runCleanups, sleep, tempDir, waitFor } from "../helpers.ts";
import { MANIFEST, makeServerTree, pseudoRandomBytes, run, serverFiles, sha256, shell, treeHashes, unevenPieces } from "./helpers.ts";

afterEach(runCleanups);

async function writeArchive(contents: ArchiveContents): Promise<string> {
  const file = join(tempDir(), "backup.tar.zst");
  await pipeline(archiveStream(contents), createWriteStream(file));
  return file;
}

const restore = (file: string, target: string) => restoreArchive(createReadStream(file), target);

/** The tar entries (name and size) of an archive, without extracting. */
async function listing(contents: ArchiveContents): Promise<Array<{ name: string; size: number }>> {
  const entries: Array<{ name: string; size: number }> = [];
  for await (const entry of readTar(tarArchive(contents))) entries.push({ name: entry.name, size: entry.size });
  return entries;
}

/** Raw tar bytes: a valid manifest entry, then the given entries. */
function tarOf(...entries: Array<{ name: string; data: Buffer | string }>): Buffer[] {
  const manifest = Buffer.from(JSON.stringify(MANIFEST));
  return [{ name: MANIFEST_NAME, data: manifest }, ...entries].flatMap(({ name, data }) => {
    const bytes = Buffer.from(data);
    return [tarFileHeader({ name, size: bytes.length, mtime: 0 }), bytes, tarPadding(bytes.length)];
  });
}

describe("backup archive", () => {
  it("round-trips a homeserver's tree byte for byte: local media, config and key, and the dump", async () => {
    const dataDir = makeServerTree(tempDir());
    const dump = pseudoRandomBytes(3 * 1024 * 1024 + 5, "dump");
    const file = await writeArchive({ manifest: MANIFEST, dump: unevenPieces(dump), files: serverFiles(dataDir) });
    const target = join(tempDir(), "restored");

    const restored = await restore(file, target);

    const source = treeHashes(dataDir);
    const expected: Record<string, string> = { [MANIFEST_NAME]: expect.any(String), [DUMP_FILE]: sha256(dump) };
    for (const [path, hash] of Object.entries(source)) if (!/remote_|url_cache/.test(path)) expected[`synapse/${path}`] = hash;
    expect(treeHashes(target)).toEqual(expected);
    expect(restored).toEqual({ manifest: MANIFEST, files: Object.keys(expected).length - 2, bytes: expect.any(Number), dumpBytes: dump.length });
    expect(JSON.parse(readFileSync(join(target, MANIFEST_NAME), "utf8"))).toEqual(MANIFEST);
    expect(statSync(join(target, "synapse/homeserver.yaml")).mode & 0o777).toBe(0o600);
    expect(statSync(join(target, "synapse/media_store/local_content")).mode & 0o777).toBe(0o700);
  });

  it("takes local media only, never remote media or URL preview caches, and no symbolic links", async () => {
    const dataDir = makeServerTree(tempDir());
    symlinkSync("/etc/passwd", join(dataDir, "media_store/local_content/ab/cd/planted"));
    const names: string[] = [];
    for await (const file of localMediaFiles(join(dataDir, "media_store"), "m")) names.push(file.name);
    expect(names).toEqual([
      "m/local_content/ab/cd/efghijklmnopqrstuvwx",
      "m/local_content/ab/cd/empty",
      `m/local_content/ab/ce/${"long-name-".repeat(12)}`,
      "m/local_content/ab/ce/ünïcödé",
      "m/local_content/zz/yy/exactly-a-block",
      "m/local_thumbnails/ab/cd/efghijklmnopqrstuvwx/32-32-image-png-crop",
    ]);
    const empty: string[] = [];
    for await (const file of localMediaFiles(join(tempDir(), "no-media-yet"), "m")) empty.push(file.name);
    expect(empty).toEqual([]);
  });

  it("never leaves the media store: a directory swapped for a symbolic link during the walk is left out, not followed", async () => {
    // Synapse owns the media store; a compromised one could swap a directory for a link to another customer's media
    // (or the host's files) between the agent listing a directory and descending into it.
    const dataDir = makeServerTree(tempDir());
    const elsewhere = tempDir();
    mkdirSync(join(elsewhere, "yy"));
    writeFileSync(join(elsewhere, "yy", "not-this-customers"), "someone else's file");
    const names: string[] = [];
    const contents: string[] = [];
    for await (const file of localMediaFiles(join(dataDir, "media_store"), "m")) {
      names.push(file.name);
      contents.push(readFileSync(file.path, "latin1"));
      if (names.length === 1) {
        rmSync(join(dataDir, "media_store/local_content/zz"), { recursive: true });
        symlinkSync(elsewhere, join(dataDir, "media_store/local_content/zz"));
      }
    }
    expect(names).not.toContain("m/local_content/zz/yy/not-this-customers");
    expect(contents).not.toContain("someone else's file");
    expect(names).toContain("m/local_thumbnails/ab/cd/efghijklmnopqrstuvwx/32-32-image-png-crop");

    // The media store itself replaced by a link: nothing is taken from where it points.
    const swapped = makeServerTree(tempDir());
    rmSync(join(swapped, "media_store"), { recursive: true });
    symlinkSync(join(dataDir, "media_store"), join(swapped, "media_store"));
    const none: string[] = [];
    for await (const file of localMediaFiles(join(swapped, "media_store"), "m")) none.push(file.name);
    expect(none).toEqual([]);
  });

  it("leaves out a media file with other hard links (Synapse makes none), but not a config file", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "elsewhere"), "not this customer's");
    linkSync(join(dir, "elsewhere"), join(dir, "linked"));
    const entries = await listing({
      manifest: MANIFEST,
      dump: [],
      files: [
        { name: "synapse/media_store/local_content/linked", path: join(dir, "linked"), media: true },
        { name: "synapse/homeserver.yaml", path: join(dir, "linked") },
      ],
    });
    expect(entries.map((e) => e.name)).toEqual([MANIFEST_NAME, "database/pg_dump.part-00000", "synapse/homeserver.yaml"]);
  });

  it("puts the manifest first, then the dump in 8 MiB entries, then the files", async () => {
    const dataDir = makeServerTree(tempDir());
    const entries = await listing({ manifest: MANIFEST, dump: [Buffer.alloc(DUMP_PART_SIZE + 10)], files: serverFiles(dataDir) });
    expect(entries.slice(0, 3).map((e) => e.name)).toEqual([MANIFEST_NAME, "database/pg_dump.part-00000", "database/pg_dump.part-00001"]);
    expect(entries.slice(1, 3).map((e) => e.size)).toEqual([DUMP_PART_SIZE, 10]);
    expect(entries.at(-1)!.name).toBe("synapse/chat.example.org.signing.key");
  });

  it.each([
    [0, [0]],
    [1, [1]],
    [DUMP_PART_SIZE - 1, [DUMP_PART_SIZE - 1]],
    [DUMP_PART_SIZE, [DUMP_PART_SIZE]],
    [DUMP_PART_SIZE + 1, [DUMP_PART_SIZE, 1]],
    [2 * DUMP_PART_SIZE + 5, [DUMP_PART_SIZE, DUMP_PART_SIZE, 5]],
  ])("splits a %i-byte dump into parts of %j bytes and joins them again", async (size, parts) => {
    const dump = pseudoRandomBytes(size, `dump-${size}`);
    const contents = () => ({ manifest: MANIFEST, dump: unevenPieces(dump), files: [] });
    const dumpEntries = (await listing(contents())).filter((e) => e.name.startsWith("database/"));
    expect(dumpEntries).toEqual(parts.map((partSize, i) => ({ name: `database/pg_dump.part-0000${i}`, size: partSize })));

    const target = join(tempDir(), "restored");
    expect(await extractArchive(tarArchive(contents()), target)).toMatchObject({ dumpBytes: size, files: 0 });
    expect(sha256(readFileSync(join(target, DUMP_FILE)))).toBe(sha256(dump));
  });

  it("skips a media file deleted while the backup runs, but not a missing config file", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "kept"), "kept");
    const vanished = { name: "synapse/media_store/local_content/gone", path: join(dir, "gone"), media: true };
    const entries = await listing({ manifest: MANIFEST, dump: [], files: [vanished, { name: "kept", path: join(dir, "kept") }] });
    expect(entries.map((e) => e.name)).toEqual([MANIFEST_NAME, "database/pg_dump.part-00000", "kept"]);
    await expect(listing({ manifest: MANIFEST, dump: [], files: [{ name: "synapse/homeserver.yaml", path: join(dir, "gone") }] })).rejects.toThrow(/ENOENT/);
  });

  it("refuses to archive a symbolic link named as a file", async () => {
    const dir = tempDir();
    symlinkSync("/etc/passwd", join(dir, "homeserver.yaml"));
    await expect(listing({ manifest: MANIFEST, dump: [], files: [{ name: "synapse/homeserver.yaml", path: join(dir, "homeserver.yaml") }] })).rejects.toThrow(
      /is a symbolic link/,
    );
  });

  it("refuses a FIFO put where a media file was, without waiting for a writer", async () => {
    // Opening a FIFO for reading blocks until someone writes: a compromised Synapse swapping one in for a file it
    // listed would hang the agent's I/O thread for good.
    const fifo = join(tempDir(), "upload");
    execFileSync("mkfifo", [fifo]);
    await expect(
      listing({ manifest: MANIFEST, dump: [], files: [{ name: "synapse/media_store/local_content/upload", path: fifo, media: true }] }),
    ).rejects.toThrow(/is not a regular file/);
  });

  it("is a standard archive: zstd -d | tar extracts it, and cat of the parts is the dump", async () => {
    const dataDir = makeServerTree(tempDir());
    const dump = pseudoRandomBytes(DUMP_PART_SIZE + 3, "cli");
    const file = await writeArchive({ manifest: MANIFEST, dump: [dump], files: serverFiles(dataDir) });
    const out = tempDir();

    const listed = shell(`zstd -d -c ${file} | tar -tvf -`);
    expect(listed).toMatch(/-rw------- 0\/0 +8388608 .* database\/pg_dump\.part-00000/);
    shell(`zstd -d -c ${file} | tar -xf - -C ${out}`);
    expect(shell(`cat database/pg_dump.part-* | sha256sum`, out).split(" ")[0]).toBe(sha256(dump));
    expect(treeHashes(join(out, "synapse"))).toEqual(
      Object.fromEntries(Object.entries(treeHashes(dataDir)).filter(([path]) => !/remote_|url_cache/.test(path))),
    );
  });

  it("reads archives that GNU tar writes in pax format (directory entries included)", async () => {
    const dir = makeServerTree(tempDir());
    writeFileSync(join(dir, MANIFEST_NAME), JSON.stringify(MANIFEST));
    mkdirSync(join(dir, "database"));
    writeFileSync(join(dir, "database/pg_dump.part-00000"), "dump");
    const file = join(tempDir(), "gnu.tar.zst");
    shell(`tar --format=pax --sort=name -cf - ${MANIFEST_NAME} database media_store homeserver.yaml | zstd -q -1 -o ${file}`, dir);

    const target = join(tempDir(), "restored");
    expect(await restore(file, target)).toMatchObject({ manifest: MANIFEST, dumpBytes: 4 });
    expect(treeHashes(join(target, "media_store"))).toEqual(treeHashes(join(dir, "media_store")));
  });
});

/** Whether this process holds a descriptor open on `path` (descriptors that close while listed are skipped). */
function descriptorsOpenOn(path: string): boolean {
  return readdirSync("/proc/self/fd").some((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`, "utf8") === path;
    } catch {
      return false;
    }
  });
}

describe("backup archive buffers", () => {
  it("a pool's buffer is taken again only once given back, whole again from any view of it", async () => {
    const pool = new BlockPool(1);
    const first = await pool.take();
    let second: Buffer | undefined;
    const taking = pool.take().then((buffer) => (second = buffer));
    await sleep(5);
    expect(second).toBeUndefined();

    pool.give(first.subarray(0, 10));
    await taking;
    expect(second!.buffer).toBe(first.buffer);
    expect(second!.length).toBe(first.length);
  });

  it("a closed pool fails the take that waits and every take after it", async () => {
    const pool = new BlockPool(1);
    await pool.take();
    const waiting = pool.take();
    pool.close(new Error("reader gone"));
    await expect(waiting).rejects.toThrow("reader gone");
    await expect(pool.take()).rejects.toThrow("reader gone");
  });

  it("keeps every byte when a slow reader holds the compressor back: no buffer is refilled before zstd has read it", async () => {
    // Hundreds of files from empty to 1 MiB, so blocks end mid-header, mid-file and mid-padding, through a reader
    // that waits after every chunk: the compressor's queue is full and every pooled buffer is in use.
    const dir = tempDir();
    const media = join(dir, "media_store/local_content");
    mkdirSync(media, { recursive: true });
    const files = [];
    for (let i = 0; i < 300; i++) {
      const name = `f${String(i).padStart(3, "0")}`;
      writeFileSync(join(media, name), pseudoRandomBytes((i * 7919) % (1024 * 1024), name));
      files.push({ name: `synapse/media_store/local_content/${name}`, path: join(media, name), media: true });
    }
    const dump = pseudoRandomBytes(DUMP_PART_SIZE + 300_001, "slow-dump");
    const file = join(tempDir(), "backup.tar.zst");
    async function* slowly(source: AsyncIterable<Buffer>) {
      for await (const chunk of source) {
        await sleep(1);
        yield chunk;
      }
    }
    await pipeline(archiveStream({ manifest: MANIFEST, dump: unevenPieces(dump), files }), slowly, createWriteStream(file));

    const target = join(tempDir(), "restored");
    await restore(file, target);
    expect(sha256(readFileSync(join(target, DUMP_FILE)))).toBe(sha256(dump));
    expect(treeHashes(join(target, "synapse/media_store/local_content"))).toEqual(treeHashes(media));
  });

  it("stops reading and closes its files when the reader goes away", async () => {
    const dir = tempDir();
    const big = join(dir, "big");
    writeFileSync(big, pseudoRandomBytes(32 * 1024 * 1024, "big"));
    const archived: string[] = [];
    const stream = archiveStream({
      manifest: MANIFEST,
      dump: [],
      files: [{ name: "synapse/media_store/local_content/big", path: big, media: true }],
      onArchived: (file) => archived.push(file.name),
    });
    // Nobody reads: zstd stops once its output is full, and every pooled block waits in its queue.
    const compressor = stream as Duplex; // the archive stream is zstd's own, its input queue in view
    await waitFor(() => compressor.writableLength === BLOCKS_IN_FLIGHT * READ_SIZE, "every block to wait in the compressor");
    stream.destroy();

    await waitFor(() => !descriptorsOpenOn(big), "the archived file to be closed");
    expect(archived).toEqual([]);
  });
});

describe("backup archive extraction refuses", () => {
  async function refusal(tar: Buffer[], target = join(tempDir(), "restored")): Promise<string> {
    const error = await extractArchive(Readable.from(tar), target).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    if (!error) throw new Error("extraction succeeded");
    expect(existsSync(target)).toBe(false); // nothing half-written is left
    return error.message;
  }

  it.each(["../escaped", "/tmp/absolute", "synapse/../../escaped", "synapse//double", "./dot"])("the entry name %j", async (name) => {
    const parent = tempDir();
    const message = await refusal([...tarOf({ name: "database/pg_dump.part-00000", data: "" }, { name, data: "evil" }), TAR_END], join(parent, "t"));
    expect(message).toMatch(/^refusing entry .*not a plain relative path/);
    expect(readdirSync(parent)).toEqual([]);
    expect(existsSync("/tmp/absolute")).toBe(false);
  });

  it("symbolic and hard links", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, MANIFEST_NAME), JSON.stringify(MANIFEST));
    writeFileSync(join(dir, "target"), "x");
    symlinkSync("/etc/passwd", join(dir, "symlink"));
    expect(await refusal([run("tar", ["--format=pax", "-cf", "-", MANIFEST_NAME, "symlink"], undefined, dir)])).toMatch(/^refusing symbolic link symlink/);
    unlinkSync(join(dir, "symlink"));
    shell("ln target hardlink", dir);
    expect(await refusal([run("tar", ["--format=pax", "-cf", "-", MANIFEST_NAME, "target", "hardlink"], undefined, dir)])).toMatch(
      /^refusing hard link hardlink/,
    );
  });

  it("to write through a symbolic link planted in the target while it extracts", async () => {
    // The entries before the link is planted, the planting (run when the extraction asks for the next entry, after
    // the previous one is written), then the rest.
    async function* planting(before: Buffer[], plant: () => void, after: Buffer[]): AsyncGenerator<Buffer> {
      yield* before;
      plant();
      yield* after;
    }
    const elsewhere = tempDir();
    const target = join(tempDir(), "restored");
    const entries = tarOf({ name: "database/pg_dump.part-00000", data: "dump" });
    const file = (name: string) => tarOf({ name, data: "restored" }).slice(3);
    const error = await extractArchive(
      planting(entries, () => symlinkSync(elsewhere, join(target, "synapse")), [...file("synapse/homeserver.yaml"), TAR_END]),
      target,
    ).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(error?.message).toMatch(/^refusing to extract into synapse: not a directory/);
    expect(readdirSync(elsewhere)).toEqual([]);
    expect(existsSync(target)).toBe(false);

    // A directory the extraction is in swapped for a link between two of its files: the second goes where the first
    // went, never where the link points.
    const swapped = join(tempDir(), "restored");
    const media = "synapse/media_store/local_content";
    await extractArchive(
      planting([...entries, ...file(`${media}/a`)], () => {
        renameSync(join(swapped, media), join(swapped, "moved"));
        symlinkSync(elsewhere, join(swapped, media));
      }, [...file(`${media}/b`), TAR_END]),
      swapped,
    );
    expect(readdirSync(elsewhere)).toEqual([]);
    expect(readdirSync(join(swapped, "moved")).sort()).toEqual(["a", "b"]);
  });

  it("an archive that does not start with the manifest, or holds no dump", async () => {
    const noManifest = [tarFileHeader({ name: "synapse/homeserver.yaml", size: 0, mtime: 0 }), TAR_END];
    expect(await refusal(noManifest)).toMatch(/^not a Berth backup: its first entry is synapse\/homeserver.yaml/);
    expect(await refusal([...tarOf(), TAR_END])).toMatch(/holds no database dump/);
    const gap = tarOf({ name: "database/pg_dump.part-00000", data: "a" }, { name: "database/pg_dump.part-00002", data: "c" });
    expect(await refusal([...gap, TAR_END])).toMatch(/dump part 2 where part 1 belongs/);
  });

  it("the same file twice", async () => {
    const twice = tarOf({ name: "database/pg_dump.part-00000", data: "" }, { name: "a", data: "1" }, { name: "a", data: "2" });
    expect(await refusal([...twice, TAR_END])).toMatch(/^the archive holds a twice$/);
  });

  it("an archive without its end-of-archive marker, or with data after it", async () => {
    const entries = tarOf({ name: "database/pg_dump.part-00000", data: "dump" });
    expect(await refusal(entries)).toMatch(/truncated/);
    expect(await refusal([...entries, TAR_END, Buffer.from("more")])).toMatch(/data follows the archive's end-of-archive marker/);
  });

  it("a truncated or corrupted zstd stream", async () => {
    const file = await writeArchive({ manifest: MANIFEST, dump: [pseudoRandomBytes(500_000)], files: [] });
    const bytes = readFileSync(file);
    const cut = join(tempDir(), "cut.tar.zst");
    writeFileSync(cut, bytes.subarray(0, bytes.length - 100));
    const cutTarget = join(tempDir(), "restored");
    await expect(restore(cut, cutTarget)).rejects.toThrow(/the archive is truncated/);
    expect(existsSync(cutTarget)).toBe(false);

    const corrupted = join(tempDir(), "corrupted.tar.zst");
    bytes[bytes.length - 300_000]! ^= 0x40; // inside the dump's stored (incompressible) block
    writeFileSync(corrupted, bytes);
    await expect(restore(corrupted, join(tempDir(), "restored"))).rejects.toMatchObject({ code: expect.stringMatching(/^ZSTD_error_/) });
  });

  it("a target directory that exists already", async () => {
    const file = await writeArchive({ manifest: MANIFEST, dump: [], files: [] });
    await expect(restore(file, tempDir())).rejects.toMatchObject({ code: "EEXIST" });
  });
});
