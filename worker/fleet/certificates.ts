import { and, asc, eq, notInArray } from "drizzle-orm";
import type { CertificateReport } from "../../protocol/messages";
import { audit } from "../audit/audit";
import type { Database } from "../db/client";
import { certificates } from "../db/schema";

export type Certificate = typeof certificates.$inferSelect;

const DAY = 24 * 60 * 60 * 1000;
/** A certificate this close to expiry means automatic renewal is failing: operators are alerted. */
export const CERTIFICATE_ALERT_WINDOW_MS = 14 * DAY;

/**
 * Caddy renews with a third of a certificate's lifetime left, so an alert is
 * due once less than that remains, and at the latest 14 days before expiry: a
 * 90-day ACME certificate alerts at 14 days, a 12-hour local-CA one at 4 hours.
 */
export function alertWindowMs(report: Pick<CertificateReport, "notBefore" | "notAfter">): number {
  if (!report.notBefore) return CERTIFICATE_ALERT_WINDOW_MS;
  return Math.min(CERTIFICATE_ALERT_WINDOW_MS, (report.notAfter - report.notBefore) / 3);
}

/**
 * Stores what a host's proxy serves (forgetting names it no longer serves) and
 * raises an operator alert — an audit entry and a warning log line, at most
 * daily per certificate — for any that expires within the alert window.
 */
export async function recordCertificates(db: Database, hostId: string, reports: CertificateReport[], now: Date): Promise<number> {
  const names = reports.map((report) => report.serverName);
  await db.delete(certificates).where(and(eq(certificates.hostId, hostId), names.length ? notInArray(certificates.serverName, names) : undefined));
  let alerts = 0;
  for (const report of reports) {
    const notAfter = new Date(report.notAfter);
    const [previous] = await db
      .select()
      .from(certificates)
      .where(and(eq(certificates.hostId, hostId), eq(certificates.serverName, report.serverName)));
    const expiring = notAfter.getTime() - now.getTime() < alertWindowMs(report);
    const alertDue = expiring && (!previous?.alertedAt || now.getTime() - previous.alertedAt.getTime() >= DAY);
    const alertedAt = alertDue ? now : (previous?.alertedAt ?? null);
    const notBefore = report.notBefore ? new Date(report.notBefore) : null;
    await db
      .insert(certificates)
      .values({ hostId, serverName: report.serverName, notBefore, notAfter, issuer: report.issuer, updatedAt: now, alertedAt })
      .onConflictDoUpdate({
        target: [certificates.hostId, certificates.serverName],
        set: { notBefore, notAfter, issuer: report.issuer, updatedAt: now, alertedAt },
      });
    if (alertDue) {
      alerts++;
      console.warn(JSON.stringify({ event: "certificate_expiring", hostId, serverName: report.serverName, notAfter: notAfter.toISOString() }));
      await audit(db, now, `host:${hostId}`, "certificate.expiring", report.serverName, { notAfter: notAfter.toISOString(), issuer: report.issuer });
    }
  }
  return alerts;
}

/** The certificates hosts serve (one host's, given its id), the nearest expiry first. */
export async function listCertificates(db: Database, hostId?: string) {
  return db
    .select()
    .from(certificates)
    .where(hostId === undefined ? undefined : eq(certificates.hostId, hostId))
    .orderBy(asc(certificates.notAfter));
}

/** Whether a stored certificate is within its alert window now: its renewal is failing. */
export function expiringSoon(row: Certificate, now: Date): boolean {
  return row.notAfter.getTime() - now.getTime() < alertWindowMs({ notBefore: row.notBefore?.getTime(), notAfter: row.notAfter.getTime() });
}
