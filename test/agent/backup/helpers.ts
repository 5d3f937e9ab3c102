// Shared by the backup tests: deterministic data, streams to buffers, and the
// Debian tools (age, zstd, tar) that prove the format is the standard one.
import { spawnSync } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { Readable, type Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { localMediaFiles, type ArchiveFile, type BackupManifest } from "../../../agent/backup/archive.ts";
import { tempDir } from "../helpers.ts";

export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** `size` bytes that do not compress, the same for the same seed (an AES-CTR keystream). */
export function pseudoRandomBytes(size: number, seed = "berth"): Buffer {
  const key = createHash("sha256").update(seed).digest();
  return createCipheriv("aes-256-ctr", key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** `total` pseudo-random bytes in 64 KiB chunks, made as they are read. */
export function* pseudoRandomChunks(total: number, seed: string): Generator<Buffer> {
  for (let offset = 0; offset < total; offset += 64 * 1024) yield pseudoRandomBytes(Math.min(64 * 1024, total - offset), `${seed}-${offset}`);
}

/** `data` in pieces of uneven sizes, so chunk boundaries fall everywhere. */
export function* unevenPieces(data: Buffer): Generator<Buffer> {
  const sizes = [1, 7, 4096, 70_000, 65_536, 13, 200_000];
  let offset = 0;
  for (let i = 0; offset < data.length; i++) {
    const size = sizes[i % sizes.length]!;
    yield data.subarray(offset, offset + size);
    offset += size;
  }
}

/** The age CLI, decrypting with a passphrase typed at its terminal (it reads passphrases only from a TTY). */
export function ageCliDecryptWithPassphrase(file: Buffer, passphrase: string): Buffer {
  const dir = tempDir();
  writeFileSync(join(dir, "in.age"), file);
  run("script", ["-qec", "age -d -o out in.age", "/dev/null"], Buffer.from(`${passphrase}\n`), dir);
  // The CLI opens its output only when it writes plaintext: an empty file leaves none.
  return existsSync(join(dir, "out")) ? readFileSync(join(dir, "out")) : Buffer.alloc(0);
}

/** Where an age file's payload starts: after the header's last line ("--- <mac>\n") and the 16-byte nonce. */
export function agePayloadOffset(file: Buffer): number {
  return file.indexOf("\n", file.indexOf("\n--- ") + 1) + 1 + 16;
}

export async function collect(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of source) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** Runs `data` (in uneven pieces) through a transform; the output, or the stream's error. */
export async function through(transform: Transform, data: Buffer): Promise<Buffer> {
  let output = Buffer.alloc(0);
  await pipeline(Readable.from(unevenPieces(data)), transform, async (out: AsyncIterable<Buffer>) => {
    output = await collect(out);
  });
  return output;
}

/** Runs a command; its stdout, or an error with its stderr. */
export function run(command: string, args: string[], input?: Buffer, cwd?: string): Buffer {
  const result = spawnSync(command, args, { input, cwd, maxBuffer: 1024 * 1024 * 1024 });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} exited ${result.status}: ${result.stderr.toString().trim()}`);
  return result.stdout;
}

/** A shell pipeline (bash, pipefail); its stdout. */
export function shell(script: string, cwd?: string): string {
  return run("bash", ["-o", "pipefail", "-c", script], undefined, cwd).toString("utf8");
}

export const MANIFEST: BackupManifest = {
  format: 1,
  serverId: "0b6e7c52-3f0a-4d8e-9a4c-2f6a1e5b7d90",
  serverName: "chat.example.org",
  createdAt: "2026-11-26T03:00:00.000Z",
  synapseImage: "berth/synapse:latest",
  postgresImage: "berth/postgres:15",
  entries: ["database/pg_dump", "synapse/media_store/local_content", "synapse/media_store/local_thumbnails", "synapse/homeserver.yaml"],
};

/** A homeserver-like tree: media (local and remote), config, a signing key. Returns the data directory. */
export function makeServerTree(root: string): string {
  const file = (path: string, data: Buffer | string) => {
    mkdirSync(join(root, path, ".."), { recursive: true });
    writeFileSync(join(root, path), data);
  };
  file("homeserver.yaml", "server_name: chat.example.org\n".repeat(40));
  file("chat.example.org.signing.key", "ed25519 a_AbCd c2VjcmV0\n");
  file("media_store/local_content/ab/cd/efghijklmnopqrstuvwx", pseudoRandomBytes(300_000, "image"));
  file("media_store/local_content/ab/cd/empty", "");
  file("media_store/local_content/zz/yy/exactly-a-block", pseudoRandomBytes(512, "block"));
  file(`media_store/local_content/ab/ce/${"long-name-".repeat(12)}`, pseudoRandomBytes(70_000, "long"));
  file("media_store/local_content/ab/ce/ünïcödé", "not ASCII");
  file("media_store/local_thumbnails/ab/cd/efghijklmnopqrstuvwx/32-32-image-png-crop", pseudoRandomBytes(5_000, "thumb"));
  file("media_store/remote_content/matrix.org/ab/cd/remote", "a cached remote file");
  file("media_store/remote_thumbnail/matrix.org/ab/cd/remote/32-32", "a cached remote thumbnail");
  file("media_store/url_cache/2026-11-26/preview", "a URL preview");
  file("media_store/url_cache_thumbnails/2026-11-26/preview/32-32", "a URL preview thumbnail");
  return root;
}

export async function* serverFiles(dataDir: string): AsyncGenerator<ArchiveFile> {
  yield* localMediaFiles(join(dataDir, "media_store"), "synapse/media_store");
  for (const name of ["homeserver.yaml", "chat.example.org.signing.key"]) yield { name: `synapse/${name}`, path: join(dataDir, name) };
}

/** sha256 of every file under dir, by relative path. */
export function treeHashes(dir: string): Record<string, string> {
  const hashes: Record<string, string> = {};
  const walk = (path: string) => {
    for (const entry of readdirSync(path, { withFileTypes: true })) {
      const full = join(path, entry.name);
      if (entry.isDirectory()) walk(full);
      else hashes[relative(dir, full)] = sha256(readFileSync(full));
    }
  };
  walk(dir);
  return hashes;
}
