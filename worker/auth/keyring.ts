import { and, desc, isNull, lte, ne } from "drizzle-orm";
import type { Database } from "../db/client";
import { sessionKeys } from "../db/schema";
import { base64UrlDecode, base64UrlEncode, randomBytes, utf8 } from "../crypto/bytes";
import { deriveWrappingKey, unwrapSecret, wrapSecret } from "../crypto/wrap";
import { SESSION_ABSOLUTE_LIFETIME_MS, SIGNING_KEY_ROTATION_INTERVAL_MS } from "./policy";

/**
 * The session signing key ring. Each key's HMAC secret is stored in D1 wrapped
 * (AES-256-GCM, the key id as associated data) under a key derived from the
 * SESSION_KEYRING_SECRET Worker secret. The newest unretired key signs; a
 * retired key keeps verifying until every session it can have signed has hit
 * its absolute expiry, then it is deleted.
 */
export interface SigningKey {
  kid: string;
  key: CryptoKey;
}

// Per wrapping secret: its AES key and the HMAC keys unwrapped with it, cached for the isolate's life.
interface UnwrapCache {
  wrapping: Promise<CryptoKey>;
  hmac: Map<string, Promise<CryptoKey>>;
}
const caches = new Map<string, UnwrapCache>();

function cacheFor(secret: string): UnwrapCache {
  let cache = caches.get(secret);
  if (!cache) {
    cache = { wrapping: deriveWrappingKey(secret, "berth session keyring wrap v1"), hmac: new Map() };
    caches.set(secret, cache);
  }
  return cache;
}

async function wrap(secret: string, kid: string, raw: Uint8Array): Promise<string> {
  return wrapSecret(await cacheFor(secret).wrapping, kid, raw);
}

function unwrapToHmacKey(secret: string, kid: string, wrapped: string): Promise<CryptoKey> {
  const cache = cacheFor(secret);
  const cacheKey = `${kid}:${wrapped}`;
  let key = cache.hmac.get(cacheKey);
  if (!key) {
    key = (async () => {
      const raw = await unwrapSecret(await cache.wrapping, kid, wrapped);
      return crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
    })();
    key.catch(() => cache.hmac.delete(cacheKey));
    cache.hmac.set(cacheKey, key);
  }
  return key;
}

export async function createSigningKey(db: Database, secret: string, now: Date): Promise<SigningKey> {
  const kid = base64UrlEncode(randomBytes(9));
  const raw = randomBytes(32);
  const wrappedSecret = await wrap(secret, kid, raw);
  await db.insert(sessionKeys).values({ kid, wrappedSecret, createdAt: now });
  return { kid, key: await unwrapToHmacKey(secret, kid, wrappedSecret) };
}

async function newestUnretiredKey(db: Database) {
  const [row] = await db.select().from(sessionKeys).where(isNull(sessionKeys.retiredAt)).orderBy(desc(sessionKeys.createdAt)).limit(1);
  return row;
}

/** The key that signs new cookies: the newest unretired one, created on first use. */
export async function currentSigningKey(db: Database, secret: string, now: Date): Promise<SigningKey> {
  const row = await newestUnretiredKey(db);
  if (!row) return createSigningKey(db, secret, now);
  return { kid: row.kid, key: await unwrapToHmacKey(secret, row.kid, row.wrappedSecret) };
}

/** The key a cookie names, if it is still in the ring. */
export async function verificationKey(row: typeof sessionKeys.$inferSelect | undefined, secret: string, now: Date): Promise<CryptoKey | null> {
  if (!row || (row.deleteAfter && row.deleteAfter <= now)) return null;
  try {
    return await unwrapToHmacKey(secret, row.kid, row.wrappedSecret);
  } catch {
    // Wrapped under another secret: a key we cannot vouch for.
    return null;
  }
}

/** Checks a session cookie of the format before the JWS (see sessions.ts). */
export async function verifySignature(key: CryptoKey, message: string, signature: string): Promise<boolean> {
  const bytes = base64UrlDecode(signature);
  // crypto.subtle.verify compares in constant time.
  return bytes !== null && crypto.subtle.verify("HMAC", key, bytes, utf8(message));
}

export interface RotationResult {
  rotated: boolean;
  deleted: number;
}

/**
 * Run by the scheduled handler: brings in a new key when the current one is due,
 * and deletes retired keys once no unexpired session can carry their signature.
 */
export async function rotateSigningKeys(db: Database, secret: string, now: Date): Promise<RotationResult> {
  const newest = await newestUnretiredKey(db);
  let rotated = false;
  if (!newest || newest.createdAt.getTime() + SIGNING_KEY_ROTATION_INTERVAL_MS <= now.getTime()) {
    const fresh = await createSigningKey(db, secret, now);
    await db
      .update(sessionKeys)
      .set({ retiredAt: now, deleteAfter: new Date(now.getTime() + SESSION_ABSOLUTE_LIFETIME_MS) })
      .where(and(isNull(sessionKeys.retiredAt), ne(sessionKeys.kid, fresh.kid)));
    rotated = true;
  }
  const deleted = await db.delete(sessionKeys).where(lte(sessionKeys.deleteAfter, now)).returning({ kid: sessionKeys.kid });
  return { rotated, deleted: deleted.length };
}
