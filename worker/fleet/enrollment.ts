import { and, eq, gt, isNull, sql } from "drizzle-orm";
import type { EnrollRequest } from "../../protocol/messages";
import { audit } from "../audit/audit";
import { recordRefusal } from "../audit/refusals";
import { type Database, isUniqueViolation } from "../db/client";
import { insertWhere } from "../db/conditional-insert";
import { auditLog, hosts, joinTokens } from "../db/schema";
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
  const [token] = await db.select({ region: joinTokens.region }).from(joinTokens).where(usable);
  if (!token) throw await refuse();
  const nameTaken = () => conflict("host_name_taken", `A host named ${request.name} is already enrolled.`);
  const [taken] = await db.select({ id: hosts.id }).from(hosts).where(eq(hosts.name, request.name));
  if (taken) throw nameTaken();

  // One transaction: the token is spent only if the host is written, so a failure (a name
  // taken meanwhile, a busy database) leaves the token for the agent's next try.
  const hostId = crypto.randomUUID();
  const spentForThisHost = sql`EXISTS (SELECT 1 FROM ${joinTokens} WHERE ${joinTokens.id} = ${tokenId} AND ${joinTokens.hostId} = ${hostId})`;
  let spent: unknown[];
  try {
    [spent] = await db.batch([
      db.update(joinTokens).set({ usedAt: now, hostId }).where(usable).returning({ id: joinTokens.id }),
      insertWhere(
        db,
        hosts,
        {
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
        },
        spentForThisHost,
      ),
      insertWhere(
        db,
        auditLog,
        { at: now, actor: `host:${hostId}`, action: "host.enrolled", target: hostId, detail: { name: request.name, region: token.region } },
        spentForThisHost,
      ),
    ]);
  } catch (error) {
    if (isUniqueViolation(error)) throw nameTaken(); // enrolled meanwhile under the same name
    throw error;
  }
  if (spent.length === 0) throw await refuse(); // spent by a concurrent enrollment
  return { hostId, region: token.region };
}
