import { scryptAsync } from "@noble/hashes/scrypt.js";
import { scrypt as nodeScrypt } from "node:crypto";
import { base64Decode, base64Encode, constantTimeEqual } from "../crypto/bytes";

/**
 * Passwords are hashed with scrypt: memory-hard, and native in workerd through
 * node:crypto (Workers cannot compile WebAssembly at run time, and Argon2id
 * would have to run as pure JS). The parameters are OWASP's N=2^15, r=8, p=3:
 * 32 MiB per hash, and N·r·p = 786,432, inside the Workers production cap of
 * 2^20. `npm run bench` measures the cost per hash.
 */
export interface ScryptParams {
  /** log2(N) */
  ln: number;
  r: number;
  p: number;
}

export const CURRENT_PARAMS: ScryptParams = { ln: 15, r: 8, p: 3 };

const SALT_BYTES = 16;
const KEY_BYTES = 32;
const PHC = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/;

export type ScryptImplementation = "native" | "portable";

/** scrypt through node:crypto where the runtime has it, else @noble/hashes: the same bytes either way. */
export async function scryptKey(
  password: string,
  salt: Uint8Array,
  params: ScryptParams,
  implementation: ScryptImplementation = typeof nodeScrypt === "function" ? "native" : "portable",
): Promise<Uint8Array> {
  const N = 2 ** params.ln;
  if (implementation === "portable") {
    return scryptAsync(password, salt, { N, r: params.r, p: params.p, dkLen: KEY_BYTES });
  }
  return new Promise((resolve, reject) => {
    nodeScrypt(password, salt, KEY_BYTES, { N, r: params.r, p: params.p, maxmem: 256 * N * params.r }, (error, key) =>
      error ? reject(error) : resolve(new Uint8Array(key)),
    );
  });
}

export function formatPhc(params: ScryptParams, salt: Uint8Array, key: Uint8Array): string {
  return `$scrypt$ln=${params.ln},r=${params.r},p=${params.p}$${base64Encode(salt, false)}$${base64Encode(key, false)}`;
}

export function parsePhc(phc: string): { params: ScryptParams; salt: Uint8Array; key: Uint8Array } | null {
  const match = PHC.exec(phc);
  if (!match) return null;
  const [, ln, r, p, salt, key] = match;
  return { params: { ln: Number(ln), r: Number(r), p: Number(p) }, salt: base64Decode(salt!), key: base64Decode(key!) };
}

export async function hashPassword(password: string, params: ScryptParams = CURRENT_PARAMS): Promise<string> {
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  return formatPhc(params, salt, await scryptKey(password, salt, params));
}

export async function verifyPassword(password: string, phc: string): Promise<boolean> {
  const parsed = parsePhc(phc);
  if (!parsed) return false;
  const key = await scryptKey(password, parsed.salt, parsed.params);
  return constantTimeEqual(key, parsed.key);
}

/** True when the stored hash was made with other parameters than today's: rehash it on the next login. */
export function needsRehash(phc: string, params: ScryptParams = CURRENT_PARAMS): boolean {
  const parsed = parsePhc(phc);
  if (!parsed) return true;
  return parsed.params.ln !== params.ln || parsed.params.r !== params.r || parsed.params.p !== params.p;
}

const DUMMY_SALT = new Uint8Array(SALT_BYTES);

/** Spends the same work as a real verification, for accounts that do not exist. */
export async function burnVerificationTime(password: string): Promise<void> {
  await scryptKey(password, DUMMY_SALT, CURRENT_PARAMS);
}
