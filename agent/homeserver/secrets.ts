// A homeserver's directories, secrets and signing key on the host. Everything is
// owned by the server's uid: directories 0700, files 0600. Secrets are made once
// from the kernel's CSPRNG and never regenerated (PostgreSQL keeps its password
// from the first start, federation peers remember the signing key).
import { closeSync, fchmodSync, fchownSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, randomInt } from "node:crypto";
import { dirname, join } from "node:path";
import { writeFileAtomic } from "../atomic-file.ts";
import { ensureOwnedDirectorySync, openOwnedFileSync } from "../owned-directories.ts";
import type { HomeserverPaths } from "./names.ts";

export interface HomeserverSecrets {
  postgresPassword: string;
  registrationSharedSecret: string;
  macaroonSecretKey: string;
  formSecret: string;
}

/** Files in <server>/secrets/ (pgpass: libpq's password file, for psql run with docker exec). */
export const SECRET_FILES = {
  postgresPassword: "postgres-password",
  pgpass: "pgpass",
  registrationSharedSecret: "registration-shared-secret",
  macaroonSecretKey: "macaroon-secret-key",
  formSecret: "form-secret",
} as const;

export const POSTGRES_USER = "synapse";
export const POSTGRES_DB = "synapse";

/** 48 random bytes (384 bits), URL-safe base64: no character YAML, libpq's pgpass or a shell would treat specially. */
export function randomSecret(bytes = 48): string {
  return randomBytes(bytes).toString("base64url");
}

/**
 * The file's content, after setting its owner and mode (fixing what a crash between write and chown
 * left behind); nothing when it is not there. The server's uid owns the directory, so the file is
 * opened without following a link and changed through its descriptor (owned-directories.ts): a link,
 * FIFO or hard link planted in its place fails the job and changes nothing where it points.
 */
function readOwnedFile(path: string, uid: number, mode: number): string | undefined {
  const fd = openOwnedFileSync(path);
  if (fd === undefined) return undefined;
  try {
    fchownSync(fd, uid, uid);
    fchmodSync(fd, mode);
    return readFileSync(fd, "utf8");
  } finally {
    closeSync(fd);
  }
}

/** <dataRoot>/homeservers/<id>/ (root, 0700) and its synapse/, postgres/, secrets/ (the uid's, 0700). */
export function ensureDataDirs(paths: HomeserverPaths, uid: number): void {
  mkdirSync(dirname(paths.root), { recursive: true, mode: 0o700 });
  ensureOwnedDirectorySync(paths.root, 0, 0o700);
  for (const dir of [paths.synapse, paths.postgres, paths.secrets]) ensureOwnedDirectorySync(dir, uid, 0o700);
}

/** The uid owning an existing data directory of this server (after a lost state file). */
export function existingOwner(paths: HomeserverPaths): number | undefined {
  try {
    return statSync(paths.synapse).uid;
  } catch {
    return undefined;
  }
}

/** Writes `path` (0600, owned by uid) unless it exists; returns its content. */
export function ensureSecretFile(path: string, uid: number, make: () => string): string {
  let content = readOwnedFile(path, uid, 0o600);
  if (content === undefined) {
    content = `${make()}\n`;
    writeFileAtomic(path, content, 0o600, uid);
  }
  const value = content.trim();
  if (!value) throw new Error(`${path} is empty`);
  return value;
}

/** An existing secret file's value (its owner and mode fixed as ensureSecretFile does). */
export function readSecretFile(path: string, uid: number): string {
  const value = readOwnedFile(path, uid, 0o600)?.trim();
  if (!value) throw new Error(`${path} is missing or empty`);
  return value;
}

/** Writes `path` (0600, owned by uid) when its content differs; returns whether it changed. */
export function writeOwnedFile(path: string, content: string, uid: number): boolean {
  if (readOwnedFile(path, uid, 0o600) === content) return false;
  writeFileAtomic(path, content, 0o600, uid);
  return true;
}

export function ensureSecrets(paths: HomeserverPaths, uid: number): HomeserverSecrets {
  const file = (name: string) => join(paths.secrets, name);
  const postgresPassword = ensureSecretFile(file(SECRET_FILES.postgresPassword), uid, () => randomSecret(32));
  // libpq's password file: host:port:database:user:password (base64url needs no escaping)
  writeOwnedFile(file(SECRET_FILES.pgpass), `*:*:*:${POSTGRES_USER}:${postgresPassword}\n`, uid);
  return {
    postgresPassword,
    registrationSharedSecret: ensureSecretFile(file(SECRET_FILES.registrationSharedSecret), uid, () => randomSecret()),
    macaroonSecretKey: ensureSecretFile(file(SECRET_FILES.macaroonSecretKey), uid, () => randomSecret()),
    formSecret: ensureSecretFile(file(SECRET_FILES.formSecret), uid, () => randomSecret()),
  };
}

// ---------- the signing key ----------

export interface SigningKey {
  /** e.g. "a_AbCd" (Synapse's "version"; the full key id is "ed25519:a_AbCd"). */
  version: string;
  /** The public key, unpadded standard base64 (as in /_matrix/key/v2/server). */
  publicKey: string;
  /** The file's line: "ed25519 <version> <unpadded base64 of the 32-byte seed>". */
  line: string;
}

/** PKCS#8 DER of an Ed25519 private key, up to the 32-byte seed (RFC 8410). */
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

const LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

function unpadded(base64url: string): string {
  return Buffer.from(base64url, "base64url").toString("base64").replace(/=+$/, "");
}

/** A new Ed25519 key in Synapse's signing key format (Node's CSPRNG; as synapse._scripts.generate_signing_key does). */
export function generateSigningKey(): SigningKey {
  const { privateKey } = generateKeyPairSync("ed25519");
  const jwk = privateKey.export({ format: "jwk" });
  if (!jwk.d || !jwk.x) throw new Error("Ed25519 key export without d/x");
  let version = "a_";
  for (let i = 0; i < 4; i++) version += LETTERS[randomInt(LETTERS.length)];
  const seed = unpadded(jwk.d);
  return { version, publicKey: unpadded(jwk.x), line: `ed25519 ${version} ${seed}` };
}

/** Reads a Synapse signing key line back (and derives its public key). */
export function parseSigningKey(text: string): SigningKey {
  const line = text.split("\n").find((l) => l.trim()) ?? "";
  const match = /^ed25519 ([A-Za-z0-9_]+) ([A-Za-z0-9+/]{43})=?$/.exec(line.trim());
  if (!match) throw new Error("not a Synapse ed25519 signing key");
  const seed = Buffer.from(match[2]!, "base64");
  if (seed.length !== 32) throw new Error("signing key seed is not 32 bytes");
  const privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: "der", type: "pkcs8" });
  const x = createPublicKey(privateKey).export({ format: "jwk" }).x!;
  return { version: match[1]!, publicKey: unpadded(x), line: line.trim() };
}

export function signingKeyFileName(serverName: string): string {
  return `${serverName}.signing.key`;
}

/** Makes the signing key once (in synapse/, 0600, owned by uid); returns it. */
export function ensureSigningKey(paths: HomeserverPaths, serverName: string, uid: number): SigningKey {
  return parseSigningKey(ensureSecretFile(join(paths.synapse, signingKeyFileName(serverName)), uid, () => generateSigningKey().line));
}
