import { and, count, desc, eq, gt } from "drizzle-orm";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { invoices, servers, sessions, subscriptions, users, workloadUsage, type Server } from "../db/schema";
import { effectiveSubscription } from "../billing/entitlement";
import { notFound } from "../errors";
import { matrixServerNameOf } from "../servers/servers";

export const E2EE_STATEMENT = "We cannot see the contents of end-to-end-encrypted rooms.";

/**
 * What the control plane holds about one customer, per category of the
 * security page ("what we can see"), summarised for the account page. The
 * full rows are in the data export (worker/account/export.ts); both read the
 * same tables, listed field by field in docs/data-export.md.
 */
export interface WhatWeCanSee {
  account: {
    email: string;
    emailVerified: boolean;
    createdAt: string;
    /** Logged-in sessions that have not expired. */
    activeSessions: number;
  };
  billing: {
    /** Stripe's subscription status, or "none". */
    subscriptionStatus: string;
    plan: string | null;
    currentPeriodEnd: string | null;
    invoiceCount: number;
    invoices: { number: string | null; status: string; amountDue: number; amountPaid: number; currency: string; createdAt: string }[];
  };
  usage: {
    serverId: string;
    serverName: string;
    /** Stored samples at every resolution (raw, 5-minute, hourly). */
    sampleCount: number;
    latest: { at: string; cpuPercent: number; memoryBytes: number; networkRxBytes: number; networkTxBytes: number } | null;
  }[];
  matrixMetadata: {
    serverId: string;
    name: string;
    serverName: string;
    region: string;
    status: string;
    synapseVersion: string | null;
    adminUserId: string | null;
    createdAt: string;
  }[];
  /** Always E2EE_STATEMENT: what no category includes. */
  cannotSee: string;
}

/** The customer's account row, or a 404 once it is deleted. */
export async function liveUser(db: Database, userId: string) {
  const [user] = await db.select().from(users).where(eq(users.id, userId));
  if (!user || user.deletedAt) throw notFound("No such account.");
  return user;
}

/** Every homeserver of the customer's that D1 still holds, deleted ones included (their backups are kept). */
export async function serversOf(db: Database, userId: string): Promise<Server[]> {
  return db.select().from(servers).where(eq(servers.userId, userId)).orderBy(desc(servers.createdAt));
}

/** Invoices still attached to the account, newest first. */
export async function invoicesOf(db: Database, userId: string) {
  return db.select().from(invoices).where(eq(invoices.userId, userId)).orderBy(desc(invoices.createdAt));
}

export async function whatWeCanSee(ctx: WorkContext, userId: string): Promise<WhatWeCanSee> {
  const { db, config, now } = ctx;
  const user = await liveUser(db, userId);
  const [[sessionCount], subscriptionRows, invoiceRows, serverRows] = await Promise.all([
    db
      .select({ n: count() })
      .from(sessions)
      .where(and(eq(sessions.userId, userId), gt(sessions.expiresAt, now))),
    db.select().from(subscriptions).where(eq(subscriptions.userId, userId)),
    invoicesOf(db, userId),
    serversOf(db, userId),
  ]);
  const shown = serverRows.filter((server) => server.status !== "deleted");
  const subscription = effectiveSubscription(subscriptionRows);
  return {
    account: {
      email: user.email,
      emailVerified: user.emailVerifiedAt !== null,
      createdAt: user.createdAt.toISOString(),
      activeSessions: sessionCount?.n ?? 0,
    },
    billing: {
      subscriptionStatus: subscription?.status ?? "none",
      plan: subscription?.planId ?? null,
      currentPeriodEnd: subscription?.currentPeriodEnd?.toISOString() ?? null,
      invoiceCount: invoiceRows.length,
      invoices: invoiceRows.map((invoice) => ({
        number: invoice.number,
        status: invoice.status,
        amountDue: invoice.amountDue,
        amountPaid: invoice.amountPaid,
        currency: invoice.currency,
        createdAt: invoice.createdAt.toISOString(),
      })),
    },
    usage: await Promise.all(shown.map((server) => usageSummary(ctx, server))),
    matrixMetadata: shown.map((server) => ({
      serverId: server.id,
      name: server.name,
      serverName: matrixServerNameOf(config, server),
      region: server.region,
      status: server.status,
      synapseVersion: server.synapseVersion,
      adminUserId: server.adminUserId,
      createdAt: server.createdAt.toISOString(),
    })),
    cannotSee: E2EE_STATEMENT,
  };
}

async function usageSummary({ db, config }: WorkContext, server: Server): Promise<WhatWeCanSee["usage"][number]> {
  const [[totals], [latest]] = await Promise.all([
    db.select({ n: count() }).from(workloadUsage).where(eq(workloadUsage.workloadId, server.id)),
    db.select().from(workloadUsage).where(eq(workloadUsage.workloadId, server.id)).orderBy(desc(workloadUsage.at)).limit(1),
  ]);
  return {
    serverId: server.id,
    serverName: matrixServerNameOf(config, server),
    sampleCount: totals?.n ?? 0,
    latest: latest
      ? {
          at: latest.at.toISOString(),
          cpuPercent: latest.cpuPercent,
          memoryBytes: latest.memoryBytes,
          networkRxBytes: latest.networkRxBytes,
          networkTxBytes: latest.networkTxBytes,
        }
      : null,
  };
}
