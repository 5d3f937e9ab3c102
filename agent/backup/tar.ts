// POSIX tar: ustar headers, with a pax extended header where ustar's fields are too
// small (names over 100 bytes or not ASCII, files of 8 GiB or more). Written and read
// as async iterables of Buffers, so a stream pipeline's backpressure bounds memory.
// The reader yields regular files and directories only and refuses links, devices
// and the like: a restore must never create them.

const TAR_BLOCK = 512;
/** Two zero blocks end an archive. */
export const TAR_END = Buffer.alloc(2 * TAR_BLOCK);
/** The largest size ustar's 11 octal digits hold. */
const MAX_USTAR_SIZE = 0o77777777777;
/** We write only path and size records: a bigger pax header is not ours. */
const MAX_PAX_HEADER_SIZE = 64 * 1024;

export class ArchiveError extends Error {
  override name = "ArchiveError";
}

export interface TarFileHeader {
  name: string;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
}

export function tarPadding(size: number): Buffer {
  return Buffer.alloc((TAR_BLOCK - (size % TAR_BLOCK)) % TAR_BLOCK);
}

function writeOctal(block: Buffer, offset: number, length: number, value: number): void {
  block.write(`${value.toString(8).padStart(length - 1, "0")}\0`, offset, length, "ascii");
}

function ustarHeader(name: Buffer, size: number, mtime: number, type: "0" | "x"): Buffer {
  const block = Buffer.alloc(TAR_BLOCK);
  name.copy(block, 0, 0, Math.min(name.length, 100));
  writeOctal(block, 100, 8, 0o600);
  writeOctal(block, 108, 8, 0); // uid
  writeOctal(block, 116, 8, 0); // gid
  writeOctal(block, 124, 12, size);
  writeOctal(block, 136, 12, Math.max(0, Math.min(Math.floor(mtime), MAX_USTAR_SIZE)));
  block.write(type, 156, "ascii");
  block.write("ustar\x0000", 257, "ascii");
  block.write(`${checksum(block).toString(8).padStart(6, "0")}\0 `, 148, 8, "ascii");
  return block;
}

/** Sum of the header's bytes with the checksum field taken as spaces. */
function checksum(block: Buffer): number {
  let sum = 8 * 0x20;
  for (let i = 0; i < TAR_BLOCK; i++) if (i < 148 || i >= 156) sum += block[i]!;
  return sum;
}

/** pax records: "<length> <key>=<value>\n", the length counting itself. */
function paxRecords(values: Record<string, string>): Buffer {
  return Buffer.concat(
    Object.entries(values).map(([key, value]) => {
      const rest = Buffer.byteLength(` ${key}=${value}\n`);
      let length = rest + String(rest).length;
      if (String(length).length > String(rest).length) length = rest + String(length).length;
      return Buffer.from(`${length} ${key}=${value}\n`, "utf8");
    }),
  );
}

/** The header block(s) of a regular file (mode 0600, owner 0:0), before its data. */
export function tarFileHeader({ name, size, mtime }: TarFileHeader): Buffer {
  const nameBytes = Buffer.from(name, "utf8");
  const pax: Record<string, string> = {};
  if (nameBytes.length > 100 || /[^\x20-\x7e]/.test(name)) pax.path = name;
  if (size > MAX_USTAR_SIZE) pax.size = String(size);
  const header = ustarHeader(nameBytes, pax.size ? 0 : size, mtime, "0");
  if (!pax.path && !pax.size) return header;
  const records = paxRecords(pax);
  return Buffer.concat([ustarHeader(Buffer.from("PaxHeader"), records.length, mtime, "x"), records, tarPadding(records.length), header]);
}

// ---------- reading ----------

export interface TarEntry {
  /** As stored: not checked against traversal here. Directories lose their trailing "/". */
  name: string;
  type: "file" | "directory";
  size: number;
  /** The entry's data; what the consumer leaves unread is skipped. */
  body: AsyncIterable<Buffer>;
}

const truncated = () => new ArchiveError("the archive is truncated (it ends without tar's end-of-archive marker)");

/** Reads exact byte counts from an async iterable of Buffers. */
class ByteReader {
  private readonly chunks: AsyncIterator<Buffer>;
  private pending: Buffer = Buffer.alloc(0);

  constructor(source: AsyncIterable<Buffer>) {
    this.chunks = source[Symbol.asyncIterator]();
  }

  /** Exactly `count` bytes, or undefined when the source ends first. */
  async read(count: number): Promise<Buffer | undefined> {
    while (this.pending.length < count) {
      const next = await this.chunks.next();
      if (next.done) return undefined;
      this.pending = this.pending.length ? Buffer.concat([this.pending, next.value]) : next.value;
    }
    return this.take(count);
  }

  /** Between 1 and `max` bytes (without copying); throws when the source has ended. */
  async upTo(max: number): Promise<Buffer> {
    if (!this.pending.length) {
      const next = await this.chunks.next();
      if (next.done) throw truncated();
      this.pending = next.value;
    }
    return this.take(Math.min(max, this.pending.length));
  }

  async skip(count: number): Promise<void> {
    while (count > 0) count -= (await this.upTo(count)).length;
  }

  /** Whether everything left is zero bytes (tar pads its last record with them). */
  async restIsZero(): Promise<boolean> {
    for (;;) {
      if (this.pending.some((byte) => byte !== 0)) return false;
      const next = await this.chunks.next();
      if (next.done) return true;
      this.pending = next.value;
    }
  }

  private take(count: number): Buffer {
    const bytes = this.pending.subarray(0, count);
    this.pending = this.pending.subarray(count);
    return bytes;
  }
}

function field(block: Buffer, offset: number, length: number): string {
  const bytes = block.subarray(offset, offset + length);
  const end = bytes.indexOf(0);
  return bytes.subarray(0, end < 0 ? length : end).toString("utf8");
}

function octalField(block: Buffer, offset: number, length: number): number {
  const text = field(block, offset, length).trim();
  if (!/^[0-7]+$/.test(text)) throw new ArchiveError("corrupted tar header (a numeric field is not octal)");
  return parseInt(text, 8);
}

function parsePax(records: Buffer): Map<string, string> {
  const values = new Map<string, string>();
  let offset = 0;
  while (offset < records.length) {
    const space = records.indexOf(0x20, offset);
    const length = Number(records.toString("ascii", offset, space));
    const end = offset + length;
    const equals = records.indexOf(0x3d, space);
    if (space <= offset || !Number.isSafeInteger(length) || end > records.length || records[end - 1] !== 0x0a || equals < 0 || equals >= end) {
      throw new ArchiveError("corrupted pax header");
    }
    values.set(records.toString("utf8", space + 1, equals), records.toString("utf8", equals + 1, end - 1));
    offset = end;
  }
  return values;
}

const LINK_TYPES: Record<string, string> = { "1": "hard link", "2": "symbolic link" };

/** The entries of a tar archive, in order; fails on anything but files and directories. */
export async function* readTar(source: AsyncIterable<Buffer>): AsyncGenerator<TarEntry> {
  const reader = new ByteReader(source);
  let pax = new Map<string, string>();
  for (;;) {
    const block = await reader.read(TAR_BLOCK);
    if (!block) throw truncated();
    if (block.every((byte) => byte === 0)) {
      const second = await reader.read(TAR_BLOCK);
      if (!second) throw truncated();
      if (!second.every((byte) => byte === 0) || !(await reader.restIsZero())) {
        throw new ArchiveError("data follows the archive's end-of-archive marker");
      }
      return;
    }
    // GNU tar's own format (its default) says "ustar  ": its long names and large sizes are records we do not read.
    if (block.toString("latin1", 257, 265) === "ustar  \0") {
      throw new ArchiveError("the archive is in GNU tar's format, not POSIX: make it again with tar --format=posix");
    }
    if (field(block, 257, 6) !== "ustar") throw new ArchiveError("not a POSIX tar archive (no ustar header)");
    if (octalField(block, 148, 8) !== checksum(block)) throw new ArchiveError("corrupted tar header (checksum mismatch)");
    const type = String.fromCharCode(block[156]!);
    const prefix = field(block, 345, 155);
    const name = pax.get("path") ?? (prefix ? `${prefix}/${field(block, 0, 100)}` : field(block, 0, 100));
    const paxSize = pax.get("size");
    const size = paxSize === undefined ? octalField(block, 124, 12) : Number(paxSize);
    if (!Number.isSafeInteger(size) || size < 0) throw new ArchiveError(`corrupted tar header (size of ${name})`);
    pax = new Map();

    if (type === "x" || type === "g") {
      if (size > MAX_PAX_HEADER_SIZE) throw new ArchiveError(`pax header of ${size} bytes is larger than ${MAX_PAX_HEADER_SIZE}`);
      const records = await reader.read(size);
      if (!records) throw truncated();
      await reader.skip(tarPadding(size).length);
      if (type === "x") pax = parsePax(records); // "g" (global) holds nothing a restore needs
      continue;
    }
    if (LINK_TYPES[type]) throw new ArchiveError(`refusing ${LINK_TYPES[type]} ${name}: an archive to restore holds no links`);
    if (type !== "0" && type !== "\0" && type !== "5") throw new ArchiveError(`refusing tar entry ${name} of type ${JSON.stringify(type)}`);

    const directory = type === "5";
    if (directory && size !== 0) throw new ArchiveError(`corrupted tar header (directory ${name} has a size)`);

    let remaining = size;
    const body = (async function* () {
      while (remaining > 0) {
        const part = await reader.upTo(remaining);
        remaining -= part.length;
        yield part;
      }
    })();
    yield directory ? { name: name.replace(/\/+$/, ""), type: "directory", size, body } : { name, type: "file", size, body };
    await reader.skip(remaining + tarPadding(size).length);
  }
}
