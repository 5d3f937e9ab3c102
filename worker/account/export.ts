import { and, asc, desc, eq, inArray, ne, or } from "drizzle-orm";
import type { WorkContext } from "../context";
import {
  adminPasswordLinks,
  auditLog,
  backups,
  billingCustomers,
  certificates,
  entitlementEvents,
  entitlements,
  jobs,
  oneTimeTokens,
  serverExports,
  serverImports,
  serverMigrations,
  sessions,
  storageAlerts,
  subscriptions,
  upkeepRuns,
  workloadUsage,
} from "../db/schema";
import { customerFailureText, presentAuditEntryToCustomer, presentBackup, presentInvoice, presentUpkeep } from "../http/present";
import { newestSucceededBackupId } from "../backups/maintenance";
import { checkResultsOf, presentCheckResult } from "../checks/results";
import { settingsOf } from "../servers/settings";
import { matrixServerNameOf, servedHostOf } from "../servers/servers";
import { E2EE_STATEMENT, invoicesOf, liveUser, serversOf } from "./visibility";

const iso = (date: Date | null) => date?.toISOString() ?? null;

/**
 * GET /api/me/export: every row D1 holds about the customer, in the four
 * categories of the security page, each field chosen in docs/data-export.md.
 * Never a secret: no password hash, session or link hashes, keys, card data
 * (Stripe holds cards; we never see them), R2 object names or upload ids; and
 * nothing of our hosts: no host id, none of the agent's own error text.
 */
export async function exportAccountData(ctx: WorkContext, userId: string) {
  const { db, config, now } = ctx;
  const user = await liveUser(db, userId);
  const serverRows = await serversOf(db, userId);
  const serverIds = serverRows.map((server) => server.id);
  const ofServers = <T>(query: (ids: string[]) => Promise<T[]>) => (serverIds.length ? query(serverIds) : Promise.resolve([] as T[]));

  const [sessionRows, linkRows, customer, subscriptionRows, invoiceRows, entitlement, entitlementHistory, auditRows] = await Promise.all([
    db.select().from(sessions).where(eq(sessions.userId, userId)).orderBy(asc(sessions.createdAt)),
    db.select().from(oneTimeTokens).where(eq(oneTimeTokens.userId, userId)).orderBy(asc(oneTimeTokens.createdAt)),
    db.select().from(billingCustomers).where(eq(billingCustomers.userId, userId)),
    db.select().from(subscriptions).where(eq(subscriptions.userId, userId)).orderBy(asc(subscriptions.createdAt)),
    invoicesOf(db, userId),
    db.select().from(entitlements).where(eq(entitlements.userId, userId)),
    db.select().from(entitlementEvents).where(eq(entitlementEvents.userId, userId)).orderBy(asc(entitlementEvents.id)),
    db
      .select()
      .from(auditLog)
      .where(
        and(
          // Nothing an unauthenticated caller caused is the customer's (older rows named whatever such a caller sent).
          ne(auditLog.actor, "anonymous"),
          or(eq(auditLog.actor, `user:${userId}`), eq(auditLog.target, userId), serverIds.length ? inArray(auditLog.target, serverIds) : undefined),
        ),
      )
      .orderBy(asc(auditLog.id)),
  ]);
  const [usageRows, upkeepRows, storageAlertRows, backupRows, jobRows, certificateRows, setupLinkRows, moveRows, exportRows, importRows] = await Promise.all([
    ofServers((ids) => db.select().from(workloadUsage).where(inArray(workloadUsage.workloadId, ids)).orderBy(asc(workloadUsage.at))),
    ofServers((ids) => db.select().from(upkeepRuns).where(inArray(upkeepRuns.serverId, ids)).orderBy(asc(upkeepRuns.finishedAt))),
    ofServers((ids) => db.select().from(storageAlerts).where(inArray(storageAlerts.serverId, ids)).orderBy(asc(storageAlerts.threshold))),
    ofServers((ids) => db.select().from(backups).where(inArray(backups.serverId, ids)).orderBy(desc(backups.createdAt))),
    ofServers((ids) => db.select().from(jobs).where(inArray(jobs.serverId, ids)).orderBy(asc(jobs.createdAt))),
    ofServers(() =>
      db
        .select()
        .from(certificates)
        .where(
          inArray(
            certificates.serverName,
            serverRows.map((server) => servedHostOf(config, server.name)),
          ),
        ),
    ),
    ofServers((ids) => db.select().from(adminPasswordLinks).where(inArray(adminPasswordLinks.serverId, ids))),
    ofServers((ids) => db.select().from(serverMigrations).where(inArray(serverMigrations.serverId, ids)).orderBy(asc(serverMigrations.startedAt))),
    ofServers((ids) => db.select().from(serverExports).where(inArray(serverExports.serverId, ids)).orderBy(asc(serverExports.createdAt))),
    ofServers((ids) => db.select().from(serverImports).where(inArray(serverImports.serverId, ids)).orderBy(asc(serverImports.createdAt))),
  ]);
  const checkRows = await checkResultsOf(db, userId);
  const checksAbout = (serverId: string | null) =>
    checkRows.filter((row) => row.serverId === serverId).map((row) => ({ checkId: row.checkId, ...presentCheckResult(row) }));
  const newestSucceeded = new Map(await Promise.all(serverIds.map(async (id) => [id, await newestSucceededBackupId(db, id)] as const)));

  return {
    exportedAt: now.toISOString(),
    account: {
      id: user.id,
      email: user.email,
      emailVerifiedAt: iso(user.emailVerifiedAt),
      role: user.role,
      createdAt: iso(user.createdAt),
      updatedAt: iso(user.updatedAt),
      sessions: sessionRows.map((session) => ({
        createdAt: iso(session.createdAt),
        lastSeenAt: iso(session.lastSeenAt),
        expiresAt: iso(session.expiresAt),
        absoluteExpiresAt: iso(session.absoluteExpiresAt),
      })),
      emailLinks: linkRows.map((link) => ({
        purpose: link.purpose,
        email: link.email,
        createdAt: iso(link.createdAt),
        expiresAt: iso(link.expiresAt),
        usedAt: iso(link.usedAt),
      })),
      auditLog: auditRows.map((entry) => presentAuditEntryToCustomer(entry, userId, new Set(serverIds))),
      checks: checksAbout(null),
    },
    billing: {
      stripeCustomerId: customer[0]?.stripeCustomerId ?? null,
      subscriptions: subscriptionRows.map((subscription) => ({
        id: subscription.id,
        plan: subscription.planId,
        status: subscription.status,
        currentPeriodEnd: iso(subscription.currentPeriodEnd),
        cancelAtPeriodEnd: subscription.cancelAtPeriodEnd,
        canceledAt: iso(subscription.canceledAt),
        createdAt: iso(subscription.createdAt),
        updatedAt: iso(subscription.updatedAt),
      })),
      invoices: invoiceRows.map((invoice) => ({ ...presentInvoice(invoice), subscriptionId: invoice.subscriptionId, updatedAt: iso(invoice.updatedAt) })),
      entitlement: entitlement[0] ? { state: entitlement[0].state, since: iso(entitlement[0].since), until: iso(entitlement[0].until) } : null,
      entitlementHistory: entitlementHistory.map((event) => ({
        from: event.fromState,
        to: event.toState,
        reason: event.reason,
        at: iso(event.createdAt),
      })),
    },
    usage: serverRows.map((server) => ({
      serverId: server.id,
      samples: usageRows
        .filter((row) => row.workloadId === server.id)
        .map(({ workloadId: _workload, hostId: _host, at, ...metrics }) => ({ at: iso(at), ...metrics })),
      upkeep: upkeepRows.filter((row) => row.serverId === server.id).map(presentUpkeep),
      storageAlerts: storageAlertRows
        .filter((row) => row.serverId === server.id)
        .map(({ serverId: _server, crossedAt, notifiedAt, ...figures }) => ({ ...figures, crossedAt: iso(crossedAt), notifiedAt: iso(notifiedAt) })),
    })),
    matrixMetadata: {
      servers: serverRows.map((server) => ({
        id: server.id,
        name: server.name,
        serverName: matrixServerNameOf(config, server),
        region: server.region,
        plan: server.planId,
        status: server.status,
        statusReason: server.statusReason,
        synapseVersion: server.synapseVersion,
        adminUserId: server.adminUserId,
        settings: settingsOf(server),
        createdAt: iso(server.createdAt),
        updatedAt: iso(server.updatedAt),
        certificate:
          certificateRows
            .filter((row) => row.serverName === servedHostOf(config, server.name))
            .map((row) => ({ notBefore: iso(row.notBefore), notAfter: iso(row.notAfter), issuer: row.issuer, updatedAt: iso(row.updatedAt) }))[0] ?? null,
        adminSetupLinks: setupLinkRows
          .filter((row) => row.serverId === server.id)
          .map((row) => ({ userId: row.userId, createdAt: iso(row.createdAt), expiresAt: iso(row.expiresAt), usedAt: iso(row.usedAt) })),
        operations: jobRows
          .filter((job) => job.serverId === server.id)
          .map((job) => ({
            kind: job.kind,
            status: job.status,
            error: customerFailureText(job.error),
            createdAt: iso(job.createdAt),
            finishedAt: iso(job.finishedAt),
          })),
        backups: backupRows.filter((backup) => backup.serverId === server.id).map((backup) => presentBackup(backup, newestSucceeded.get(server.id), now)),
        checks: checksAbout(server.id),
        moves: moveRows
          .filter((move) => move.serverId === server.id)
          .map((move) => ({
            startedAt: iso(move.startedAt),
            finishedAt: iso(move.finishedAt),
            outcome: move.phase === "succeeded" ? "moved" : move.phase === "failed" ? "stayed" : "under way",
            downtimeMs: move.downtimeMs,
          })),
        exports: exportRows
          .filter((row) => row.serverId === server.id)
          .map((row) => ({
            id: row.id,
            status: row.status,
            sizeBytes: row.sizeBytes,
            error: customerFailureText(row.error),
            createdAt: iso(row.createdAt),
            readyAt: iso(row.readyAt),
            expiresAt: iso(row.expiresAt),
          })),
        imports: importRows
          .filter((row) => row.serverId === server.id)
          .map((row) => ({
            id: row.id,
            status: row.status,
            sizeBytes: row.sizeBytes,
            counts: row.counts,
            error: row.error,
            createdAt: iso(row.createdAt),
            uploadedAt: iso(row.uploadedAt),
            finishedAt: iso(row.finishedAt),
          })),
      })),
    },
    cannotSee: E2EE_STATEMENT,
  };
}

export type AccountExport = Awaited<ReturnType<typeof exportAccountData>>;
