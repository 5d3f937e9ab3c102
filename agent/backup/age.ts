// The age v1 file format (https://age-encryption.org/v1) for one X25519 recipient
// or one passphrase (the scrypt recipient), on node:crypto. The maintained JavaScript implementation (age-encryption) runs
// ChaCha20-Poly1305 in pure JS at ~70 MiB/s, an order of magnitude below zstd and
// the upload; OpenSSL's cipher produces the same bytes ~10x faster. Interoperability
// with the age CLI and age-encryption is what the tests prove.
//
// Both directions are Node Transforms that hold at most one 64 KiB STREAM chunk.
// A decrypting stream emits each chunk once it is authenticated, before it knows
// whether the file ends properly: a consumer must discard everything it wrote when
// the stream fails.
import { bech32 } from "@scure/base";
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  scrypt,
  timingSafeEqual,
  type KeyObject,
} from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";

const VERSION_LINE = "age-encryption.org/v1";
const VERSION_LINE_BYTES = Buffer.from(`${VERSION_LINE}\n`);
const X25519_LABEL = "age-encryption.org/v1/X25519";
const SCRYPT_LABEL = "age-encryption.org/v1/scrypt";
const SCRYPT_SALT_SIZE = 16;
/** log2 of scrypt's N: the age CLI's default (256 MiB, about a second), which it also accepts when decrypting. */
export const SCRYPT_DEFAULT_WORK_FACTOR = 18;
/** The most work a file may ask of its reader: 2^20 takes 1 GiB for seconds (some tools tune it up from the default). */
const SCRYPT_MAX_WORK_FACTOR = 20;
const CHUNK_SIZE = 64 * 1024;
const TAG_SIZE = 16;
const SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE;
const FILE_KEY_SIZE = 16;
const PAYLOAD_NONCE_SIZE = 16;
/** Stanza body lines hold 48 bytes (64 base64 characters); a shorter line ends the body. */
const BODY_LINE_BYTES = 48;
/** One X25519 stanza takes ~150 bytes; anything near this is not a header we wrote. */
const MAX_HEADER_SIZE = 64 * 1024;

const X25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");
const X25519_SPKI_PREFIX = Buffer.from("302a300506032b656e032100", "hex");

export type AgeErrorCode =
  | "invalid-key"
  | "not-age"
  | "bad-header"
  | "no-identity-matches"
  | "wrong-passphrase"
  | "bad-header-mac"
  | "corrupted-chunk"
  | "truncated"
  | "trailing-data";

export class AgeError extends Error {
  override name = "AgeError";
  readonly code: AgeErrorCode;

  constructor(code: AgeErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

// ---------- keys ----------

export interface AgeKeyPair {
  /** AGE-SECRET-KEY-1… (decrypts; stays with the control plane). */
  identity: string;
  /** age1… (encrypts). */
  recipient: string;
}

function rawPublicKey(key: KeyObject): Buffer {
  return key.export({ format: "der", type: "spki" }).subarray(X25519_SPKI_PREFIX.length);
}

function x25519PrivateKey(scalar: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, scalar]), format: "der", type: "pkcs8" });
}

function x25519PublicKey(point: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, point]), format: "der", type: "spki" });
}

/** The 32-byte key inside a bech32 string with this human-readable prefix (age1… or AGE-SECRET-KEY-1…). */
function decodeKey(text: string, prefix: "age" | "age-secret-key-", what: string): Uint8Array {
  let decoded: { prefix: string; bytes: Uint8Array };
  try {
    decoded = bech32.decodeToBytes(text);
  } catch {
    throw new AgeError("invalid-key", `not an age X25519 ${what}`);
  }
  if (decoded.prefix !== prefix || decoded.bytes.length !== 32) throw new AgeError("invalid-key", `not an age X25519 ${what}`);
  return decoded.bytes;
}

function parseRecipient(recipient: string): Uint8Array {
  if (!recipient.startsWith("age1")) throw new AgeError("invalid-key", "not an age X25519 recipient (age1…)");
  return decodeKey(recipient, "age", "recipient (age1…)");
}

function parseIdentity(identity: string): Uint8Array {
  if (!identity.startsWith("AGE-SECRET-KEY-1")) throw new AgeError("invalid-key", "not an age X25519 identity (AGE-SECRET-KEY-1…)");
  return decodeKey(identity, "age-secret-key-", "identity (AGE-SECRET-KEY-1…)");
}

function encodeRecipient(point: Uint8Array): string {
  return bech32.encodeFromBytes("age", point);
}

export function generateAgeKeyPair(): AgeKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync("x25519");
  const scalar = privateKey.export({ format: "der", type: "pkcs8" }).subarray(X25519_PKCS8_PREFIX.length);
  return {
    identity: bech32.encodeFromBytes("AGE-SECRET-KEY-", scalar).toUpperCase(),
    recipient: encodeRecipient(rawPublicKey(publicKey)),
  };
}

export function ageRecipientOf(identity: string): string {
  return encodeRecipient(rawPublicKey(createPublicKey(x25519PrivateKey(parseIdentity(identity)))));
}

// ---------- primitives ----------

function hkdf(ikm: Uint8Array, salt: Uint8Array, info: string): Buffer {
  return Buffer.from(hkdfSync("sha256", ikm, salt, info, 32));
}

/** ChaCha20-Poly1305: the ciphertext and the 16-byte tag that follows it (apart: copying them together costs throughput). */
function seal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array): [Buffer, Buffer] {
  const cipher = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: TAG_SIZE });
  const ciphertext = cipher.update(plaintext);
  cipher.final();
  return [ciphertext, cipher.getAuthTag()];
}

/** The plaintext, or undefined when the tag does not authenticate it. */
function open(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array): Buffer | undefined {
  if (sealed.length < TAG_SIZE) return undefined;
  const decipher = createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: TAG_SIZE });
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_SIZE));
  const plaintext = decipher.update(sealed.subarray(0, sealed.length - TAG_SIZE));
  try {
    decipher.final();
  } catch {
    return undefined;
  }
  return plaintext;
}

/** STREAM nonce: an 11-byte big-endian chunk counter, then 1 for the last chunk (counters up to 2^48 here: 16 EiB). */
function chunkNonce(counter: number, last: boolean): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeUIntBE(counter, 5, 6);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

const ZERO_NONCE = Buffer.alloc(12);

const base64NoPad = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64").replace(/=+$/, "");

/** Strict (canonical, unpadded) base64, as the spec requires. */
function decodeBase64NoPad(text: string): Buffer | undefined {
  if (!/^[A-Za-z0-9+/]*$/.test(text)) return undefined;
  const bytes = Buffer.from(text, "base64");
  return base64NoPad(bytes) === text ? bytes : undefined;
}

function headerMac(fileKey: Uint8Array, headerWithoutMac: Uint8Array): Buffer {
  return createHmac("sha256", hkdf(fileKey, Buffer.alloc(0), "header"))
    .update(headerWithoutMac)
    .digest();
}

function payloadKey(fileKey: Uint8Array, nonce: Uint8Array): Buffer {
  return hkdf(fileKey, nonce, "payload");
}

// ---------- encryption ----------

/** How a file key is wrapped for its one recipient: the header's stanza lines, without their newline. */
type WrapFileKey = (fileKey: Buffer) => string;

function wrapForX25519(recipient: Uint8Array): WrapFileKey {
  return (fileKey) => {
    const ephemeral = generateKeyPairSync("x25519");
    const share = rawPublicKey(ephemeral.publicKey);
    const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: x25519PublicKey(recipient) });
    const wrapKey = hkdf(shared, Buffer.concat([share, recipient]), X25519_LABEL);
    return `-> X25519 ${base64NoPad(share)}\n${base64NoPad(Buffer.concat(seal(wrapKey, ZERO_NONCE, fileKey)))}`;
  };
}

/** A passphrase recipient: the scrypt stanza's wrap key, derived once (off the event loop: it takes ~1 s and 256 MiB). */
export interface AgePassphraseRecipient {
  readonly wrapFileKey: WrapFileKey;
}

export async function agePassphraseRecipient(passphrase: string, workFactor = SCRYPT_DEFAULT_WORK_FACTOR): Promise<AgePassphraseRecipient> {
  if (passphrase.length === 0) throw new AgeError("invalid-key", "an age passphrase must not be empty");
  if (!Number.isInteger(workFactor) || workFactor < 1 || workFactor > 22) throw new AgeError("invalid-key", "scrypt work factor out of range");
  const salt = randomBytes(SCRYPT_SALT_SIZE);
  const wrapKey = await scryptWrapKey(passphrase, salt, workFactor);
  return {
    wrapFileKey: (fileKey) => `-> scrypt ${base64NoPad(salt)} ${workFactor}\n${base64NoPad(Buffer.concat(seal(wrapKey, ZERO_NONCE, fileKey)))}`,
  };
}

/** The scrypt stanza's wrap key, off the event loop (it takes ~1 s and 256 MiB at the default work factor). */
function scryptWrapKey(passphrase: string, salt: Buffer, workFactor: number): Promise<Buffer> {
  const N = 2 ** workFactor;
  return new Promise<Buffer>((resolve, reject) =>
    scrypt(passphrase, Buffer.concat([Buffer.from(SCRYPT_LABEL), salt]), 32, { N, r: 8, p: 1, maxmem: 256 * N * 8 }, (error, key) =>
      error ? reject(error) : resolve(key),
    ),
  );
}

/** Header and payload nonce of a new file, and the payload key. */
function newFile(wrapFileKey: WrapFileKey): { prologue: Buffer; key: Buffer } {
  const fileKey = randomBytes(FILE_KEY_SIZE);
  const headerWithoutMac = Buffer.from(`${VERSION_LINE}\n${wrapFileKey(fileKey)}\n---`, "ascii");
  const mac = headerMac(fileKey, headerWithoutMac);
  const nonce = randomBytes(PAYLOAD_NONCE_SIZE);
  return {
    prologue: Buffer.concat([headerWithoutMac, Buffer.from(` ${base64NoPad(mac)}\n`, "ascii"), nonce]),
    key: payloadKey(fileKey, nonce),
  };
}

/** Plaintext in, an age file for one X25519 recipient (age1…) or one passphrase out. */
export class AgeEncryptStream extends Transform {
  private readonly key: Buffer;
  private readonly chunk = Buffer.allocUnsafe(CHUNK_SIZE);
  private filled = 0;
  private counter = 0;

  constructor(recipient: string | AgePassphraseRecipient) {
    super();
    const { prologue, key } = newFile(typeof recipient === "string" ? wrapForX25519(parseRecipient(recipient)) : recipient.wrapFileKey);
    this.key = key;
    this.push(prologue);
  }

  override _transform(data: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    let offset = 0;
    while (offset < data.length) {
      // A full chunk is sealed only once more data follows: the last chunk carries a flag.
      if (this.filled === CHUNK_SIZE) {
        this.pushSealed(this.chunk, false);
        this.filled = 0;
      }
      // Whole chunks with more data after them are sealed where they are, uncopied.
      while (this.filled === 0 && data.length - offset > CHUNK_SIZE) {
        this.pushSealed(data.subarray(offset, offset + CHUNK_SIZE), false);
        offset += CHUNK_SIZE;
      }
      const copied = data.copy(this.chunk, this.filled, offset);
      this.filled += copied;
      offset += copied;
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    // The last chunk may be empty only when it is the only one (an empty file).
    this.pushSealed(this.chunk.subarray(0, this.filled), true);
    callback();
  }

  private pushSealed(plaintext: Buffer, last: boolean): void {
    for (const part of seal(this.key, chunkNonce(this.counter++, last), plaintext)) this.push(part);
  }
}

// ---------- decryption ----------

interface Stanza {
  args: string[];
  body: Buffer;
}

interface ParsedHeader {
  stanzas: Stanza[];
  /** The bytes the MAC covers: everything up to and including "---". */
  macInput: Buffer;
  mac: Buffer;
}

const badHeader = (why: string) => new AgeError("bad-header", `invalid age header: ${why}`);

/** Parses a complete header (through the MAC line's newline). */
function parseHeader(header: Buffer): ParsedHeader {
  const lines = header.toString("latin1").split("\n");
  lines.pop(); // the empty string after the final newline
  if (lines[0] !== VERSION_LINE) throw new AgeError("not-age", "not an age file (no age-encryption.org/v1 line)");
  const stanzas: Stanza[] = [];
  let i = 1;
  while (lines[i]?.startsWith("-> ")) {
    const args = lines[i]!.slice(3).split(" ");
    if (args.some((arg) => !/^[\x21-\x7e]+$/.test(arg))) throw badHeader("malformed stanza arguments");
    const body: Buffer[] = [];
    for (;;) {
      const line = lines[++i];
      const bytes = line === undefined ? undefined : decodeBase64NoPad(line);
      if (!bytes || bytes.length > BODY_LINE_BYTES) throw badHeader("malformed stanza body");
      body.push(bytes);
      if (bytes.length < BODY_LINE_BYTES) break;
    }
    stanzas.push({ args, body: Buffer.concat(body) });
    i++;
  }
  const macLine = lines[i];
  const mac = macLine?.startsWith("--- ") ? decodeBase64NoPad(macLine.slice(4)) : undefined;
  if (mac?.length !== 32 || i !== lines.length - 1) throw badHeader("malformed MAC line");
  return { stanzas, mac, macInput: header.subarray(0, header.length - macLine!.length - 1 + 3) };
}

/** The file key from the first X25519 stanza this identity opens. */
function unwrapFileKey(stanzas: Stanza[], identity: Uint8Array): Buffer {
  const privateKey = x25519PrivateKey(identity);
  const ourPoint = rawPublicKey(createPublicKey(privateKey));
  const x25519Stanzas = stanzas.filter((s) => s.args[0] === "X25519");
  for (const stanza of x25519Stanzas) {
    const share = stanza.args.length === 2 ? decodeBase64NoPad(stanza.args[1]!) : undefined;
    if (share?.length !== 32 || stanza.body.length !== FILE_KEY_SIZE + TAG_SIZE) throw badHeader("malformed X25519 stanza");
    let shared: Buffer;
    try {
      shared = diffieHellman({ privateKey, publicKey: x25519PublicKey(share) });
    } catch {
      throw badHeader("X25519 share of low order"); // OpenSSL refuses an all-zero shared secret
    }
    const fileKey = open(hkdf(shared, Buffer.concat([share, ourPoint]), X25519_LABEL), ZERO_NONCE, stanza.body);
    if (fileKey) return fileKey;
  }
  const held = x25519Stanzas.length ? `${x25519Stanzas.length} X25519 recipient(s)` : "no X25519 recipient";
  throw new AgeError("no-identity-matches", `no identity matches: the file is encrypted to a different key (it has ${held})`);
}

/** The file key from the file's scrypt stanza, which must be its only one (age's rule: a passphrase file has no other recipient). */
async function unwrapWithPassphrase(stanzas: Stanza[], passphrase: string): Promise<Buffer> {
  const stanza = stanzas.find((s) => s.args[0] === "scrypt");
  if (!stanza) throw new AgeError("no-identity-matches", "the file is not encrypted to a passphrase");
  if (stanzas.length !== 1) throw badHeader("a scrypt stanza must be the file's only one");
  const salt = stanza.args.length === 3 ? decodeBase64NoPad(stanza.args[1]!) : undefined;
  const workFactor = /^[1-9][0-9]?$/.test(stanza.args[2] ?? "") ? Number(stanza.args[2]) : 0;
  if (salt?.length !== SCRYPT_SALT_SIZE || workFactor === 0 || stanza.body.length !== FILE_KEY_SIZE + TAG_SIZE) throw badHeader("malformed scrypt stanza");
  if (workFactor > SCRYPT_MAX_WORK_FACTOR) throw badHeader(`its scrypt work factor ${workFactor} is above ${SCRYPT_MAX_WORK_FACTOR}`);
  const fileKey = open(await scryptWrapKey(passphrase, salt, workFactor), ZERO_NONCE, stanza.body);
  if (!fileKey) throw new AgeError("wrong-passphrase", "the passphrase does not open this file");
  return fileKey;
}

/** What opens an age file: an X25519 identity (AGE-SECRET-KEY-1…) or a passphrase. */
export type AgeDecryptionKey = string | { passphrase: string };

/** An age file in, its plaintext out; decrypts with one X25519 identity (AGE-SECRET-KEY-1…) or a passphrase. */
export class AgeDecryptStream extends Transform {
  private readonly identity: Uint8Array | { passphrase: string };
  /** Bytes before the payload (header, nonce) until they are complete. */
  private prologue: Buffer | undefined = Buffer.alloc(0);
  private key: Buffer | undefined;
  private readonly sealed = Buffer.allocUnsafe(SEALED_CHUNK_SIZE);
  private filled = 0;
  private counter = 0;

  constructor(key: AgeDecryptionKey) {
    super();
    if (typeof key !== "string" && key.passphrase.length === 0) throw new AgeError("invalid-key", "an age passphrase must not be empty");
    this.identity = typeof key === "string" ? parseIdentity(key) : key;
  }

  override _transform(data: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.prologue) {
      // Only the header waits (a passphrase's key is derived off the event loop); the payload is opened as it comes.
      this.readPrologue(data)
        .then((rest) => this.payload(rest))
        .then(() => callback(), callback);
      return;
    }
    try {
      this.payload(data);
      callback();
    } catch (error) {
      callback(error as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      if (!this.key) throw new AgeError("truncated", "the age file ends inside its header");
      this.push(this.lastChunk());
      callback();
    } catch (error) {
      callback(error as Error);
    }
  }

  /** Collects the header and payload nonce; returns the payload bytes that followed them. */
  private async readPrologue(data: Buffer): Promise<Buffer> {
    const prologue = Buffer.concat([this.prologue!, data]);
    this.prologue = prologue;
    const versionLength = Math.min(prologue.length, VERSION_LINE_BYTES.length);
    if (!prologue.subarray(0, versionLength).equals(VERSION_LINE_BYTES.subarray(0, versionLength))) {
      throw new AgeError("not-age", "not an age file (no age-encryption.org/v1 line)");
    }
    const macLine = prologue.indexOf("\n--- ");
    const headerEnd = macLine < 0 ? -1 : prologue.indexOf("\n", macLine + 1) + 1;
    if (headerEnd <= 0) {
      if (prologue.length > MAX_HEADER_SIZE) throw badHeader(`longer than ${MAX_HEADER_SIZE} bytes`);
      return Buffer.alloc(0);
    }
    const payloadStart = headerEnd + PAYLOAD_NONCE_SIZE;
    if (prologue.length < payloadStart) return Buffer.alloc(0);
    const header = parseHeader(prologue.subarray(0, headerEnd));
    const fileKey =
      this.identity instanceof Uint8Array ? unwrapFileKey(header.stanzas, this.identity) : await unwrapWithPassphrase(header.stanzas, this.identity.passphrase);
    if (!timingSafeEqual(headerMac(fileKey, header.macInput), header.mac)) {
      throw new AgeError("bad-header-mac", "the age header's MAC does not match: the header is corrupted or was altered");
    }
    this.key = payloadKey(fileKey, prologue.subarray(headerEnd, payloadStart));
    this.prologue = undefined;
    return prologue.subarray(payloadStart);
  }

  private payload(data: Buffer): void {
    let offset = 0;
    while (offset < data.length) {
      // A full chunk is opened only once more data follows; the final one is opened in _flush.
      if (this.filled === SEALED_CHUNK_SIZE) {
        this.push(this.middleChunk());
        this.filled = 0;
      }
      const copied = data.copy(this.sealed, this.filled, offset);
      this.filled += copied;
      offset += copied;
    }
  }

  /** A full chunk with more data after it. */
  private middleChunk(): Buffer {
    const plaintext = open(this.key!, chunkNonce(this.counter, false), this.sealed);
    if (plaintext) {
      this.counter++;
      return plaintext;
    }
    if (open(this.key!, chunkNonce(this.counter, true), this.sealed)) {
      throw new AgeError("trailing-data", "data follows the end of the age file (its final chunk is complete)");
    }
    throw this.corrupted();
  }

  private lastChunk(): Buffer {
    if (this.filled === 0) throw new AgeError("truncated", "the age file is truncated: it ends before its payload");
    const sealed = this.sealed.subarray(0, this.filled);
    const plaintext = open(this.key!, chunkNonce(this.counter, true), sealed);
    if (plaintext) {
      if (plaintext.length === 0 && this.counter > 0) throw this.corrupted();
      return plaintext;
    }
    if (this.filled === SEALED_CHUNK_SIZE && open(this.key!, chunkNonce(this.counter, false), sealed)) {
      throw new AgeError("truncated", `the age file is truncated: it ends after chunk ${this.counter} without its final chunk`);
    }
    throw this.corrupted();
  }

  private corrupted(): AgeError {
    return new AgeError("corrupted-chunk", `payload chunk ${this.counter} does not authenticate: the age file is corrupted (or cut off inside that chunk)`);
  }
}
