import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { Decrypter, Encrypter, generateX25519Identity, identityToRecipient } from "age-encryption";
import { afterEach, describe, expect, it } from "vitest";
import {
  AgeDecryptStream,
  AgeEncryptStream,
  agePassphraseRecipient,
  ageRecipientOf,
  generateAgeKeyPair,
  type AgeErrorCode,
} from "../../../agent/backup/age.ts";
import { runCleanups, tempDir } from "../helpers.ts";
import { ageCliDecryptWithPassphrase, agePayloadOffset, collect, pseudoRandomBytes, run, through } from "./helpers.ts";

afterEach(runCleanups);

const CHUNK = 64 * 1024;
const SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * 1024 * 1024 + 7];
const keys = generateAgeKeyPair();

const encrypt = (data: Buffer, recipient = keys.recipient) => through(new AgeEncryptStream(recipient), data);
const decrypt = (file: Buffer, identity = keys.identity) => through(new AgeDecryptStream(identity), file);

/** The age CLI, decrypting with an identity file. */
function ageCliDecrypt(file: Buffer, identity: string): Buffer {
  const identityFile = join(tempDir(), "key.txt");
  writeFileSync(identityFile, `${identity}\n`, { mode: 0o600 });
  return run("age", ["-d", "-i", identityFile], file);
}

async function decryptError(file: Buffer, identity = keys.identity): Promise<{ code: AgeErrorCode; message: string }> {
  const error = await decrypt(file, identity).then(
    () => undefined,
    (e: unknown) => e as { code: AgeErrorCode; message: string },
  );
  if (!error) throw new Error("decryption succeeded");
  return error;
}

describe("age encryption (node:crypto)", () => {
  it.each(SIZES)("round-trips %i bytes, in 64 KiB chunks each with a 16-byte tag", async (size) => {
    const data = pseudoRandomBytes(size);
    const file = await encrypt(data);
    const chunks = Math.max(1, Math.ceil(size / CHUNK));
    expect(file.length - agePayloadOffset(file)).toBe(size + 16 * chunks);
    expect((await decrypt(file)).equals(data)).toBe(true);
  });

  it.each([4 * CHUNK, 4 * CHUNK + 1])(
    "encrypts %i bytes alike however they are written (whole chunks are sealed in place), as the age CLI reads",
    async (size) => {
      const data = pseudoRandomBytes(size, "splits");
      const splits = [size, CHUNK, CHUNK + 1, CHUNK - 1, 4 * CHUNK, 1];
      for (const split of splits) {
        const pieces = Array.from({ length: Math.ceil(size / split) }, (_, i) => data.subarray(i * split, (i + 1) * split));
        const file = await collect(Readable.from(pieces).pipe(new AgeEncryptStream(keys.recipient)));
        expect(file.length - agePayloadOffset(file)).toBe(size + 16 * Math.ceil(size / CHUNK));
        expect(ageCliDecrypt(file, keys.identity).equals(data)).toBe(true);
      }
    },
  );

  it("writes the standard header: version line, one X25519 stanza, MAC", async () => {
    const file = await encrypt(Buffer.from("x"));
    const header = file.subarray(0, agePayloadOffset(file) - 16);
    expect(header.toString("latin1")).toMatch(/^age-encryption\.org\/v1\n-> X25519 [A-Za-z0-9+/]{43}\n[A-Za-z0-9+/]{43}\n--- [A-Za-z0-9+/]{43}\n$/);
  });

  it("encrypts each file under a new file key and nonce", async () => {
    const data = Buffer.from("same plaintext");
    expect((await encrypt(data)).equals(await encrypt(data))).toBe(false);
  });

  it.each(SIZES)("the age CLI decrypts what it encrypts (%i bytes), and it decrypts the CLI's files", async (size) => {
    const data = pseudoRandomBytes(size, `cli-${size}`);
    expect(ageCliDecrypt(await encrypt(data), keys.identity).equals(data)).toBe(true);
    expect((await decrypt(run("age", ["-r", keys.recipient], data))).equals(data)).toBe(true);
  });

  it.each(SIZES)("age-encryption (pure JS) decrypts what it encrypts (%i bytes), and it decrypts age-encryption's files", async (size) => {
    const data = pseudoRandomBytes(size, `js-${size}`);
    const decrypter = new Decrypter();
    decrypter.addIdentity(keys.identity);
    expect(Buffer.from(await decrypter.decrypt(await encrypt(data))).equals(data)).toBe(true);
    const encrypter = new Encrypter();
    encrypter.addRecipient(keys.recipient);
    expect((await decrypt(Buffer.from(await encrypter.encrypt(data)))).equals(data)).toBe(true);
  });

  it("uses keys made by age-keygen and by age-encryption, and derives the same recipients", async () => {
    const keygen = run("age-keygen", []).toString("utf8");
    const cliIdentity = /^AGE-SECRET-KEY-1[0-9A-Z]+$/m.exec(keygen)![0];
    const cliRecipient = /^# public key: (age1[0-9a-z]+)$/m.exec(keygen)![1]!;
    expect(ageRecipientOf(cliIdentity)).toBe(cliRecipient);
    const jsIdentity = await generateX25519Identity();
    expect(ageRecipientOf(jsIdentity)).toBe(await identityToRecipient(jsIdentity));
    expect(await identityToRecipient(keys.identity)).toBe(keys.recipient);

    const data = Buffer.from("made with other tools' keys");
    expect((await decrypt(await encrypt(data, cliRecipient), cliIdentity)).equals(data)).toBe(true);
    expect((await decrypt(await encrypt(data, await identityToRecipient(jsIdentity)), jsIdentity)).equals(data)).toBe(true);
  });

  it("refuses strings that are not X25519 keys", () => {
    expect(() => new AgeEncryptStream("age1notakey")).toThrow(/not an age X25519 recipient/);
    expect(() => new AgeEncryptStream(keys.identity)).toThrow(/not an age X25519 recipient/);
    expect(() => new AgeDecryptStream(keys.recipient)).toThrow(/not an age X25519 identity/);
    const lastCharacterChanged = keys.identity.slice(0, -1) + (keys.identity.endsWith("Q") ? "P" : "Q");
    expect(() => new AgeDecryptStream(lastCharacterChanged)).toThrow(/not an age X25519 identity/);
  });
});

describe("age decryption failures", () => {
  it("a file for another key: no identity matches", async () => {
    const file = await encrypt(Buffer.from("secret"));
    const error = await decryptError(file, generateAgeKeyPair().identity);
    expect(error).toMatchObject({ code: "no-identity-matches" });
    expect(error.message).toMatch(/^no identity matches/);
  });

  it("an altered header: its MAC does not match", async () => {
    const file = await encrypt(Buffer.from("secret"));
    const mac = file.indexOf("\n--- ") + 5;
    file[mac + 10] = file[mac + 10] === 0x41 ? 0x42 : 0x41; // one base64 digit of the MAC
    expect(await decryptError(file)).toMatchObject({ code: "bad-header-mac", message: expect.stringMatching(/MAC does not match/) });
  });

  it("a malformed header or something else entirely", async () => {
    const file = await encrypt(Buffer.from("secret"));
    const malformed = Buffer.from(file.toString("latin1").replace("-> X25519 ", "-> X25519  "), "latin1");
    expect(await decryptError(malformed)).toMatchObject({ code: "bad-header" });
    expect(await decryptError(Buffer.from("PK\x03\x04 a zip file, say"))).toMatchObject({ code: "not-age" });
  });

  it("a flipped payload byte: that chunk does not authenticate", async () => {
    const file = await encrypt(pseudoRandomBytes(3 * CHUNK));
    file[agePayloadOffset(file) + CHUNK + 16 + 100]! ^= 1; // inside chunk 1
    expect(await decryptError(file)).toMatchObject({ code: "corrupted-chunk", message: expect.stringMatching(/^payload chunk 1 /) });
  });

  it("a file missing its last chunk: truncated", async () => {
    const file = await encrypt(pseudoRandomBytes(3 * CHUNK));
    const twoChunks = file.subarray(0, agePayloadOffset(file) + 2 * (CHUNK + 16));
    expect(await decryptError(twoChunks)).toMatchObject({ code: "truncated", message: expect.stringMatching(/without its final chunk/) });
    expect(await decryptError(file.subarray(0, agePayloadOffset(file)))).toMatchObject({ code: "truncated" });
    expect(await decryptError(file.subarray(0, 40))).toMatchObject({ code: "truncated", message: expect.stringMatching(/inside its header/) });
  });

  it("a file cut inside a chunk fails as that chunk, as corrupted or cut off", async () => {
    const file = await encrypt(pseudoRandomBytes(3 * CHUNK));
    const error = await decryptError(file.subarray(0, file.length - 1000));
    expect(error).toMatchObject({ code: "corrupted-chunk", message: expect.stringMatching(/^payload chunk 2 .*cut off/) });
  });

  it("data after the final chunk: trailing data", async () => {
    const file = await encrypt(pseudoRandomBytes(CHUNK)); // one full final chunk
    expect(await decryptError(Buffer.concat([file, Buffer.from("appended")]))).toMatchObject({
      code: "trailing-data",
      message: expect.stringMatching(/data follows the end/),
    });
  });
});

describe("age encryption to a passphrase (the scrypt recipient)", () => {
  const passphrase = "correct horse battery staple ✓";

  it("writes one scrypt stanza (16-byte salt, work factor) as the only recipient", async () => {
    const file = await through(new AgeEncryptStream(await agePassphraseRecipient(passphrase, 10)), Buffer.from("x"));
    const header = file.subarray(0, agePayloadOffset(file) - 16);
    expect(header.toString("latin1")).toMatch(/^age-encryption\.org\/v1\n-> scrypt [A-Za-z0-9+/]{22} 10\n[A-Za-z0-9+/]{43}\n--- [A-Za-z0-9+/]{43}\n$/);
  });

  it.each([0, CHUNK + 1])("the age CLI decrypts it with the passphrase at the default work factor (%i bytes)", async (size) => {
    const data = pseudoRandomBytes(size, `scrypt-${size}`);
    const file = await through(new AgeEncryptStream(await agePassphraseRecipient(passphrase)), data);
    expect(file.toString("latin1", 0, 60)).toMatch(/-> scrypt \S+ 18\n/);
    expect(ageCliDecryptWithPassphrase(file, passphrase).equals(data)).toBe(true);
  });

  it("age-encryption (pure JS) decrypts it with the passphrase and not with another", async () => {
    const data = pseudoRandomBytes(3 * CHUNK, "scrypt-js");
    const file = await through(new AgeEncryptStream(await agePassphraseRecipient(passphrase, 12)), data);
    const decrypter = new Decrypter();
    decrypter.addPassphrase(passphrase);
    expect(Buffer.from(await decrypter.decrypt(file)).equals(data)).toBe(true);
    const wrong = new Decrypter();
    wrong.addPassphrase("correct horse battery stapler");
    await expect(wrong.decrypt(file)).rejects.toThrow();
  });

  it.each(SIZES)("decrypts with the passphrase what it wrote, and what age-encryption wrote (%i bytes)", async (size) => {
    const data = pseudoRandomBytes(size, `scrypt-open-${size}`);
    const ours = await through(new AgeEncryptStream(await agePassphraseRecipient(passphrase, 10)), data);
    expect((await through(new AgeDecryptStream({ passphrase }), ours)).equals(data)).toBe(true);
    const encrypter = new Encrypter();
    encrypter.setPassphrase(passphrase);
    encrypter.setScryptWorkFactor(10);
    const theirs = Buffer.from(await encrypter.encrypt(data));
    expect((await through(new AgeDecryptStream({ passphrase }), theirs)).equals(data)).toBe(true);
  });

  it("says a wrong passphrase does not open the file, and that a key's file is not a passphrase's (or the other way)", async () => {
    const file = await through(new AgeEncryptStream(await agePassphraseRecipient(passphrase, 10)), Buffer.from("x"));
    await expect(through(new AgeDecryptStream({ passphrase: "correct horse battery stapler" }), file)).rejects.toMatchObject({
      code: "wrong-passphrase",
      message: "the passphrase does not open this file",
    });
    await expect(through(new AgeDecryptStream({ passphrase }), await encrypt(Buffer.from("x")))).rejects.toMatchObject({
      code: "no-identity-matches",
      message: expect.stringMatching(/not encrypted to a passphrase/),
    });
    await expect(decrypt(file)).rejects.toMatchObject({ code: "no-identity-matches" });
  });

  it("refuses more scrypt work than 2^20 before deriving anything, and a scrypt stanza beside another", async () => {
    const file = await through(new AgeEncryptStream(await agePassphraseRecipient(passphrase, 10)), Buffer.from("x"));
    const greedy = Buffer.from(file.toString("latin1").replace(/^(age-encryption\.org\/v1\n-> scrypt \S+) 10\n/, "$1 21\n"), "latin1");
    await expect(through(new AgeDecryptStream({ passphrase }), greedy)).rejects.toMatchObject({
      code: "bad-header",
      message: expect.stringMatching(/work factor 21/),
    });
    const beside = Buffer.from(file.toString("latin1").replace("\n-> scrypt", "\n-> other\nAAAA\n-> scrypt"), "latin1");
    await expect(through(new AgeDecryptStream({ passphrase }), beside)).rejects.toMatchObject({
      code: "bad-header",
      message: expect.stringMatching(/only one/),
    });
  });

  it("salts each file anew and refuses an empty passphrase", async () => {
    const header = async () => (await through(new AgeEncryptStream(await agePassphraseRecipient(passphrase, 10)), Buffer.from("x"))).toString("latin1", 0, 60);
    expect(await header()).not.toBe(await header());
    await expect(agePassphraseRecipient("")).rejects.toMatchObject({ code: "invalid-key" });
  });
});
