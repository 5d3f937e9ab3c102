import { and, eq, exists, gt, inArray, lte, ne, or } from "drizzle-orm";
import { CompactSign, compactVerify, decodeProtectedHeader } from "jose";
import type { Database } from "../db/client";
import { sessionKeys, sessions, users, type Session, type User } from "../db/schema";
import { base64UrlDecode, randomToken, sha256Hex } from "../crypto/bytes";
import { currentSigningKey, verificationKey, verifySignature } from "./keyring";
import { SESSION_ABSOLUTE_LIFETIME_MS, SESSION_IDLE_TIMEOUT_MS, SESSION_REFRESH_INTERVAL_MS } from "./policy";

/**
 * A session cookie is a compact JWS (made and checked with `jose`): HS256 by
 * the key ring's current key, named by `kid`, over 256 random bits — the
 * session's secret. D1 holds only the SHA-256 of the secret, so neither a
 * stolen database nor a forged cookie is enough to act as a user; revocation
 * is deleting the row.
 */
export interface IssuedCookie {
  value: string;
  expiresAt: Date;
}

export interface Authenticated {
  user: User;
  session: Session;
  /** Set when the cookie must be re-sent: expiry slid forward, or re-signed by the current key. */
  reissue?: IssuedCookie;
}

const COOKIE_ALGORITHM = "HS256";
/** Explicit typing: no other JWS the key ring might sign passes for a session cookie. */
const COOKIE_TYPE = "berth-session";
/**
 * The format before it, `<kid>.<secret>.<HMAC-SHA256 over "berth-session-v1.<kid>.<secret>">`,
 * is still accepted and re-issued as a JWS on its first use. Its branch can go 30 days after
 * the deploy that brought the JWS in: by then every such cookie has expired.
 */
const LEGACY_SIGNED_CONTEXT = "berth-session-v1";

async function signCookie(db: Database, secret: string, sessionSecret: string, expiresAt: Date, now: Date) {
  const { kid, key } = await currentSigningKey(db, secret, now);
  const value = await new CompactSign(base64UrlDecode(sessionSecret)!).setProtectedHeader({ alg: COOKIE_ALGORITHM, kid, typ: COOKIE_TYPE }).sign(key);
  return { value, expiresAt };
}

export async function createSession(db: Database, secret: string, userId: string, now: Date) {
  const sessionSecret = randomToken();
  const expiresAt = new Date(now.getTime() + SESSION_IDLE_TIMEOUT_MS);
  const cookie = await signCookie(db, secret, sessionSecret, expiresAt, now);
  const id = await sha256Hex(sessionSecret);
  await db.insert(sessions).values({
    id,
    userId,
    createdAt: now,
    lastSeenAt: now,
    expiresAt,
    absoluteExpiresAt: new Date(now.getTime() + SESSION_ABSOLUTE_LIFETIME_MS),
  });
  return { sessionId: id, cookie };
}

type ParsedCookie = { format: "jws"; kid: string; sessionSecret: string } | { format: "legacy"; kid: string; sessionSecret: string; signature: string };

/** The key id and session secret a cookie claims, before anything is verified. A JWS's payload is the secret's bytes, so its middle part is the secret. */
function parseCookie(value: string): ParsedCookie | null {
  const parts = value.split(".");
  if (parts.length !== 3) return null;
  const [first, sessionSecret, signature] = parts as [string, string, string];
  if (base64UrlDecode(sessionSecret)?.length !== 32) return null;
  // A legacy key id is 9 random bytes; a JWS header is longer JSON.
  if (base64UrlDecode(first)?.length === 9) return { format: "legacy", kid: first, sessionSecret, signature };
  try {
    const header = decodeProtectedHeader(value);
    if (header.alg !== COOKIE_ALGORITHM || header.typ !== COOKIE_TYPE || typeof header.kid !== "string" || base64UrlDecode(header.kid) === null) return null;
    return { format: "jws", kid: header.kid, sessionSecret };
  } catch {
    return null;
  }
}

async function signatureHolds(key: CryptoKey, parsed: ParsedCookie, cookieValue: string): Promise<boolean> {
  if (parsed.format === "legacy") return verifySignature(key, `${LEGACY_SIGNED_CONTEXT}.${parsed.kid}.${parsed.sessionSecret}`, parsed.signature);
  try {
    await compactVerify(cookieValue, key, { algorithms: [COOKIE_ALGORITHM] });
    return true;
  } catch {
    return false;
  }
}

/** Resolves a cookie to its live session and user, or null for anything forged, expired or revoked. */
export async function authenticate(db: Database, secret: string, cookieValue: string, now: Date): Promise<Authenticated | null> {
  const parsed = parseCookie(cookieValue);
  if (!parsed) return null;
  const id = await sha256Hex(parsed.sessionSecret);
  // One round trip. (A join would collide same-named columns in D1's batch results.)
  const [keyRows, sessionRows, userRows] = await db.batch([
    db.select().from(sessionKeys).where(eq(sessionKeys.kid, parsed.kid)),
    db.select().from(sessions).where(eq(sessions.id, id)),
    db
      .select()
      .from(users)
      .where(inArray(users.id, db.select({ id: sessions.userId }).from(sessions).where(eq(sessions.id, id)))),
  ]);
  const key = await verificationKey(keyRows[0], secret, now);
  if (!key) return null;
  if (!(await signatureHolds(key, parsed, cookieValue))) return null;
  const session = sessionRows[0];
  const user = userRows[0];
  if (!session || !user) return null;
  if (session.expiresAt <= now || session.absoluteExpiresAt <= now) return null;

  if (now.getTime() - session.lastSeenAt.getTime() < SESSION_REFRESH_INTERVAL_MS) {
    if (parsed.format === "jws") return { user, session };
    return { user, session, reissue: await signCookie(db, secret, parsed.sessionSecret, session.expiresAt, now) };
  }
  const expiresAt = new Date(Math.min(now.getTime() + SESSION_IDLE_TIMEOUT_MS, session.absoluteExpiresAt.getTime()));
  await db.update(sessions).set({ lastSeenAt: now, expiresAt }).where(eq(sessions.id, id));
  const reissue = await signCookie(db, secret, parsed.sessionSecret, expiresAt, now);
  return { user, session: { ...session, lastSeenAt: now, expiresAt }, reissue };
}

/**
 * A query condition that holds while the session is live (not revoked, not expired), for
 * long-lived responses to re-check their session in the query they make anyway.
 */
export function sessionIsLive(db: Database, sessionId: string, now: Date) {
  return exists(
    db
      .select({ id: sessions.id })
      .from(sessions)
      .where(and(eq(sessions.id, sessionId), gt(sessions.expiresAt, now), gt(sessions.absoluteExpiresAt, now))),
  );
}

export async function revokeSession(db: Database, sessionId: string): Promise<void> {
  await db.delete(sessions).where(eq(sessions.id, sessionId));
}

/** Log out everywhere; `keepSessionId` spares the session that asked (a password change from it). */
export async function revokeAllSessions(db: Database, userId: string, keepSessionId?: string): Promise<number> {
  const condition = keepSessionId ? and(eq(sessions.userId, userId), ne(sessions.id, keepSessionId)) : eq(sessions.userId, userId);
  const removed = await db.delete(sessions).where(condition).returning({ id: sessions.id });
  return removed.length;
}

export async function pruneExpiredSessions(db: Database, now: Date): Promise<number> {
  const removed = await db
    .delete(sessions)
    .where(or(lte(sessions.expiresAt, now), lte(sessions.absoluteExpiresAt, now)))
    .returning({ id: sessions.id });
  return removed.length;
}
