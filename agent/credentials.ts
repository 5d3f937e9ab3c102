// The host's identity: an Ed25519 key pair made on the host at enrollment. The
// private key never leaves `<config dir>/host-key.pem` (mode 0600); the control
// plane keeps the public key and checks the hello signature against it.
import { closeSync, fstatSync, openSync, readFileSync } from "node:fs";
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { join } from "node:path";
import { helloSigningInput } from "../protocol/messages.ts";
import { writeFileAtomic } from "./atomic-file.ts";

export const KEY_FILE = "host-key.pem";

export class CredentialError extends Error {
  override name = "CredentialError";
}

export function keyPath(configDir: string): string {
  return join(configDir, KEY_FILE);
}

/** A fresh key pair, in memory: written only once the control plane accepted the enrollment. */
export function generateHostKey(): KeyObject {
  return generateKeyPairSync("ed25519").privateKey;
}

/** The raw 32-byte Ed25519 public key, base64url (what enrollment sends). */
export function publicKeyBase64url(privateKey: KeyObject): string {
  const jwk = createPublicKey(privateKey).export({ format: "jwk" });
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string") {
    throw new CredentialError("the host key is not an Ed25519 key");
  }
  return jwk.x; // JWK "x" is exactly the raw public key, base64url without padding
}

/** Writes the private key as PKCS#8 PEM, created with mode 0600 and replaced atomically. */
export function saveHostKey(configDir: string, privateKey: KeyObject): void {
  const pem = privateKey.export({ format: "pem", type: "pkcs8" });
  writeFileAtomic(keyPath(configDir), pem, 0o600);
}

/**
 * Reads the private key, refusing a key file that anyone but its owner may read
 * or write (mode & 0o077), or one that is not a regular file.
 */
export function loadHostKey(configDir: string): KeyObject {
  const path = keyPath(configDir);
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      throw new CredentialError(`${path} does not exist: this host is not enrolled (run \`berth-agent enroll\` first)`);
    }
    throw new CredentialError(`cannot open ${path}: ${(error as Error).message}`);
  }
  try {
    const stat = fstatSync(fd); // the opened file itself: no window between check and read
    if (!stat.isFile()) throw new CredentialError(`${path} is not a regular file`);
    const mode = stat.mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new CredentialError(
        `${path} has mode ${mode.toString(8).padStart(4, "0")}: the host key must be readable by its owner only; ` +
          `run \`chmod 600 ${path}\` (and consider re-enrolling if others may have read it)`,
      );
    }
    if (typeof process.getuid === "function" && stat.uid !== process.getuid() && process.getuid() !== 0) {
      throw new CredentialError(`${path} is owned by uid ${stat.uid}, not by this user (uid ${process.getuid()})`);
    }
    const key = createPrivateKey(readFileSync(fd));
    if (key.asymmetricKeyType !== "ed25519") throw new CredentialError(`${path} does not hold an Ed25519 private key`);
    return key;
  } catch (error) {
    if (error instanceof CredentialError) throw error;
    throw new CredentialError(`${path} is not a usable private key: ${(error as Error).message}`);
  } finally {
    closeSync(fd);
  }
}

/** Ed25519 signature over helloSigningInput(hostId, nonce), base64url. */
export function signHello(privateKey: KeyObject, hostId: string, nonce: string): string {
  return sign(null, Buffer.from(helloSigningInput(hostId, nonce), "utf8"), privateKey).toString("base64url");
}
