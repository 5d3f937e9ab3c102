import { Encrypter } from "age-encryption";
import { and, asc, eq, gte, lt } from "drizzle-orm";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { auditLog, subscriptions, users, workloadUsage, type LegalExport, type LegalExportWorkerRecords, type Server } from "../db/schema";
import { presentInvoice } from "../http/present";
import { invoicesOf } from "../account/visibility";

/** The Worker's file's format: a reader checks it on the first line (as the host's file has its own). */
export const LEGAL_EXPORT_WORKER_FORMAT = 1;

const iso = (date: Date | null) => date?.toISOString() ?? null;

/** A time column within the scope's range (from inclusive, until exclusive), as the host narrows events. */
function inTimeRange(column: typeof workloadUsage.at | typeof auditLog.at, scope: LegalExport["scope"]) {
  return and(
    scope.from === undefined ? undefined : gte(column, new Date(scope.from)),
    scope.until === undefined ? undefined : lt(column, new Date(scope.until)),
  );
}

/**
 * What the Worker holds about the exported homeserver, as JSON lines: the owner's account (email,
 * when it was made and verified: no password hash, sessions or tokens), the billing records we keep
 * (subscriptions and invoices as Stripe reported them: never card data), the server's usage samples
 * and the audit entries about the server, both within the scope's time range. Matrix users and
 * rooms in the scope do not narrow it: the Worker knows the account, not who is on the homeserver.
 */
export async function workerRecordLines(db: Database, exported: LegalExport, server: Server, now: Date) {
  const [[owner], subscriptionRows, invoiceRows, usageRows, auditRows] = await Promise.all([
    db.select().from(users).where(eq(users.id, server.userId)),
    db.select().from(subscriptions).where(eq(subscriptions.userId, server.userId)).orderBy(asc(subscriptions.createdAt)),
    invoicesOf(db, server.userId),
    db
      .select()
      .from(workloadUsage)
      .where(and(eq(workloadUsage.workloadId, server.id), inTimeRange(workloadUsage.at, exported.scope)))
      .orderBy(asc(workloadUsage.at)),
    db
      .select()
      .from(auditLog)
      .where(and(eq(auditLog.target, server.id), inTimeRange(auditLog.at, exported.scope)))
      .orderBy(asc(auditLog.id)),
  ]);
  const records: LegalExportWorkerRecords = {
    accounts: owner ? 1 : 0,
    subscriptions: subscriptionRows.length,
    invoices: invoiceRows.length,
    usageSamples: usageRows.length,
    auditEntries: auditRows.length,
  };
  const lines = [
    {
      record: "export",
      format: LEGAL_EXPORT_WORKER_FORMAT,
      part: "worker",
      exportId: exported.id,
      reference: exported.reference,
      server: { id: server.id, name: server.name, createdAt: server.createdAt.toISOString() },
      scope: exported.scope,
      createdAt: now.toISOString(),
    },
    ...(owner
      ? [
          {
            record: "account",
            userId: owner.id,
            email: owner.email,
            emailVerifiedAt: iso(owner.emailVerifiedAt),
            createdAt: owner.createdAt.toISOString(),
            deletedAt: iso(owner.deletedAt),
          },
        ]
      : []),
    ...subscriptionRows.map((row) => ({
      record: "subscription",
      id: row.id,
      planId: row.planId,
      status: row.status,
      currentPeriodEnd: iso(row.currentPeriodEnd),
      cancelAtPeriodEnd: row.cancelAtPeriodEnd,
      canceledAt: iso(row.canceledAt),
      createdAt: row.createdAt.toISOString(),
    })),
    ...invoiceRows.map((row) => ({ record: "invoice", ...presentInvoice(row) })),
    ...usageRows.map((row) => ({
      record: "usage",
      resolution: row.resolution,
      at: row.at.toISOString(),
      cpuPercent: row.cpuPercent,
      memoryBytes: row.memoryBytes,
      memoryLimitBytes: row.memoryLimitBytes,
      networkRxBytes: row.networkRxBytes,
      networkTxBytes: row.networkTxBytes,
      blockReadBytes: row.blockReadBytes,
      blockWriteBytes: row.blockWriteBytes,
      pids: row.pids,
      storageBytes: row.storageBytes,
    })),
    ...auditRows.map((row) => ({ record: "audit", at: row.at.toISOString(), actor: row.actor, action: row.action, detail: row.detail })),
    { record: "end", records },
  ];
  return { text: lines.map((line) => `${JSON.stringify(line)}\n`).join(""), records };
}

/** The Worker's file, encrypted to the operator's recipient (as the host encrypts its own). */
export async function encryptWorkerRecords(ctx: WorkContext, exported: LegalExport, server: Server) {
  const { text, records } = await workerRecordLines(ctx.db, exported, server, ctx.now);
  const encrypter = new Encrypter();
  encrypter.addRecipient(exported.recipient);
  return { ciphertext: await encrypter.encrypt(text), records };
}
