import bcrypt from "bcryptjs";
import { and, eq, gt, isNull } from "drizzle-orm";
import { audit } from "../audit/audit";
import type { RequestContext, WorkContext } from "../context";
import { adminPasswordLinks, type Server, type User } from "../db/schema";
import { randomToken, sha256Hex } from "../crypto/bytes";
import { badRequest, conflict } from "../errors";
import { dispatchJob } from "../fleet/hosts";
import { ownedServer } from "./servers";

const LINK_LIFETIME_MS = 60 * 60_000;
/** Synapse's own default cost for bcrypt (bcrypt_rounds). */
const BCRYPT_ROUNDS = 12;

/**
 * The first admin account is made at provisioning with a random password nobody
 * keeps. Its owner sets the real one through a one-time link (1 hour, single
 * use, only its hash stored); the Worker bcrypt-hashes the password and only
 * that hash travels to the host, in the job that writes it into Synapse's
 * database. The password is never emailed, logged or stored in clear.
 */
export async function createAdminPasswordLink(ctx: RequestContext, user: User, serverId: string) {
  const server = await ownedServer(ctx.db, user.id, serverId);
  requireAdminAccount(server);
  const token = randomToken();
  const expiresAt = new Date(ctx.now.getTime() + LINK_LIFETIME_MS);
  await ctx.db.batch([
    // Only the newest link works.
    ctx.db.delete(adminPasswordLinks).where(eq(adminPasswordLinks.serverId, server.id)),
    ctx.db.insert(adminPasswordLinks).values({ id: await sha256Hex(token), serverId: server.id, createdAt: ctx.now, expiresAt }),
  ]);
  return { url: ctx.link(`/servers/${server.id}/admin-password?token=${token}`), expiresAt, adminUserId: server.adminUserId! };
}

function requireAdminAccount(server: Server) {
  if (server.status !== "running" || !server.adminUserId) {
    throw conflict("invalid_state", "The admin account exists once the homeserver is running.");
  }
}

export async function setAdminPassword(ctx: WorkContext, user: User, serverId: string, token: string, password: string) {
  const server = await ownedServer(ctx.db, user.id, serverId);
  requireAdminAccount(server);
  const [used] = await ctx.db
    .update(adminPasswordLinks)
    .set({ usedAt: ctx.now })
    .where(
      and(
        eq(adminPasswordLinks.id, await sha256Hex(token)),
        eq(adminPasswordLinks.serverId, server.id),
        isNull(adminPasswordLinks.usedAt),
        gt(adminPasswordLinks.expiresAt, ctx.now),
      ),
    )
    .returning();
  if (!used) throw badRequest("invalid_token", "This link is invalid, was already used, or has expired.");
  const passwordHash = await bcrypt.hash(password, BCRYPT_ROUNDS);
  const job = await dispatchJob(
    ctx.db,
    ctx.env,
    { hostId: server.hostId!, kind: "homeserver.set_admin_password", payload: { serverId: server.id, adminUserId: server.adminUserId!, passwordHash } },
    ctx.now,
  );
  await audit(ctx.db, ctx.now, `user:${user.id}`, "server.admin_password_set", server.id);
  return { jobId: job.id, adminUserId: server.adminUserId! };
}
