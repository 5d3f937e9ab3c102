// The archive an owner uploads to import a homeserver, told apart by its first bytes: a Berth
// full export (an age file to their passphrase around a backup's tar.zst), or a self-hosted
// Synapse's archive (a POSIX tar, gzip-compressed or not: synapse-archive.ts). Either is unpacked
// into a backup's layout — database/pg_dump, synapse/<server name>.signing.key,
// synapse/media_store/ — and every way it can be unusable becomes an ImportRefused, whose message
// is a sentence for its owner (never a path of the host, nor the passphrase).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { pipeline, Readable } from "node:stream";
import { pipeline as pipelineAsync } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { AgeError } from "./age.ts";
import { ArchiveTooLarge, byteLimit } from "./archive.ts";
import { restoreStream } from "./backup.ts";
import { extractSynapseArchive } from "./synapse-archive.ts";
import { ArchiveError } from "./tar.ts";

/** Why an archive cannot be imported, in words its owner is shown. */
export class ImportRefused extends Error {
  override name = "ImportRefused";
}

export type ImportArchiveKind = "berth-export" | "synapse-archive";

export interface UnpackedImport {
  kind: ImportArchiveKind;
  /** Whose archive it is: the export's manifest, or the Synapse archive's signing key's name. */
  serverName: string;
}

const AGE_HEADER = Buffer.from("age-encryption.org/v1\n");
const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);
/** A tar's first header block, up to its magic ("ustar" at offset 257). */
const TAR_HEAD = 263;

const GiB = 1024 ** 3;

/** The source's first `count` bytes (fewer when it is shorter), and the whole source again. */
async function peek(source: AsyncIterable<Buffer>, count: number): Promise<{ head: Buffer; whole: AsyncIterable<Buffer> }> {
  const chunks = source[Symbol.asyncIterator]();
  const read: Buffer[] = [];
  let length = 0;
  let ended = false;
  while (length < count && !ended) {
    const next = await chunks.next();
    if (next.done) ended = true;
    else {
      read.push(next.value);
      length += next.value.length;
    }
  }
  const head = Buffer.concat(read);
  async function* whole(): AsyncGenerator<Buffer> {
    if (head.length) yield head;
    if (ended) return;
    for (let next = await chunks.next(); !next.done; next = await chunks.next()) yield next.value;
  }
  return { head, whole: whole() };
}

function kindOf(head: Buffer): ImportArchiveKind | "gzip" | undefined {
  if (head.subarray(0, AGE_HEADER.length).equals(AGE_HEADER)) return "berth-export";
  if (head.subarray(0, 2).equals(GZIP_MAGIC)) return "gzip";
  if (head.length >= TAR_HEAD && head.toString("latin1", 257, 262) === "ustar") return "synapse-archive";
  return undefined;
}

const corrupted = (why: string) => new ImportRefused(`the export is truncated or corrupted (${why})`);

/** An error of reading the archive as its owner is told it; others (the host's own) stay as they are. */
function asRefusal(error: unknown): unknown {
  if (error instanceof ImportRefused) return error;
  if (error instanceof ArchiveTooLarge) return new ImportRefused(`the archive unpacks to more than the plan's storage (${error.maxBytes / GiB} GiB)`);
  if (error instanceof AgeError) {
    if (error.code === "wrong-passphrase") return new ImportRefused("the passphrase does not open this export");
    if (error.code === "no-identity-matches") return new ImportRefused("the archive is encrypted to a key, not to a passphrase: it is not a Berth export");
    return corrupted(error.message);
  }
  if (error instanceof ArchiveError) {
    return /truncated|corrupted|not octal/.test(error.message)
      ? corrupted(error.message)
      : new ImportRefused(`the archive cannot be imported: ${error.message}`);
  }
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === "string" && /^(Z_|ZSTD_|ERR_ZLIB|ERR_ZSTD)/.test(code)) return corrupted(`it does not decompress: ${(error as Error).message}`);
  return error;
}

/**
 * Unpacks the archive into targetDir (which must not exist; gone again on failure), at most
 * `maxBytes` of it unpacked (the plan's storage). An encrypted export needs its passphrase.
 */
export async function unpackImportArchive(source: Readable, passphrase: string | undefined, targetDir: string, maxBytes: number): Promise<UnpackedImport> {
  try {
    const { head, whole } = await peek(source, TAR_HEAD);
    const kind = kindOf(head);
    if (kind === "berth-export") {
      if (passphrase === undefined) throw new ImportRefused("the archive is an encrypted export: its passphrase is needed to import it");
      const { manifest } = await restoreStream(Readable.from(whole), { passphrase }, targetDir, maxBytes);
      if (!existsSync(join(targetDir, "synapse", `${manifest.serverName}.signing.key`))) {
        throw new ImportRefused(`the export holds no signing key of ${manifest.serverName}`);
      }
      return { kind, serverName: manifest.serverName };
    }
    if (kind === undefined) throw new ImportRefused("the archive is neither a Berth export nor a Synapse archive (a tar file, gzip-compressed or not)");
    const tar = kind === "gzip" ? pipeline(Readable.from(whole), createGunzip(), () => {}) : whole;
    const extracted = await pipelineAsync(tar, byteLimit(maxBytes), (bytes: AsyncIterable<Buffer>) => extractSynapseArchive(bytes, targetDir));
    return { kind: "synapse-archive", serverName: extracted.serverName };
  } catch (error) {
    throw asRefusal(error);
  }
}
