import { and, eq, exists, gt, inArray, lte, ne, or } from "drizzle-orm";
import type { Database } from "../db/client";
import { sessionKeys, sessions, users, type Session, type User } from "../db/schema";
import { base64UrlDecode, randomToken, sha256Hex } from "../crypto/bytes";
import { currentSigningKey, sign, verificationKey, verifySignature } from "./keyring";
import { SESSION_ABSOLUTE_LIFETIME_MS, SESSION_IDLE_TIMEOUT_MS, SESSION_REFRESH_INTERVAL_MS } from "./policy";

/**
 * A session cookie is `<kid>.<secret>.<signature>`: the signing key's id, 256
 * random bits, and an HMAC-SHA256 over both by that key. D1 holds only the
 * SHA-256 of the secret, so neither a stolen database nor a forged cookie is
 * enough to act as a user; revocation is deleting the row.
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

const SIGNED_CONTEXT = "berth-session-v1";

async function signCookie(db: Database, secret: string, sessionSecret: string, expiresAt: Date, now: Date) {
  const { kid, key } = await currentSigningKey(db, secret, now);
  const signature = await sign(key, `${SIGNED_CONTEXT}.${kid}.${sessionSecret}`);
  return { value: `${kid}.${sessionSecret}.${signature}`, expiresAt };
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

function parseCookie(value: string) {
  const parts = value.split(".");
  if (parts.length !== 3) return null;
  const [kid, sessionSecret, signature] = parts as [string, string, string];
  if (base64UrlDecode(kid) === null || base64UrlDecode(sessionSecret)?.length !== 32) return null;
  return { kid, sessionSecret, signature };
}

/** Resolves a cookie to its live session and user, or null for anything forged, expired or revoked. */
export async function authenticate(
  db: Database,
  secret: string,
  cookieValue: string,
  now: Date,
): Promise<Authenticated | null> {
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
  if (!(await verifySignature(key, `${SIGNED_CONTEXT}.${parsed.kid}.${parsed.sessionSecret}`, parsed.signature))) {
    return null;
  }
  const session = sessionRows[0];
  const user = userRows[0];
  if (!session || !user) return null;
  if (session.expiresAt <= now || session.absoluteExpiresAt <= now) return null;

  if (now.getTime() - session.lastSeenAt.getTime() < SESSION_REFRESH_INTERVAL_MS) {
    return { user, session };
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
  const condition = keepSessionId
    ? and(eq(sessions.userId, userId), ne(sessions.id, keepSessionId))
    : eq(sessions.userId, userId);
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
