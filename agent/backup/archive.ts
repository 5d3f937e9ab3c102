// The archive inside a Berth backup: a zstd-compressed POSIX tar holding
// berth-backup.json first, then the database dump in fixed-size entries (tar needs
// each entry's size up front; pg_dump's is unknown until it ends), then files from
// disk. And the way back: into a fresh directory, refusing names that would leave
// it, with the dump's parts joined into one file again.
import { constants as fs } from "node:fs";
import { mkdir, open, readdir, rm, type FileHandle } from "node:fs/promises";
import type { Readable } from "node:stream";
import { pipeline as pipelineAsync } from "node:stream/promises";
import { constants as zstd, createZstdCompress, createZstdDecompress, type ZstdCompress, type ZstdDecompress } from "node:zlib";
import { z } from "zod";
import { OPEN_DIRECTORY, openOwnedDirectory, throughDescriptor } from "../owned-directories.ts";
import { ArchiveError, readTar, TAR_END, tarFileHeader, tarPadding, type TarEntry } from "./tar.ts";

export const MANIFEST_NAME = "berth-backup.json";
/** Every dump entry but the last holds exactly this much. */
export const DUMP_PART_SIZE = 8 * 1024 * 1024;
/** Where a restore puts the joined dump, relative to its target directory. */
export const DUMP_FILE = "database/pg_dump";
const DUMP_PART = /^database\/pg_dump\.part-(\d{5,})$/;
const dumpPartName = (index: number) => `${DUMP_FILE}.part-${String(index).padStart(5, "0")}`;
/** Synapse's media of this server itself; remote media and URL previews are caches it fetches again. */
const LOCAL_MEDIA_DIRS = ["local_content", "local_thumbnails"] as const;
export const READ_SIZE = 256 * 1024;
/** zlib's default 16 KiB output buffers hold zstd to ~200 MiB/s; 256 KiB ones let it reach ~1.5 GiB/s. */
const ZSTD_CHUNK_SIZE = 256 * 1024;
const MAX_MANIFEST_SIZE = 1024 * 1024;

/** berth-backup.json: what the backup is of. Names only, never secrets. */
export const backupManifestSchema = z.object({
  format: z.literal(1),
  serverId: z.string().min(1),
  serverName: z.string().min(1),
  createdAt: z.iso.datetime(),
  synapseImage: z.string().min(1),
  postgresImage: z.string().min(1),
  entries: z.array(z.string()),
});
export type BackupManifest = z.infer<typeof backupManifestSchema>;

export interface ArchiveFile {
  /** Its name in the archive, e.g. "synapse/homeserver.yaml". */
  name: string;
  /** Where it is on disk (for media, a path through its open directory: read it before asking for the next file). */
  path: string;
  /**
   * Written by the homeserver (its media): left out when it is gone by the time it is read (deleted
   * while the backup runs), or when it has other hard links (Synapse makes none; one would be a
   * link to a file elsewhere, where the kernel does not refuse it).
   */
  media?: boolean;
}

export interface ArchiveContents {
  manifest: BackupManifest;
  /** Small files made in memory (an export's README), archived right after the manifest. */
  documents?: Array<{ name: string; content: Buffer }>;
  /** pg_dump's output, any length. */
  dump: Iterable<Buffer> | AsyncIterable<Buffer>;
  files: Iterable<ArchiveFile> | AsyncIterable<ArchiveFile>;
  /** Told of each file once its entry is in the archive (a media file left out is not). */
  onArchived?: (file: ArchiveFile) => void;
}

// ---------- writing ----------

/** The dump in parts of DUMP_PART_SIZE bytes (the last shorter; at least one), each as the chunks it arrived in. */
async function* dumpParts(dump: ArchiveContents["dump"]): AsyncGenerator<{ size: number; chunks: Buffer[] }> {
  let chunks: Buffer[] = [];
  let size = 0;
  let parts = 0;
  for await (const data of dump) {
    let rest = data;
    while (rest.length) {
      const taken = rest.subarray(0, DUMP_PART_SIZE - size);
      chunks.push(taken);
      size += taken.length;
      rest = rest.subarray(taken.length);
      if (size === DUMP_PART_SIZE) {
        yield { size, chunks };
        parts++;
        chunks = [];
        size = 0;
      }
    }
  }
  if (size > 0 || parts === 0) yield { size, chunks };
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * Where the tar's blocks are staged. A backup's blocks come from a few buffers that come back once
 * zstd has read them: fresh ones for each 256 KiB would be 2 GiB of garbage for a 2 GiB backup,
 * and V8 runs a full collection for every few dozen MiB of buffers allocated.
 */
export interface BlockBuffers {
  /** A READ_SIZE buffer to fill. */
  take(): Promise<Buffer>;
}

/** A fresh buffer for every block: for a consumer that keeps what it is given. */
const freshBlocks: BlockBuffers = { take: async () => Buffer.allocUnsafe(READ_SIZE) };

/** A fixed set of buffers, each taken again only after it is given back; taking waits for one, and fails once the pool is closed. */
export class BlockPool implements BlockBuffers {
  private readonly free: Buffer[] = [];
  private waiting: { resolve: (buffer: Buffer) => void; reject: (error: Error) => void } | undefined;
  private closedBy: Error | undefined;

  constructor(count: number) {
    for (let i = 0; i < count; i++) this.free.push(Buffer.allocUnsafeSlow(READ_SIZE));
  }

  take(): Promise<Buffer> {
    if (this.closedBy) return Promise.reject(this.closedBy);
    const buffer = this.free.pop();
    if (buffer) return Promise.resolve(buffer);
    if (this.waiting) return Promise.reject(new Error("one block is taken at a time"));
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  /** Gives back a block (or any view of it) taken from this pool. */
  give(block: Buffer): void {
    const buffer = Buffer.from(block.buffer as ArrayBuffer);
    const waiting = this.waiting;
    this.waiting = undefined;
    if (waiting) waiting.resolve(buffer);
    else this.free.push(buffer);
  }

  close(error: Error): void {
    this.closedBy = error;
    this.waiting?.reject(error);
    this.waiting = undefined;
  }
}

/** The tar's bytes in blocks of READ_SIZE (the last shorter): small pieces are copied in, files read straight into them. */
class TarBlocks {
  private block: Buffer | undefined;
  private filled = 0;
  private readonly buffers: BlockBuffers;

  constructor(buffers: BlockBuffers) {
    this.buffers = buffers;
  }

  /** Copies `bytes` in, yielding each block it fills. */
  async *write(bytes: Buffer): AsyncGenerator<Buffer> {
    for (let offset = 0; offset < bytes.length; ) {
      const block = await this.current();
      const copied = bytes.copy(block, this.filled, offset);
      offset += copied;
      this.filled += copied;
      if (this.filled === block.length) yield this.finish();
    }
  }

  /** Reads `size` bytes of a file into the blocks, yielding each block it fills; fails if the file has fewer. */
  async *read(handle: FileHandle, size: number, path: string): AsyncGenerator<Buffer> {
    for (let position = 0; position < size; ) {
      const block = await this.current();
      const { bytesRead } = await handle.read(block, this.filled, Math.min(block.length - this.filled, size - position), position);
      if (bytesRead === 0) throw new ArchiveError(`${path} shrank while it was archived`);
      position += bytesRead;
      this.filled += bytesRead;
      if (this.filled === block.length) yield this.finish();
    }
  }

  private async current(): Promise<Buffer> {
    if (!this.block) this.block = await this.buffers.take();
    return this.block;
  }

  /** The block as filled so far, if anything is in it. */
  *rest(): Generator<Buffer> {
    if (this.filled > 0) yield this.finish();
  }

  private finish(): Buffer {
    const block = this.block!.subarray(0, this.filled);
    this.block = undefined;
    this.filled = 0;
    return block;
  }
}

/** One file's entry, read once and in full (never following a symbolic link; a FIFO is opened without waiting for a writer, then refused). */
async function* fileEntry(file: ArchiveFile, blocks: TarBlocks, onArchived: ArchiveContents["onArchived"]): AsyncGenerator<Buffer> {
  let handle: FileHandle;
  try {
    handle = await open(file.path, fs.O_RDONLY | fs.O_NOFOLLOW | fs.O_NONBLOCK);
  } catch (error) {
    if (file.media && errorCode(error) === "ENOENT") return;
    if (errorCode(error) === "ELOOP") throw new ArchiveError(`${file.path} is a symbolic link`);
    throw error;
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new ArchiveError(`${file.path} is not a regular file`);
    if (file.media && stat.nlink > 1) return;
    yield* blocks.write(tarFileHeader({ name: file.name, size: stat.size, mtime: stat.mtimeMs / 1000 }));
    // Exactly the size in the header: a file that grows is cut there, one that shrinks fails.
    yield* blocks.read(handle, stat.size, file.path);
    yield* blocks.write(tarPadding(stat.size));
    onArchived?.(file);
  } finally {
    await handle.close();
  }
}

/**
 * The archive's tar bytes in blocks of 256 KiB, produced as fast as they are consumed. With a
 * BlockPool, each block's buffer is taken again once given back: the consumer gives it back when
 * it no longer needs the bytes.
 */
export async function* tarArchive(
  { manifest, documents = [], dump, files, onArchived }: ArchiveContents,
  buffers: BlockBuffers = freshBlocks,
): AsyncGenerator<Buffer> {
  const blocks = new TarBlocks(buffers);
  const mtime = Date.now() / 1000;
  const manifestBytes = Buffer.from(`${JSON.stringify(backupManifestSchema.parse(manifest), null, 2)}\n`);
  for (const { name, content } of [{ name: MANIFEST_NAME, content: manifestBytes }, ...documents]) {
    yield* blocks.write(tarFileHeader({ name, size: content.length, mtime }));
    yield* blocks.write(content);
    yield* blocks.write(tarPadding(content.length));
  }
  let index = 0;
  for await (const part of dumpParts(dump)) {
    yield* blocks.write(tarFileHeader({ name: dumpPartName(index++), size: part.size, mtime }));
    for (const chunk of part.chunks) yield* blocks.write(chunk);
    yield* blocks.write(tarPadding(part.size));
  }
  for await (const file of files) yield* fileEntry(file, blocks, onArchived);
  yield* blocks.write(TAR_END);
  yield* blocks.rest();
}

/**
 * Regular files under the media store's local directories (missing ones are empty), in name order,
 * never outside it (owned-directories.ts). Each file's path is valid only until the next file is
 * asked for.
 */
export async function* localMediaFiles(mediaStore: string, archiveDir: string): AsyncGenerator<ArchiveFile> {
  const store = await openOwnedDirectory(mediaStore);
  if (!store) return;
  try {
    for (const dir of LOCAL_MEDIA_DIRS) yield* regularFiles(store, dir, `${archiveDir}/${dir}`);
  } finally {
    await store.close();
  }
}

async function* regularFiles(parent: FileHandle, entry: string, name: string): AsyncGenerator<ArchiveFile> {
  const dir = await openOwnedDirectory(throughDescriptor(parent.fd, entry));
  if (!dir) return;
  try {
    const entries = await readdir(throughDescriptor(dir.fd), { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const child of entries) {
      // Synapse writes regular files only; a symbolic link (planted by a compromised Synapse) is left out.
      if (child.isDirectory()) yield* regularFiles(dir, child.name, `${name}/${child.name}`);
      else if (child.isFile()) yield { name: `${name}/${child.name}`, path: throughDescriptor(dir.fd, child.name), media: true };
    }
  } finally {
    await dir.close();
  }
}

/**
 * zstd level 1: the fastest of the regular levels. Most of a backup is media
 * (JPEG, PNG, video) and pg_dump -Fc's own zlib output, which no level shrinks
 * much, so higher levels only cost CPU on a host that runs homeservers. Frames
 * carry a checksum, so `zstd -d` and a restore notice corrupted data.
 */
function createArchiveCompressor(): ZstdCompress {
  return createZstdCompress({ chunkSize: ZSTD_CHUNK_SIZE, params: { [zstd.ZSTD_c_compressionLevel]: 1, [zstd.ZSTD_c_checksumFlag]: 1 } });
}

/**
 * At most an 8 MiB window (level 1 uses 512 KiB; level 19 needs 8 MiB): a crafted
 * archive cannot make a restore allocate zstd's default maximum of 128 MiB. Node's
 * zstd does not notice a truncated frame (nodejs/node#64592); tar's end-of-archive
 * marker, which readTar requires, does.
 */
function createArchiveDecompressor(): ZstdDecompress {
  return createZstdDecompress({ chunkSize: ZSTD_CHUNK_SIZE, params: { [zstd.ZSTD_d_windowLogMax]: 23 } });
}

/** Blocks of tar in the compressor at once: enough that reading the next never waits for zstd to take the last. */
export const BLOCKS_IN_FLIGHT = 4;

/** The compressed archive, produced as fast as it is read; any failure errors the returned stream. */
export function archiveStream(contents: ArchiveContents): Readable {
  const compressor = createArchiveCompressor();
  const pool = new BlockPool(BLOCKS_IN_FLIGHT);
  // A compressor destroyed by its reader never calls back for the blocks it holds: the tar stops at its next block.
  compressor.once("close", () => pool.close(new Error("the archive's reader went away")));
  writeBlocks(tarArchive(contents, pool), compressor, pool).then(
    () => compressor.end(),
    (error: Error) => compressor.destroy(error),
  );
  return compressor;
}

/** Each block to the compressor, given back to the pool once zstd has consumed it (its write callback). */
async function writeBlocks(blocks: AsyncIterable<Buffer>, compressor: ZstdCompress, pool: BlockPool): Promise<void> {
  for await (const block of blocks) {
    if (compressor.destroyed) return;
    compressor.write(block, (error) => {
      if (!error) pool.give(block);
    });
  }
}

// ---------- extracting ----------

export interface ExtractedArchive {
  manifest: BackupManifest;
  /** Files restored from disk (all but the manifest and the dump), and their bytes. */
  files: number;
  bytes: number;
  /** Size of the joined dump at DUMP_FILE. */
  dumpBytes: number;
}

/** The entry's path components; refuses absolute names and any "." or ".." component. */
export function entryParts(name: string): string[] {
  const parts = name.split("/");
  if (name.includes("\0") || parts.some((part) => part === "" || part === "." || part === "..")) {
    throw new ArchiveError(`refusing entry ${JSON.stringify(name)}: not a plain relative path inside the archive`);
  }
  return parts;
}

/**
 * The directory a backup is extracted into, entered only through descriptors: each directory on an
 * entry's path is made (0700) where missing and opened without following a link, through its
 * parent's descriptor, and files are created through their directory's. A link planted in the
 * target, even while it is being extracted, is never written through. The directories of the last
 * entry stay open, as entries come grouped by directory.
 */
export class ExtractionTarget {
  private readonly chain: Array<{ name: string; handle: FileHandle }> = [];
  private readonly root: FileHandle;

  private constructor(root: FileHandle) {
    this.root = root;
  }

  static async make(path: string): Promise<ExtractionTarget> {
    await mkdir(path, { mode: 0o700 });
    return new ExtractionTarget(await open(path, OPEN_DIRECTORY));
  }

  /** The descriptor of the directory at `parts` (relative), made where missing. */
  async directory(parts: string[]): Promise<number> {
    let shared = 0;
    while (shared < this.chain.length && shared < parts.length && this.chain[shared]!.name === parts[shared]) shared++;
    for (const { handle } of this.chain.splice(shared).reverse()) await handle.close();
    for (const name of parts.slice(this.chain.length)) {
      const path = throughDescriptor(this.innermost(), name);
      try {
        await mkdir(path, { mode: 0o700 });
      } catch (error) {
        if (errorCode(error) !== "EEXIST") throw error;
      }
      let handle: FileHandle;
      try {
        handle = await open(path, OPEN_DIRECTORY);
      } catch (error) {
        if (errorCode(error) !== "ENOTDIR" && errorCode(error) !== "ELOOP") throw error;
        const where = [...this.chain.map((dir) => dir.name), name].join("/");
        throw new ArchiveError(`refusing to extract into ${where}: not a directory (a symbolic link?)`);
      }
      this.chain.push({ name, handle });
    }
    return this.innermost();
  }

  private innermost(): number {
    return (this.chain.at(-1)?.handle ?? this.root).fd;
  }

  /** Writes an entry's body to a new file (0600), or appends it to an existing one; never through a link. */
  async write(parts: string[], body: Iterable<Buffer> | AsyncIterable<Buffer>, append = false): Promise<void> {
    const dir = await this.directory(parts.slice(0, -1));
    const flags = fs.O_WRONLY | fs.O_NOFOLLOW | (append ? fs.O_APPEND : fs.O_CREAT | fs.O_EXCL);
    let handle: FileHandle;
    try {
      handle = await open(throughDescriptor(dir, parts.at(-1)), flags, 0o600);
    } catch (error) {
      if (errorCode(error) === "EEXIST") throw new ArchiveError(`the archive holds ${parts.join("/")} twice`);
      if (errorCode(error) === "ELOOP") throw new ArchiveError(`refusing to extract ${parts.join("/")}: a symbolic link is in its place`);
      throw error;
    }
    await pipelineAsync(body, handle.createWriteStream());
  }

  async close(): Promise<void> {
    for (const { handle } of this.chain.splice(0).reverse()) await handle.close();
    await this.root.close();
  }
}

async function readManifest(entry: TarEntry): Promise<{ manifest: BackupManifest; bytes: Buffer }> {
  if (entry.name !== MANIFEST_NAME) throw new ArchiveError(`not a Berth backup: its first entry is ${entry.name}, not ${MANIFEST_NAME}`);
  if (entry.size > MAX_MANIFEST_SIZE) throw new ArchiveError(`${MANIFEST_NAME} is larger than ${MAX_MANIFEST_SIZE} bytes`);
  const chunks: Buffer[] = [];
  for await (const chunk of entry.body) chunks.push(chunk);
  const bytes = Buffer.concat(chunks);
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new ArchiveError(`${MANIFEST_NAME} is not JSON`);
  }
  const result = backupManifestSchema.safeParse(parsed);
  if (!result.success) throw new ArchiveError(`${MANIFEST_NAME} is not a backup manifest: ${z.prettifyError(result.error)}`);
  return { manifest: result.data, bytes };
}

async function extractEntries(tar: AsyncIterable<Buffer>, target: ExtractionTarget): Promise<ExtractedArchive> {
  let manifest: BackupManifest | undefined;
  const result = { files: 0, bytes: 0, dumpParts: 0, dumpBytes: 0 };
  for await (const entry of readTar(tar)) {
    if (!manifest) {
      const read = await readManifest(entry);
      manifest = read.manifest;
      await target.write([MANIFEST_NAME], [read.bytes]);
      continue;
    }
    if (entry.type === "directory") {
      await target.directory(entryParts(entry.name));
      continue;
    }
    const part = DUMP_PART.exec(entry.name);
    if (part) {
      if (Number(part[1]) !== result.dumpParts) {
        throw new ArchiveError(`database dump part ${Number(part[1])} where part ${result.dumpParts} belongs: the dump cannot be joined`);
      }
      await target.write(DUMP_FILE.split("/"), entry.body, result.dumpParts > 0);
      result.dumpParts++;
      result.dumpBytes += entry.size;
    } else {
      await target.write(entryParts(entry.name), entry.body);
      result.files++;
      result.bytes += entry.size;
    }
  }
  if (!manifest) throw new ArchiveError("the archive is empty");
  if (result.dumpParts === 0) throw new ArchiveError("the backup holds no database dump");
  return { manifest, files: result.files, bytes: result.bytes, dumpBytes: result.dumpBytes };
}

/**
 * Extracts an archive's tar bytes into targetDir, which must not exist yet (it is
 * made 0700; directories 0700, files 0600, owned by this process: the caller
 * hands them to the server's uid). On any failure targetDir is removed again,
 * so a failed restore leaves nothing half-written behind.
 */
export function extractArchive(tar: AsyncIterable<Buffer>, targetDir: string): Promise<ExtractedArchive> {
  return extractInto(targetDir, (target) => extractEntries(tar, target));
}

/** Runs `extract` into a new targetDir (see extractArchive), which is removed again when it fails. */
export async function extractInto<T>(targetDir: string, extract: (target: ExtractionTarget) => Promise<T>): Promise<T> {
  const target = await ExtractionTarget.make(targetDir);
  try {
    return await extract(target).finally(() => target.close());
  } catch (error) {
    await rm(targetDir, { recursive: true, force: true });
    throw error;
  }
}

export class ArchiveTooLarge extends ArchiveError {
  override name = "ArchiveTooLarge";
  readonly maxBytes: number;

  constructor(maxBytes: number) {
    super(`the archive unpacks to more than ${maxBytes} bytes`);
    this.maxBytes = maxBytes;
  }
}

/**
 * The bytes as they pass, failing once more than `maxBytes` have: an archive's unpacked size is
 * bounded before it is written, however well it compresses.
 */
export function byteLimit(maxBytes: number): (source: AsyncIterable<Buffer>) => AsyncGenerator<Buffer> {
  return async function* (source) {
    let total = 0;
    for await (const chunk of source) {
      total += chunk.length;
      if (total > maxBytes) throw new ArchiveTooLarge(maxBytes);
      yield chunk;
    }
  };
}

/** Decompresses an archive and extracts it into targetDir (see extractArchive); at most `maxBytes` of tar when given. */
export function restoreArchive(compressed: Readable, targetDir: string, maxBytes = Number.POSITIVE_INFINITY): Promise<ExtractedArchive> {
  return pipelineAsync(compressed, createArchiveDecompressor(), byteLimit(maxBytes), (tar: AsyncIterable<Buffer>) => extractArchive(tar, targetDir));
}
