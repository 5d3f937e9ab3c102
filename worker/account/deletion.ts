import { and, eq, inArray, isNotNull, isNull } from "drizzle-orm";
import { audit } from "../audit/audit";
import { throttlePasswordCheck } from "../auth/accounts";
import { verifyPassword } from "../auth/password";
import { requireOnlineHost } from "../backups/backups";
import { BACKUP_RETENTION_MS } from "../backups/policy";
import { LIVE_STATUSES } from "../billing/billing";
import { stripeFor } from "../billing/stripe-client";
import type { RequestContext, WorkContext } from "../context";
import type { Database } from "../db/client";
import {
  backupKeys,
  backups,
  billingCustomers,
  certificates,
  entitlementEvents,
  entitlements,
  invoices,
  jobs,
  legalExports,
  serverExports,
  serverImports,
  oneTimeTokens,
  servers,
  sessions,
  subscriptions,
  upkeepRuns,
  users,
  workloadUsage,
  workloads,
  type Server,
  type User,
} from "../db/schema";
import { ApiError, badGateway, conflict, forbidden } from "../errors";
import { mailerFor } from "../mail/mailer";
import { templates } from "../mail/templates";
import { DELETE_FROM, requestDeletion } from "../servers/deletion";
import { servedHostOf } from "../servers/servers";
import { serversOf } from "./visibility";

/** What deleting the account does, said the same way before (GET /api/me/deletion), in the answer and in the email. */
export interface DeletionTerms {
  /** The homeservers deleted, each after a final backup. */
  servers: { id: string; name: string }[];
  deletedNow: string[];
  kept: string[];
  /** When the last of the account's data (final backups, the scrubbed account row) is destroyed, at the latest. */
  destroyedBy: string;
}

function deletionTerms(serverRows: Pick<Server, "id" | "name">[], now: Date): DeletionTerms {
  const destroyedBy = new Date(now.getTime() + BACKUP_RETENTION_MS).toISOString();
  return {
    servers: serverRows.map(({ id, name }) => ({ id, name })),
    deletedNow: [
      "your subscription, cancelled at Stripe immediately (no further charges)",
      "your email address and password, and every session and emailed link",
      "your subscription and billing-status records",
    ],
    kept: [
      `each homeserver's final backup (encrypted; we cannot read it) until ${destroyedBy}, then destroyed with its usage records`,
      "your invoices, detached from the account, because bookkeeping law requires them",
      "the security audit log, which names the account only by its random id",
    ],
    destroyedBy,
  };
}

const stillRunning = (rows: Server[]) => rows.filter((server) => server.status !== "deleted");

/** GET /api/me/deletion: what DELETE /api/me would do now. */
export async function describeAccountDeletion(db: Database, userId: string, now: Date): Promise<DeletionTerms> {
  return deletionTerms(stillRunning(await serversOf(db, userId)), now);
}

/**
 * DELETE /api/me. The order makes failure safe:
 *  1. re-authentication and preflight (each homeserver can start its final backup now) change nothing;
 *  2. the Stripe cancellation: if it fails, nothing is deleted (502);
 *  3. one D1 batch closes the account: scrubbed row (login fails, the address is free), sessions,
 *     links and billing mirrors gone, invoices detached, the entitlement set to deletion_due;
 *  4. each homeserver's normal delete path starts (final backup, then destruction on its host).
 *     A server that cannot start now is retried hourly by startDueDeletions (deletion_due).
 * The scrubbed row stays until the servers are deleted and their backups aged out; then purgeDeletedAccounts removes it.
 */
export async function deleteAccount(ctx: RequestContext, user: User, sessionId: string, password: string): Promise<DeletionTerms> {
  await throttlePasswordCheck(ctx, sessionId);
  if (!(await verifyPassword(password, user.passwordHash))) throw forbidden("invalid_password", "Your password is incorrect.");

  const mine = stillRunning(await serversOf(ctx.db, user.id));
  const toDelete = mine.filter((server) => server.status !== "deleting");
  for (const server of toDelete) {
    if (!DELETE_FROM.includes(server.status)) {
      throw conflict("server_busy", `Your homeserver ${server.name} is ${server.status}; delete your account once that has finished. Nothing was deleted.`);
    }
    await requireOnlineHost(ctx.db, server);
  }

  await cancelSubscriptions(ctx, user.id);
  const terms = deletionTerms(mine, ctx.now);
  await ctx.db.batch([
    ctx.db
      .update(users)
      // Not a PHC string, so no password ever verifies against it.
      .set({ email: `deleted-${user.id}@deleted.invalid`, passwordHash: "deleted", emailVerifiedAt: null, deletedAt: ctx.now, updatedAt: ctx.now })
      .where(eq(users.id, user.id)),
    ctx.db.delete(sessions).where(eq(sessions.userId, user.id)),
    ctx.db.delete(oneTimeTokens).where(eq(oneTimeTokens.userId, user.id)),
    ctx.db.update(invoices).set({ userId: null, updatedAt: ctx.now }).where(eq(invoices.userId, user.id)),
    ctx.db.delete(subscriptions).where(eq(subscriptions.userId, user.id)),
    // Without it, Stripe's late webhooks about this customer find no account and change nothing.
    ctx.db.delete(billingCustomers).where(eq(billingCustomers.userId, user.id)),
    ctx.db.delete(entitlementEvents).where(eq(entitlementEvents.userId, user.id)),
    ctx.db
      .insert(entitlements)
      .values({ userId: user.id, state: "deletion_due", since: ctx.now, until: null, updatedAt: ctx.now })
      .onConflictDoUpdate({ target: entitlements.userId, set: { state: "deletion_due", since: ctx.now, until: null, updatedAt: ctx.now } }),
    audit(ctx.db, ctx.now, `user:${user.id}`, "account.deleted", user.id, { servers: mine.length }),
  ]);

  for (const server of toDelete) {
    try {
      await requestDeletion(ctx, server, `user:${user.id}`);
    } catch (error) {
      // Its state changed since the preflight: the hourly startDueDeletions takes it from here.
      if (!(error instanceof ApiError)) throw error;
      console.warn(JSON.stringify({ event: "account_deletion_server_deferred", serverId: server.id, code: error.code }));
    }
  }
  await mailerFor(ctx).send(templates.accountDeleted(user.email, terms));
  return terms;
}

async function cancelSubscriptions(ctx: RequestContext, userId: string): Promise<void> {
  const live = await ctx.db
    .select({ id: subscriptions.id })
    .from(subscriptions)
    .where(and(eq(subscriptions.userId, userId), inArray(subscriptions.status, LIVE_STATUSES)));
  for (const { id } of live) {
    try {
      await stripeFor(ctx.config).subscriptions.cancel(id);
    } catch (error) {
      console.error(JSON.stringify({ event: "account_deletion_cancel_failed", subscriptionId: id, message: String(error) }));
      throw badGateway("billing_unavailable", "We could not cancel your subscription at Stripe, so nothing was deleted. Try again in a few minutes.");
    }
  }
}

/**
 * Hourly: removes deleted accounts whose homeservers are all deleted and whose
 * backups retention has destroyed, with what still names those servers.
 */
export async function purgeDeletedAccounts(ctx: WorkContext): Promise<number> {
  const { db } = ctx;
  const closed = await db.select({ id: users.id }).from(users).where(isNotNull(users.deletedAt));
  let purged = 0;
  for (const { id } of closed) {
    const mine = await serversOf(db, id);
    if (stillRunning(mine).length > 0) continue;
    const serverIds = mine.map((server) => server.id);
    const [backupLeft] = serverIds.length ? await db.select({ id: backups.id }).from(backups).where(inArray(backups.serverId, serverIds)).limit(1) : [];
    if (backupLeft) continue;
    // An export's row outlives its files only as long as its server: the audit log keeps the record of the request.
    const [exportFilesLeft] = serverIds.length
      ? await db
          .select({ id: legalExports.id })
          .from(legalExports)
          .where(and(inArray(legalExports.serverId, serverIds), isNull(legalExports.filesDeletedAt)))
          .limit(1)
      : [];
    if (exportFilesLeft) continue;
    // A full export still being made or offered keeps its file in R2 until it fails or expires.
    const [fullExportLeft] = serverIds.length
      ? await db
          .select({ id: serverExports.id })
          .from(serverExports)
          .where(and(inArray(serverExports.serverId, serverIds), inArray(serverExports.status, ["queued", "running", "ready"])))
          .limit(1)
      : [];
    if (fullExportLeft) continue;
    await db.batch([
      db.delete(workloadUsage).where(inArray(workloadUsage.workloadId, serverIds)),
      db.delete(upkeepRuns).where(inArray(upkeepRuns.serverId, serverIds)),
      db.delete(workloads).where(inArray(workloads.id, serverIds)),
      db.delete(jobs).where(inArray(jobs.serverId, serverIds)),
      db.delete(certificates).where(
        inArray(
          certificates.serverName,
          mine.map((server) => servedHostOf(ctx.config, server.name)),
        ),
      ),
      db.delete(backupKeys).where(inArray(backupKeys.serverId, serverIds)),
      // A legal export's job names no server (worker/fleet/jobs.ts): found through its export.
      db.delete(jobs).where(inArray(jobs.id, db.select({ id: legalExports.jobId }).from(legalExports).where(inArray(legalExports.serverId, serverIds)))),
      db.delete(legalExports).where(inArray(legalExports.serverId, serverIds)),
      db.delete(serverExports).where(inArray(serverExports.serverId, serverIds)),
      // Its parts cascade; an import that was not made was deleted from R2 with its server.
      db.delete(serverImports).where(inArray(serverImports.serverId, serverIds)),
      db.delete(servers).where(inArray(servers.id, serverIds)),
      // Cascades to the entitlement and anything else still keyed by the account.
      db.delete(users).where(eq(users.id, id)),
    ]);
    purged++;
  }
  return purged;
}
