// The archive an owner uploads to import a homeserver: a Berth full export (age to a passphrase
// around a backup's tar.zst) or a self-hosted Synapse's tar (plain or gzip, made with GNU tar as
// README.md says), told apart by its first bytes and unpacked into a backup's layout; and every way
// one is unusable refused with a sentence its owner can act on, the target directory gone again.
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { AgeEncryptStream, agePassphraseRecipient } from "../../../agent/backup/age.ts";
import { archiveStream, DUMP_FILE } from "../../../agent/backup/archive.ts";
import { unpackImportArchive } from "../../../agent/backup/import-archive.ts";
import { tarFileHeader, tarPadding, TAR_END } from "../../../agent/backup/tar.ts";
import { runCleanups, tempDir } from "../helpers.ts";
import { MANIFEST, collect, pseudoRandomBytes, shell, treeHashes } from "./helpers.ts";

afterEach(runCleanups);

const SERVER = "chat.example.org";
const PASSPHRASE = "a long passphrase of the owner's";
const DUMP = pseudoRandomBytes(200_000, "dump");
const MEDIA = pseudoRandomBytes(70_000, "media");
const GiB = 1024 ** 3;

/** A stock Synapse's data as README.md has its owner gather it: the dump, the signing key, the media store. */
function synapseDir(): string {
  const dir = tempDir();
  writeFileSync(join(dir, "synapse.dump"), DUMP);
  writeFileSync(join(dir, `${SERVER}.signing.key`), "ed25519 a_AbCd c2VjcmV0\n");
  mkdirSync(join(dir, "media_store", "local_content", "ab", "cd"), { recursive: true });
  writeFileSync(join(dir, "media_store", "local_content", "ab", "cd", "efgh"), MEDIA);
  mkdirSync(join(dir, "media_store", "url_cache"), { recursive: true });
  return dir;
}

/** The README's command (GNU tar, POSIX format), with `options` for compression; the archive's bytes. */
function synapseTar(dir: string, options = "-czf", entries = `synapse.dump ${SERVER}.signing.key media_store`, format = "--format=posix"): Buffer {
  const archive = join(tempDir(), "archive");
  shell(`tar ${format} ${options} ${archive} ${entries}`, dir);
  return readFileSync(archive);
}

/** A Berth full export: a backup's archive, age-encrypted to the passphrase (a low work factor, for speed). */
async function berthExport(): Promise<Buffer> {
  const archive = archiveStream({
    manifest: { ...MANIFEST, serverName: SERVER },
    dump: [DUMP],
    documents: [
      { name: `synapse/${SERVER}.signing.key`, content: Buffer.from("ed25519 a_AbCd c2VjcmV0\n") },
      { name: "synapse/media_store/local_content/ab/cd/efgh", content: MEDIA },
    ],
    files: [],
  });
  return collect(archive.pipe(new AgeEncryptStream(await agePassphraseRecipient(PASSPHRASE, 10))));
}

const unpack = (bytes: Buffer, target: string, passphrase?: string, maxBytes = GiB) =>
  unpackImportArchive(Readable.from([bytes.subarray(0, 100), bytes.subarray(100)]), passphrase, target, maxBytes);

/** The refusal's message; the target directory is gone. */
async function refusal(bytes: Buffer, passphrase?: string, maxBytes?: number): Promise<string> {
  const target = join(tempDir(), "staging");
  const error = await unpack(bytes, target, passphrase, maxBytes).then(
    () => undefined,
    (e: Error) => e,
  );
  expect(error?.name).toBe("ImportRefused");
  expect(existsSync(target)).toBe(false);
  return error!.message;
}

function expectLayout(target: string): void {
  expect(readFileSync(join(target, DUMP_FILE)).equals(DUMP)).toBe(true);
  expect(readFileSync(join(target, "synapse", `${SERVER}.signing.key`), "utf8")).toBe("ed25519 a_AbCd c2VjcmV0\n");
  expect(readFileSync(join(target, "synapse", "media_store", "local_content", "ab", "cd", "efgh")).equals(MEDIA)).toBe(true);
}

describe("a self-hosted Synapse's archive", () => {
  it.each([
    ["gzip-compressed", "-czf"],
    ["plain", "-cf"],
  ])("%s, made as README.md says, unpacks into a backup's layout", async (_what, options) => {
    const target = join(tempDir(), "staging");
    expect(await unpack(synapseTar(synapseDir(), options), target)).toEqual({ kind: "synapse-archive", serverName: SERVER });
    expectLayout(target);
    expect(readdirSync(join(target, "synapse", "media_store")).sort()).toEqual(["local_content", "url_cache"]);
  });

  it("made of the directory itself (tar -C dir .), its ./ names are the same names", async () => {
    const target = join(tempDir(), "staging");
    expect(await unpack(synapseTar(synapseDir(), "-czf", "."), target)).toMatchObject({ serverName: SERVER });
    expectLayout(target);
    expect(Object.keys(treeHashes(target)).sort()).toEqual([DUMP_FILE, `synapse/${SERVER}.signing.key`, "synapse/media_store/local_content/ab/cd/efgh"]);
  });

  it("in GNU tar's own format is refused, saying to make it with --format=posix", async () => {
    expect(await refusal(synapseTar(synapseDir(), "-czf", undefined, "--format=gnu"))).toBe(
      "the archive cannot be imported: the archive is in GNU tar's format, not POSIX: make it again with tar --format=posix",
    );
  });

  it("with a symbolic link, a hard link or a name leaving the archive is refused, and nothing is written outside", async () => {
    const dir = synapseDir();
    symlinkSync("/etc", join(dir, "media_store", "escape"));
    expect(await refusal(synapseTar(dir))).toMatch(/^the archive cannot be imported: refusing symbolic link media_store\/escape: /);

    const linked = synapseDir();
    shell(`ln media_store/local_content/ab/cd/efgh media_store/local_content/ab/cd/again`, linked);
    expect(await refusal(synapseTar(linked))).toMatch(/^the archive cannot be imported: refusing hard link media_store\/local_content\/ab\/cd\/\w+: /);

    const outside = tempDir();
    for (const name of ["media_store/../../escaped", "/tmp/escaped", "media_store/./x"]) {
      const evil = Buffer.concat([tarFileHeader({ name, size: 1, mtime: 0 }), Buffer.from("x"), tarPadding(1), TAR_END]);
      expect(await refusal(evil)).toMatch(/^the archive cannot be imported: refusing entry .*: not a plain relative path inside the archive$/);
    }
    expect(readdirSync(outside)).toEqual([]);
    expect(existsSync("/tmp/escaped")).toBe(false);
  });

  it("without synapse.dump, without a signing key, with two, or with anything else is refused, naming what is wrong", async () => {
    expect(await refusal(synapseTar(synapseDir(), "-czf", `${SERVER}.signing.key media_store`))).toBe(
      "the archive cannot be imported: the archive holds no synapse.dump",
    );
    expect(await refusal(synapseTar(synapseDir(), "-czf", "synapse.dump"))).toBe(
      "the archive cannot be imported: the archive holds no <server name>.signing.key",
    );
    const two = synapseDir();
    writeFileSync(join(two, "other.example.org.signing.key"), "ed25519 a_XyZw c2VjcmV0\n");
    expect(await refusal(synapseTar(two, "-czf", `synapse.dump ${SERVER}.signing.key other.example.org.signing.key`))).toMatch(
      /^the archive cannot be imported: the archive holds two signing keys/,
    );
    const extra = synapseDir();
    writeFileSync(join(extra, "homeserver.yaml"), "server_name: x\n");
    expect(await refusal(synapseTar(extra, "-czf", "synapse.dump homeserver.yaml"))).toBe(
      "the archive cannot be imported: the archive holds homeserver.yaml: a Synapse archive holds only synapse.dump, <server name>.signing.key and media_store/",
    );
  });

  it("truncated or with a byte changed is refused as truncated or corrupted", async () => {
    const archive = synapseTar(synapseDir());
    expect(await refusal(archive.subarray(0, archive.length >> 1))).toMatch(/^the export is truncated or corrupted \(.+\)$/);
    const changed = Buffer.from(archive);
    changed[changed.length >> 1]! ^= 0x55;
    expect(await refusal(changed)).toMatch(/^the export is truncated or corrupted \(.+\)$/);
    const plain = synapseTar(synapseDir(), "-cf");
    expect(await refusal(plain.subarray(0, 10_000))).toMatch(/^the export is truncated or corrupted \(.*truncated.*\)$/);
  });

  it("unpacking to more than the plan's storage is refused before it is written", async () => {
    expect(await refusal(synapseTar(synapseDir()), undefined, 100_000)).toMatch(/^the archive unpacks to more than the plan's storage \(.+ GiB\)$/);
  });
});

describe("a Berth full export", () => {
  it("opens with its passphrase and unpacks into the same layout", async () => {
    const target = join(tempDir(), "staging");
    expect(await unpack(await berthExport(), target, PASSPHRASE)).toEqual({ kind: "berth-export", serverName: SERVER });
    expectLayout(target);
  });

  it("is refused without its passphrase, with another, truncated, or with a byte changed", async () => {
    const file = await berthExport();
    expect(await refusal(file)).toBe("the archive is an encrypted export: its passphrase is needed to import it");
    expect(await refusal(file, "not the owner's passphrase")).toBe("the passphrase does not open this export");
    expect(await refusal(file.subarray(0, file.length - 1000), PASSPHRASE)).toMatch(/^the export is truncated or corrupted \(.+\)$/);
    const changed = Buffer.from(file);
    changed[changed.length >> 1]! ^= 0x01;
    expect(await refusal(changed, PASSPHRASE)).toMatch(/^the export is truncated or corrupted \(.+\)$/);
  });
});

it("anything else is refused as neither kind", async () => {
  expect(await refusal(Buffer.from("PK\x03\x04 a zip file"))).toBe(
    "the archive is neither a Berth export nor a Synapse archive (a tar file, gzip-compressed or not)",
  );
  expect(await refusal(Buffer.alloc(0))).toMatch(/^the archive is neither/);
});
