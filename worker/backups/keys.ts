import { generateX25519Identity, identityToRecipient } from "age-encryption";
import { eq } from "drizzle-orm";
import type { Database } from "../db/client";
import { backupKeys } from "../db/schema";
import { utf8 } from "../crypto/bytes";
import { cachedWrappingKey, unwrapSecret, wrapSecret } from "../crypto/wrap";

/**
 * Each homeserver's backups are encrypted to its own age X25519 key pair, made
 * here on its first backup. Hosts get only the recipient (public key): they can
 * encrypt but never decrypt, so a stolen host exposes no earlier backup. The
 * identity (private key) is stored wrapped under BACKUP_KEY_WRAPPING_SECRET with
 * the server id as associated data, is never returned by any API, and is
 * unwrapped only to go into a restore job.
 */
const wrappingKey = (secret: string) => cachedWrappingKey(secret, "berth backup identity wrap v1");

async function storedKey(db: Database, serverId: string) {
  const [row] = await db.select().from(backupKeys).where(eq(backupKeys.serverId, serverId));
  return row;
}

/** The server's age recipient (age1…), its key pair made on first use. */
export async function backupRecipient(db: Database, secret: string, serverId: string, now: Date): Promise<string> {
  const existing = await storedKey(db, serverId);
  if (existing) return existing.recipient;
  const identity = await generateX25519Identity();
  const wrappedIdentity = await wrapSecret(await wrappingKey(secret), serverId, utf8(identity));
  await db
    .insert(backupKeys)
    .values({ serverId, recipient: await identityToRecipient(identity), wrappedIdentity, createdAt: now })
    // Two first backups at once: the key stored first is the server's, the other is dropped unused.
    .onConflictDoNothing();
  return (await storedKey(db, serverId))!.recipient;
}

/** The server's age identity (AGE-SECRET-KEY-1…), for a restore job and nothing else. */
export async function backupIdentity(db: Database, secret: string, serverId: string): Promise<string> {
  const row = await storedKey(db, serverId);
  if (!row) throw new Error(`no backup key for server ${serverId}`);
  return new TextDecoder().decode(await unwrapSecret(await wrappingKey(secret), serverId, row.wrappedIdentity));
}
