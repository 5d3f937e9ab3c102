import { and, eq, gt, isNull, lte, or, isNotNull } from "drizzle-orm";
import type { Database } from "../db/client";
import { oneTimeTokens, type TokenPurpose } from "../db/schema";
import { randomToken, sha256Hex } from "../crypto/bytes";
import { TOKEN_LIFETIME_MS } from "./policy";

/**
 * Emailed one-time tokens: 256 random bits, only the SHA-256 kept, single use,
 * short-lived. Issuing one deletes every earlier token of the same purpose for
 * that user, so only the newest link works.
 */
export async function issueToken(db: Database, userId: string, purpose: TokenPurpose, email: string, now: Date): Promise<string> {
  const token = randomToken();
  await db.batch([
    db.delete(oneTimeTokens).where(and(eq(oneTimeTokens.userId, userId), eq(oneTimeTokens.purpose, purpose))),
    db.insert(oneTimeTokens).values({
      id: await sha256Hex(token),
      userId,
      purpose,
      email,
      createdAt: now,
      expiresAt: new Date(now.getTime() + TOKEN_LIFETIME_MS[purpose]),
    }),
  ]);
  return token;
}

/** Marks the token used and returns it, atomically; null when unknown, used, expired or of another purpose. */
export async function consumeToken(db: Database, token: string, purpose: TokenPurpose, now: Date) {
  if (token.length > 128) return null;
  const [row] = await db
    .update(oneTimeTokens)
    .set({ usedAt: now })
    .where(
      and(eq(oneTimeTokens.id, await sha256Hex(token)), eq(oneTimeTokens.purpose, purpose), isNull(oneTimeTokens.usedAt), gt(oneTimeTokens.expiresAt, now)),
    )
    .returning();
  return row ?? null;
}

/** Invalidates outstanding tokens, e.g. a pending email change once the password is reset. */
export async function revokeTokens(db: Database, userId: string, purposes: TokenPurpose[]): Promise<void> {
  await db.delete(oneTimeTokens).where(and(eq(oneTimeTokens.userId, userId), or(...purposes.map((purpose) => eq(oneTimeTokens.purpose, purpose)))));
}

export async function pruneTokens(db: Database, now: Date): Promise<number> {
  const removed = await db
    .delete(oneTimeTokens)
    .where(or(lte(oneTimeTokens.expiresAt, now), isNotNull(oneTimeTokens.usedAt)))
    .returning({ id: oneTimeTokens.id });
  return removed.length;
}
