import { and, eq, gt, isNull } from "drizzle-orm";
import type { EnrollRequest } from "../../protocol/messages";
import { audit } from "../audit/audit";
import { recordRefusal } from "../audit/refusals";
import type { Database } from "../db/client";
import { hosts, joinTokens } from "../db/schema";
import { base64UrlDecode, randomToken, sha256Hex } from "../crypto/bytes";
import { badRequest, conflict } from "../errors";

export const REGIONS = ["us-east", "us-west", "us-central"] as const;
export type Region = (typeof REGIONS)[number];

/** A one-time join token for one new host in `region`; only its hash is kept. */
export async function createJoinToken(db: Database, operatorId: string, region: Region, minutes: number, now: Date) {
  const token = `bjt_${randomToken()}`;
  const expiresAt = new Date(now.getTime() + minutes * 60_000);
  await db.batch([
    db.insert(joinTokens).values({ id: await sha256Hex(token), region, createdBy: operatorId, createdAt: now, expiresAt }),
    audit(db, now, `user:${operatorId}`, "join_token.created", null, { region, expiresAt: expiresAt.toISOString() }),
  ]);
  return { token, region, expiresAt };
}

async function importPublicKey(publicKey: string): Promise<boolean> {
  const raw = base64UrlDecode(publicKey);
  if (raw?.length !== 32) return false;
  try {
    await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
    return true;
  } catch {
    return false;
  }
}

const invalidToken = () => badRequest("invalid_join_token", "This join token is invalid, was already used, or has expired.");

/**
 * Exchanges a join token for a host identity: the host's own Ed25519 public key
 * is registered, so D1 holds nothing that would let its reader act as the host.
 */
export async function enrollHost(db: Database, request: EnrollRequest, now: Date) {
  if (!(await importPublicKey(request.publicKey))) {
    throw badRequest("invalid_public_key", "publicKey must be a raw Ed25519 public key (32 bytes, base64url).");
  }
  const tokenId = await sha256Hex(request.joinToken);
  // Counted, not audited: the name is the caller's choice, and could be a customer's id.
  const refuse = async () => {
    await recordRefusal(db, now, "host.enroll_refused", "invalid join token", { name: request.name });
    return invalidToken();
  };
  const usable = and(eq(joinTokens.id, tokenId), isNull(joinTokens.usedAt), gt(joinTokens.expiresAt, now));
  // The token first: without one, nobody learns whether a host name exists.
  const [valid] = await db.select({ id: joinTokens.id }).from(joinTokens).where(usable);
  if (!valid) throw await refuse();
  const [taken] = await db.select({ id: hosts.id }).from(hosts).where(eq(hosts.name, request.name));
  if (taken) throw conflict("host_name_taken", `A host named ${request.name} is already enrolled.`);

  const hostId = crypto.randomUUID();
  const [token] = await db.update(joinTokens).set({ usedAt: now, hostId }).where(usable).returning();
  if (!token) throw await refuse(); // spent by a concurrent enrollment
  await db.batch([
    db.insert(hosts).values({
      id: hostId,
      name: request.name,
      region: token.region,
      memoryMiB: request.capacity.memoryMiB,
      cpus: request.capacity.cpus,
      diskGiB: request.capacity.diskGiB,
      publicKey: request.publicKey,
      status: "offline",
      agentVersion: request.agentVersion,
      enrolledAt: now,
    }),
    audit(db, now, `host:${hostId}`, "host.enrolled", hostId, { name: request.name, region: token.region }),
  ]);
  return { hostId, region: token.region };
}
