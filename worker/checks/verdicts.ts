import { and, asc, count, desc, eq, is } from "drizzle-orm";
import { getTableConfig, SQLiteTable } from "drizzle-orm/sqlite-core";
import { dailyBackupHour } from "../backups/maintenance";
import { BACKUP_LATE_AFTER_MS, BACKUP_RETENTION_MS } from "../backups/policy";
import type { Database } from "../db/client";
import * as schema from "../db/schema";
import { backups, billingCustomers, invoices, subscriptions, type Server } from "../db/schema";
import type { CheckEvidence, CheckResultKind } from "./registry";

// The checks the Worker decides from what D1 holds: backups (per homeserver) and card data (per account).

const HOUR = 60 * 60_000;
const DAY = 24 * HOUR;
/** Retention deletes what passed 30 days on the hourly cron's next pass: a backup may outlive its 30 days by that hour. */
const RETENTION_PASS_MS = HOUR;

export interface Verdict {
  result: CheckResultKind;
  evidence: CheckEvidence;
}

const minute = (at: Date) => `${at.toISOString().slice(0, 16).replace("T", " ")} UTC`;

/** An age in words: hours under three days, days after. */
function age(ms: number): string {
  return ms < 3 * DAY ? `${Math.floor(ms / HOUR)} hours` : `${Math.floor(ms / DAY)} days`;
}

/** The next start of a homeserver's daily backup hour after `now`. */
function nextBackupAt(serverId: string, now: Date): Date {
  const next = new Date(now);
  next.setUTCHours(dailyBackupHour(serverId), 0, 0, 0);
  return next > now ? next : new Date(next.getTime() + DAY);
}

/**
 * Backups: the newest successful backup less than 26 hours old (a daily one missed, with two
 * hours' slack) and the oldest kept within 30 days. A homeserver younger than that with no
 * backup yet is not checked: its first is still to come.
 */
export async function backupsVerdict(db: Database, server: Server, now: Date): Promise<Verdict> {
  const kept = await db
    .select({ createdAt: backups.createdAt, completedAt: backups.completedAt })
    .from(backups)
    .where(and(eq(backups.serverId, server.id), eq(backups.status, "succeeded")))
    .orderBy(asc(backups.createdAt));
  const takenAt = (backup: (typeof kept)[number]) => backup.completedAt ?? backup.createdAt;
  const newest = kept.at(-1);
  const oldest = kept[0];
  const schedule = { label: "Daily backup", value: `at ${String(dailyBackupHour(server.id)).padStart(2, "0")}:00 UTC` };
  if (!newest || !oldest) {
    const sinceCreated = now.getTime() - server.createdAt.getTime();
    if (sinceCreated < BACKUP_LATE_AFTER_MS) {
      return {
        result: "could_not_check",
        evidence: { summary: `No backup yet; the first is taken on ${minute(nextBackupAt(server.id, now))}.`, facts: [schedule] },
      };
    }
    return { result: "fails", evidence: { summary: `No backup has succeeded in the ${age(sinceCreated)} since the homeserver was made.`, facts: [schedule] } };
  }
  const newestAge = now.getTime() - takenAt(newest).getTime();
  const oldestAge = now.getTime() - oldest.createdAt.getTime();
  const facts = [
    { label: "Last successful backup", value: `${minute(takenAt(newest))} (${age(newestAge)} ago)` },
    { label: "Oldest backup kept", value: `${minute(oldest.createdAt)} (${age(oldestAge)} ago)` },
    { label: "Backups kept", value: String(kept.length) },
    schedule,
  ];
  if (newestAge >= BACKUP_LATE_AFTER_MS) {
    return { result: "fails", evidence: { summary: `The last successful backup is ${age(newestAge)} old: a daily backup was missed.`, facts } };
  }
  if (oldestAge > BACKUP_RETENTION_MS + RETENTION_PASS_MS) {
    return { result: "fails", evidence: { summary: `The oldest backup kept is ${age(oldestAge)} old: we keep them 30 days.`, facts } };
  }
  return { result: "holds", evidence: { summary: `The last successful backup is ${age(newestAge)} old, and none kept is older than 30 days.`, facts } };
}

/** A column whose name says it holds card data: a number (PAN), brand, last four digits, expiry or security code. */
const CARD_COLUMN = /(^|_)(card|pan|brand|last_?4|last_?four|exp_?month|exp_?year|expiry|cvc|cvv)(_|$)/i;

/** Every column of our tables ("table.column") that would hold card data: none may exist. */
export function cardDataColumns(tables: readonly unknown[] = Object.values(schema)): string[] {
  return tables
    .filter((table): table is SQLiteTable => is(table, SQLiteTable))
    .flatMap((table) => {
      const config = getTableConfig(table);
      return config.columns.filter((column) => CARD_COLUMN.test(column.name)).map((column) => `${config.name}.${column.name}`);
    });
}

/** Card data: what the account holds about payments (Stripe's ids, invoices), and that no table has a place for a card. */
export async function cardDataVerdict(db: Database, userId: string): Promise<Verdict> {
  const [[customer], subscriptionRows, [invoiceCount]] = await Promise.all([
    db.select({ id: billingCustomers.stripeCustomerId }).from(billingCustomers).where(eq(billingCustomers.userId, userId)),
    db.select({ id: subscriptions.id }).from(subscriptions).where(eq(subscriptions.userId, userId)).orderBy(desc(subscriptions.createdAt)),
    db.select({ n: count() }).from(invoices).where(eq(invoices.userId, userId)),
  ]);
  const facts = [
    { label: "Stripe customer id", value: customer?.id ?? "none" },
    { label: "Stripe subscription ids", value: subscriptionRows.map((row) => row.id).join(", ") || "none" },
    { label: "Invoices (number, status, amounts, period, Stripe's links)", value: String(invoiceCount?.n ?? 0) },
  ];
  const cardColumns = cardDataColumns();
  if (cardColumns.length > 0) {
    return {
      result: "fails",
      evidence: {
        summary: `Our database has a place for card data: ${cardColumns.join(", ")}.`,
        facts: [...facts, { label: "Card columns", value: cardColumns.join(", ") }],
      },
    };
  }
  return { result: "holds", evidence: { summary: "We hold only Stripe's ids and your invoices: no card number, brand, expiry or last four digits.", facts } };
}
