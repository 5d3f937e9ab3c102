import { and, desc, eq, gte, or, sql } from "drizzle-orm";
import type { WorkerConfig } from "../config";
import type { Database } from "../db/client";
import { auditLog, jobs, legalExports, servers, users, type JobStatus, type LegalExport } from "../db/schema";
import { matrixServerNameOf } from "../servers/servers";

// What the operators' legal-export pages read: exports with their server, operator and job, one
// export's audit trail, and the homeserver an operator names in the form.

/** How many exports the list shows, newest first. */
export const LEGAL_EXPORTS_LISTED = 200;

export interface LegalExportListing {
  export: LegalExport;
  /** The homeserver's Matrix server name. */
  serverName: string;
  operatorEmail: string | null;
  /** The status of the job that makes it; null once the job is pruned. */
  jobStatus: JobStatus | null;
}

function listingQuery(db: Database, config: WorkerConfig) {
  return db
    .select({
      export: legalExports,
      serverName: sql<string>`coalesce(${servers.serverName}, ${servers.name} || '.' || ${config.homeservers.domain})`,
      operatorEmail: users.email,
      jobStatus: jobs.status,
    })
    .from(legalExports)
    .innerJoin(servers, eq(servers.id, legalExports.serverId))
    .leftJoin(users, eq(users.id, legalExports.operatorId))
    .leftJoin(jobs, eq(jobs.id, legalExports.jobId));
}

export async function listLegalExports(db: Database, config: WorkerConfig): Promise<LegalExportListing[]> {
  return listingQuery(db, config).orderBy(desc(legalExports.createdAt), desc(legalExports.id)).limit(LEGAL_EXPORTS_LISTED);
}

export async function findLegalExport(db: Database, config: WorkerConfig, id: string): Promise<LegalExportListing | undefined> {
  const [row] = await listingQuery(db, config).where(eq(legalExports.id, id));
  return row;
}

export interface AuditTrailEntry {
  at: Date;
  actor: string;
  /** The actor's email address when the actor is a user who still has one. */
  actorEmail: string | null;
  action: string;
  target: string | null;
  detail: unknown;
}

/** Every audit entry that names the export (`detail.exportId`), oldest first; none can predate the request. */
export async function legalExportAuditTrail(db: Database, row: LegalExport): Promise<AuditTrailEntry[]> {
  return db
    .select({
      at: auditLog.at,
      actor: auditLog.actor,
      actorEmail: users.email,
      action: auditLog.action,
      target: auditLog.target,
      detail: auditLog.detail,
    })
    .from(auditLog)
    .leftJoin(users, eq(auditLog.actor, sql`'user:' || ${users.id}`))
    .where(and(gte(auditLog.at, row.createdAt), sql`json_extract(${auditLog.detail}, '$.exportId') = ${row.id}`))
    .orderBy(auditLog.id);
}

export interface NamedServer {
  id: string;
  serverName: string;
  ownerEmail: string;
}

/**
 * The homeserver an operator names by its id, its name, its served host or its Matrix server name (a
 * customer's own domain included); deleted ones included (the export refuses them).
 */
export async function findServerByIdOrName(db: Database, config: WorkerConfig, text: string): Promise<NamedServer | undefined> {
  const suffix = `.${config.homeservers.domain}`;
  const name = text.endsWith(suffix) ? text.slice(0, -suffix.length) : text;
  const [row] = await db
    .select({ id: servers.id, name: servers.name, serverName: servers.serverName, ownerEmail: users.email })
    .from(servers)
    .innerJoin(users, eq(users.id, servers.userId))
    .where(or(eq(servers.id, text), eq(servers.name, name), eq(servers.serverName, text)));
  return row && { id: row.id, serverName: matrixServerNameOf(config, row), ownerEmail: row.ownerEmail };
}
