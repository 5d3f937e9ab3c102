import bcrypt from "bcryptjs";
import { and, eq, gt, isNull } from "drizzle-orm";
import { audit } from "../audit/audit";
import type { RequestContext, WorkContext } from "../context";
import { adminPasswordLinks, type Server, type User } from "../db/schema";
import { randomToken, sha256Hex } from "../crypto/bytes";
import { badRequest, conflict } from "../errors";
import { dispatchJob } from "../fleet/hosts";
import { ownedServer } from "./servers";

const ADMIN_LINK_LIFETIME_MS = 60 * 60_000;
/** Synapse's own default cost for bcrypt (bcrypt_rounds). */
const BCRYPT_ROUNDS = 12;

export const invalidPasswordLink = () => badRequest("invalid_token", "This link is invalid, was already used, or has expired.");

/**
 * A one-time link to set the password of one Matrix user of a homeserver: the
 * token goes in the link, only its hash is stored, and only the newest link
 * of a user works. The Worker bcrypt-hashes the password given through it and
 * only that hash travels to the host; the password is never emailed, logged
 * or stored in clear.
 */
export async function createPasswordLink(ctx: RequestContext, server: Server, userId: string, lifetimeMs: number, path: (token: string) => string) {
  const token = randomToken();
  const expiresAt = new Date(ctx.now.getTime() + lifetimeMs);
  await ctx.db.batch([
    ctx.db.delete(adminPasswordLinks).where(and(eq(adminPasswordLinks.serverId, server.id), eq(adminPasswordLinks.userId, userId))),
    ctx.db.insert(adminPasswordLinks).values({ id: await sha256Hex(token), serverId: server.id, userId, createdAt: ctx.now, expiresAt }),
  ]);
  return { url: ctx.link(path(token)), expiresAt };
}

const usable = async (ctx: WorkContext, serverId: string, token: string, userId?: string) =>
  and(
    eq(adminPasswordLinks.id, await sha256Hex(token)),
    eq(adminPasswordLinks.serverId, serverId),
    userId === undefined ? undefined : eq(adminPasswordLinks.userId, userId),
    isNull(adminPasswordLinks.usedAt),
    gt(adminPasswordLinks.expiresAt, ctx.now),
  );

/** The Matrix user an unused, unexpired link of this server sets (`userId`'s only, when given), without using it. */
export async function passwordLinkUser(ctx: WorkContext, serverId: string, token: string, userId?: string): Promise<string | undefined> {
  const [link] = await ctx.db
    .select({ userId: adminPasswordLinks.userId })
    .from(adminPasswordLinks)
    .where(await usable(ctx, serverId, token, userId));
  return link?.userId ?? undefined;
}

/** Uses the link once (the database decides: two requests cannot both use it) and hashes the password; an invalid link is a 400. */
export async function usePasswordLink(ctx: WorkContext, serverId: string, userId: string, token: string, password: string): Promise<string> {
  const [used] = await ctx.db
    .update(adminPasswordLinks)
    .set({ usedAt: ctx.now })
    .where(await usable(ctx, serverId, token, userId))
    .returning();
  if (!used) throw invalidPasswordLink();
  return bcrypt.hash(password, BCRYPT_ROUNDS);
}

/** Makes a used link usable again: the host failed to set the password, so nothing was done with it. */
export async function releasePasswordLink(ctx: WorkContext, serverId: string, token: string): Promise<void> {
  await ctx.db
    .update(adminPasswordLinks)
    .set({ usedAt: null })
    .where(and(eq(adminPasswordLinks.id, await sha256Hex(token)), eq(adminPasswordLinks.serverId, serverId)));
}

/**
 * The first admin account is made at provisioning with a random password nobody
 * keeps. Its owner sets the real one through a one-time link (1 hour).
 */
export async function createAdminPasswordLink(ctx: RequestContext, user: User, serverId: string) {
  const server = await ownedServer(ctx.db, user.id, serverId);
  const adminUserId = requireAdminAccount(server);
  const link = await createPasswordLink(ctx, server, adminUserId, ADMIN_LINK_LIFETIME_MS, (token) => `/servers/${server.id}/admin-password?token=${token}`);
  return { ...link, adminUserId };
}

function requireAdminAccount(server: Server): string {
  if (server.status !== "running" || !server.adminUserId) {
    throw conflict("invalid_state", "The admin account exists once the homeserver is running.");
  }
  return server.adminUserId;
}

export async function setAdminPassword(ctx: WorkContext, user: User, serverId: string, token: string, password: string) {
  const server = await ownedServer(ctx.db, user.id, serverId);
  const adminUserId = requireAdminAccount(server);
  const passwordHash = await usePasswordLink(ctx, server.id, adminUserId, token, password);
  const job = await dispatchJob(
    ctx.db,
    ctx.env,
    { hostId: server.hostId!, kind: "homeserver.set_admin_password", payload: { serverId: server.id, adminUserId, passwordHash } },
    ctx.now,
  );
  await audit(ctx.db, ctx.now, `user:${user.id}`, "server.admin_password_set", server.id);
  return { jobId: job.id, adminUserId };
}
