import { and, desc, eq, gte, inArray, isNotNull, isNull, ne, sql } from "drizzle-orm";
import { audit } from "../audit/audit";
import { consumeRateLimits } from "../auth/rate-limit";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { STORAGE_ALERT_THRESHOLDS, servers, storageAlerts, users, workloadUsage, type StorageAlert } from "../db/schema";
import { ApiError } from "../errors";
import { USAGE_RETENTION } from "../fleet/usage";
import { mailerFor } from "../mail/mailer";
import { templates } from "../mail/templates";
import { matrixServerNameOf } from "./servers";

const MINUTE = 60_000;
/** Only figures this recent raise or clear an alert: a silent host says nothing about its servers' storage now. */
const ALERT_FIGURES_FRESH_MS = 10 * MINUTE;
/** An alert clears once usage is this far below its threshold, so usage hovering at a threshold does not mail at each crossing. */
export const STORAGE_ALERT_CLEAR_MARGIN = 0.05;

/** A homeserver's storage quota as its host last reported it. */
export interface QuotaFigures {
  serverId: string;
  at: Date;
  usedBytes: number;
  quotaBytes: number;
}

/**
 * The newest quota figures of each live server reported since `since` (a few minutes: the minutely
 * check reads every server's, by the index on resolution and time). Raw samples only: an average
 * would hide the crossing. The figures passed the protocol's bounds (a quota of at least 1 MiB,
 * usage within it), so the share used is always in [0, 1].
 */
export async function latestQuotaFigures(db: Database, since: Date): Promise<QuotaFigures[]> {
  // SQLite gives the other columns of the row where max() found its value.
  const rows = await db
    .select({
      serverId: workloadUsage.workloadId,
      at: sql<number>`max(${workloadUsage.at})`,
      usedBytes: workloadUsage.quotaUsedBytes,
      quotaBytes: workloadUsage.quotaBytes,
    })
    .from(workloadUsage)
    .innerJoin(servers, eq(servers.id, workloadUsage.workloadId))
    .where(and(eq(workloadUsage.resolution, "raw"), gte(workloadUsage.at, since), isNotNull(workloadUsage.quotaBytes), ne(servers.status, "deleted")))
    .groupBy(workloadUsage.workloadId);
  return rows.map((row) => ({ serverId: row.serverId, at: new Date(row.at), usedBytes: row.usedBytes ?? 0, quotaBytes: row.quotaBytes ?? 0 }));
}

/** One server's newest quota figures (within the raw samples' 48 hours), or nothing. */
export async function latestQuota(db: Database, serverId: string, now: Date): Promise<QuotaFigures | undefined> {
  const [row] = await db
    .select({ at: workloadUsage.at, usedBytes: workloadUsage.quotaUsedBytes, quotaBytes: workloadUsage.quotaBytes })
    .from(workloadUsage)
    .where(
      and(
        eq(workloadUsage.workloadId, serverId),
        eq(workloadUsage.resolution, "raw"),
        gte(workloadUsage.at, new Date(now.getTime() - USAGE_RETENTION.raw.keepMs)),
        isNotNull(workloadUsage.quotaBytes),
      ),
    )
    .orderBy(desc(workloadUsage.at))
    .limit(1);
  return row && { serverId, at: row.at, usedBytes: row.usedBytes ?? 0, quotaBytes: row.quotaBytes ?? 0 };
}

/**
 * Compares each homeserver's newest quota figures with the thresholds (the cron, every minute):
 * a threshold newly crossed is recorded and audited, and mailed once to the owner and the operators
 * (one mail naming the highest when a sample crosses both); an alert whose usage fell below its
 * threshold less the margin is deleted, so a later crossing mails again. Mail per server is
 * rate-limited, so a host reporting figures that swing back and forth cannot flood anyone's inbox.
 * Returns the number of mails sent.
 */
export async function checkStorageAlerts(ctx: WorkContext): Promise<number> {
  const { db, now } = ctx;
  const figures = await latestQuotaFigures(db, new Date(now.getTime() - ALERT_FIGURES_FRESH_MS));
  if (figures.length === 0) return 0;
  // Only servers past a threshold have rows: few.
  const existing = await db.select().from(storageAlerts);
  let mailed = 0;
  for (const figure of figures) {
    const share = figure.usedBytes / figure.quotaBytes;
    const mine = existing.filter((alert) => alert.serverId === figure.serverId);
    for (const alert of mine) {
      if (share >= alert.threshold - STORAGE_ALERT_CLEAR_MARGIN) continue;
      await db.delete(storageAlerts).where(and(eq(storageAlerts.serverId, alert.serverId), eq(storageAlerts.threshold, alert.threshold)));
      await audit(db, now, "system", "storage.alert_cleared", figure.serverId, { threshold: alert.threshold });
    }
    const crossed = STORAGE_ALERT_THRESHOLDS.filter((threshold) => share >= threshold && !mine.some((alert) => alert.threshold === threshold));
    let recorded: { threshold: number }[] = [];
    if (crossed.length > 0) {
      recorded = await db
        .insert(storageAlerts)
        .values(
          crossed.map((threshold) => ({ serverId: figure.serverId, threshold, crossedAt: now, usedBytes: figure.usedBytes, quotaBytes: figure.quotaBytes })),
        )
        .onConflictDoNothing()
        .returning({ threshold: storageAlerts.threshold });
      for (const alert of recorded) await audit(db, now, "system", "storage.threshold_crossed", figure.serverId, { threshold: alert.threshold });
    }
    // Most servers have nothing to mail: no query for them.
    const unmailed = recorded.length > 0 || mine.some((alert) => alert.notifiedAt === null && share >= alert.threshold - STORAGE_ALERT_CLEAR_MARGIN);
    if (unmailed && (await notifyStorageAlerts(ctx, figure))) mailed++;
  }
  return mailed;
}

/**
 * Mails the server's alerts not yet mailed (those just crossed, or left by a send that failed),
 * claimed first so that no other run mails them too; a failed send gives them back for the next run.
 */
async function notifyStorageAlerts(ctx: WorkContext, figure: QuotaFigures): Promise<boolean> {
  const { db, now } = ctx;
  const claimed = await db
    .update(storageAlerts)
    .set({ notifiedAt: now })
    .where(and(eq(storageAlerts.serverId, figure.serverId), isNull(storageAlerts.notifiedAt)))
    .returning();
  if (claimed.length === 0) return false;
  const release = () =>
    db
      .update(storageAlerts)
      .set({ notifiedAt: null })
      .where(
        and(
          eq(storageAlerts.serverId, figure.serverId),
          inArray(
            storageAlerts.threshold,
            claimed.map((alert) => alert.threshold),
          ),
        ),
      );
  try {
    await consumeRateLimits(db, ctx.config.rateLimits, [{ name: "storage_alert_mail_server", subject: figure.serverId }], now);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 429)) throw error;
    // Recorded and shown on the dashboard; mailed once the window lets it through, if still crossed.
    console.warn(JSON.stringify({ event: "storage_alert_mail_limited", serverId: figure.serverId }));
    await release();
    return false;
  }
  const highest = Math.max(...claimed.map((alert) => alert.threshold));
  const [server] = await db
    .select({ id: servers.id, name: servers.name, serverName: servers.serverName, hostId: servers.hostId, email: users.email })
    .from(servers)
    .innerJoin(users, eq(users.id, servers.userId))
    .where(eq(servers.id, figure.serverId));
  const operators = await db
    .select({ email: users.email })
    .from(users)
    .where(and(eq(users.role, "operator"), isNotNull(users.emailVerifiedAt), isNull(users.deletedAt)));
  const serverName = matrixServerNameOf(ctx.config, server!);
  const facts = { threshold: highest, usedBytes: figure.usedBytes, quotaBytes: figure.quotaBytes };
  try {
    const mailer = mailerFor(ctx);
    await mailer.send(
      templates.storageThreshold(server!.email, { ...facts, serverName, link: new URL(`/servers/${server!.id}`, ctx.config.publicOrigin).toString() }),
    );
    for (const operator of operators) {
      await mailer.send(templates.storageThresholdOperator(operator.email, { ...facts, serverName, serverId: server!.id, hostId: server!.hostId }));
    }
  } catch (error) {
    console.error(JSON.stringify({ event: "storage_alert_mail_failed", serverId: figure.serverId, error: error instanceof Error ? error.name : "unknown" }));
    await release();
    return false;
  }
  return true;
}

export interface StandingStorageAlert extends StorageAlert {
  name: string;
  hostId: string | null;
  /** The newest figures reported (within the raw samples' 48 hours), or null. */
  current: QuotaFigures | null;
}

/** The alerts standing now, for operators: every live server's storage past a threshold, the fullest first. */
export async function currentStorageAlerts(db: Database, now: Date): Promise<StandingStorageAlert[]> {
  const rows = await db
    .select({ alert: storageAlerts, hostId: servers.hostId, name: servers.name })
    .from(storageAlerts)
    .innerJoin(servers, eq(servers.id, storageAlerts.serverId))
    .where(ne(servers.status, "deleted"));
  const current = new Map<string, QuotaFigures | undefined>();
  for (const serverId of new Set(rows.map((row) => row.alert.serverId))) current.set(serverId, await latestQuota(db, serverId, now));
  const share = (alert: StandingStorageAlert) => (alert.current ?? alert).usedBytes / (alert.current ?? alert).quotaBytes;
  return rows
    .map((row) => ({ ...row.alert, hostId: row.hostId, name: row.name, current: current.get(row.alert.serverId) ?? null }))
    .sort((a, b) => share(b) - share(a) || b.threshold - a.threshold);
}
