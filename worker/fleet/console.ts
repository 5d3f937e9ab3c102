import { and, asc, desc, eq, inArray, ne, or } from "drizzle-orm";
import { readAudit, type AuditQuery } from "../audit/audit";
import { normalizeEmail } from "../auth/credentials";
import type { Plan } from "../billing/plans";
import type { WorkerConfig } from "../config";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { hosts, jobs, serverMigrations, servers, users, type Host, type Job, type Server, type ServerMigration } from "../db/schema";
import { listMigrations } from "../servers/migration";
import { capacityOf, roomOn, type HostRoom } from "../servers/placement";
import { expiringSoon, listCertificates, type Certificate } from "./certificates";
import { drainProgress, latestDrain } from "./drains";
import { listHosts, requireHost } from "./hosts";

// What the operator console's pages read: each host with its room and certificates, one host's
// homeservers and jobs, and the audit log with its actors' names.

/** How many of a host's jobs its page shows, newest first. */
export const HOST_JOBS_SHOWN = 30;

export interface HostOverview {
  host: Host;
  /** What the host gives homeservers, per resource (memory less the system's reserve, CPUs overcommitted). */
  capacity: Plan["resources"];
  room: HostRoom;
  homeservers: number;
  certificates: { count: number; nextExpiry: Date | null; expiringSoon: number };
}

async function overviewOf(db: Database, host: Host, certificates: Certificate[], now: Date): Promise<HostOverview> {
  const live = await db
    .select({ id: servers.id })
    .from(servers)
    .where(and(eq(servers.hostId, host.id), ne(servers.status, "deleted")));
  return {
    host,
    capacity: capacityOf(host),
    room: await roomOn(db, host, now),
    homeservers: live.length,
    certificates: {
      count: certificates.length,
      nextExpiry: certificates[0]?.notAfter ?? null,
      expiringSoon: certificates.filter((row) => expiringSoon(row, now)).length,
    },
  };
}

/** Every host, the newest enrolled first. */
export async function hostOverviews(db: Database, now: Date): Promise<HostOverview[]> {
  const [all, certificates] = await Promise.all([listHosts(db), listCertificates(db)]);
  return Promise.all(
    all.map((host) =>
      overviewOf(
        db,
        host,
        certificates.filter((row) => row.hostId === host.id),
        now,
      ),
    ),
  );
}

export interface HostHomeserver {
  server: Server;
  /** Its Matrix server name. */
  serverName: string;
}

export interface HostDetail {
  overview: HostOverview;
  homeservers: HostHomeserver[];
  jobs: Job[];
  certificates: Certificate[];
}

/** One host with its live homeservers, its newest jobs and the certificates its proxy serves; 404 for no such host. */
export async function hostDetail(db: Database, config: WorkerConfig, hostId: string, now: Date): Promise<HostDetail> {
  const host = await requireHost(db, hostId);
  const [certificates, homeservers, recentJobs] = await Promise.all([
    listCertificates(db, host.id),
    db
      .select()
      .from(servers)
      .where(and(eq(servers.hostId, host.id), ne(servers.status, "deleted")))
      .orderBy(servers.name),
    db.select().from(jobs).where(eq(jobs.hostId, host.id)).orderBy(desc(jobs.createdAt)).limit(HOST_JOBS_SHOWN),
  ]);
  return {
    overview: await overviewOf(db, host, certificates, now),
    homeservers: homeservers.map((server) => ({ server, serverName: `${server.name}.${config.homeservers.domain}` })),
    jobs: recentJobs,
    certificates,
  };
}

/** How many of the moves into or out of a host its page shows, newest first. */
export const HOST_MIGRATIONS_SHOWN = 20;

export interface HostMoves {
  /** The host's newest drain and how it stands, if it was ever drained. */
  drain: Awaited<ReturnType<typeof drainProgress>>["view"] | null;
  /** Moves into or out of the host, newest first. */
  migrations: ServerMigration[];
  /** Every other host of its region that is not revoked, by name: whom the moves name, and where a homeserver may go. */
  regionHosts: Host[];
  /** The Matrix server name of every homeserver the drain and the moves name, by id. */
  serverNames: Map<string, string>;
}

/** What a host's page shows of moves: its drain, the moves into or out of it, and the other hosts of its region. */
export async function hostMoves(ctx: WorkContext, host: Host): Promise<HostMoves> {
  const [drain, migrations, regionHosts] = await Promise.all([
    latestDrain(ctx, host.id),
    listMigrations(ctx.db, { hostId: host.id }, HOST_MIGRATIONS_SHOWN),
    ctx.db
      .select()
      .from(hosts)
      .where(and(eq(hosts.region, host.region), ne(hosts.id, host.id), ne(hosts.status, "revoked")))
      .orderBy(asc(hosts.name)),
  ]);
  const drainView = drain ? (await drainProgress(ctx, drain)).view : null;
  // Whom the drain and the moves name: the homeservers on the host, and those that moved into or out of it.
  const movedHere = ctx.db
    .select({ id: serverMigrations.serverId })
    .from(serverMigrations)
    .where(or(eq(serverMigrations.sourceHostId, host.id), eq(serverMigrations.targetHostId, host.id)));
  const named = await ctx.db
    .select({ id: servers.id, name: servers.name })
    .from(servers)
    .where(or(eq(servers.hostId, host.id), inArray(servers.id, movedHere)));
  const serverNames = new Map(named.map((row) => [row.id, `${row.name}.${ctx.config.homeservers.domain}`]));
  return { drain: drainView, migrations, regionHosts, serverNames };
}

/**
 * The actors an operator means by what they typed: an actor as recorded ("user:<id>", "host:<id>",
 * "system"), an account's email address, or a host's name. Nothing it could mean: no actor.
 */
export async function actorsNamed(db: Database, text: string): Promise<string[]> {
  if (text === "system" || text.startsWith("user:") || text.startsWith("host:")) return [text];
  if (text.includes("@")) {
    const found = await db
      .select({ id: users.id })
      .from(users)
      .where(eq(users.email, normalizeEmail(text) ?? text));
    return found.map(({ id }) => `user:${id}`);
  }
  const found = await db.select({ id: hosts.id }).from(hosts).where(eq(hosts.name, text));
  return found.map(({ id }) => `host:${id}`);
}

export interface AuditEntry {
  id: number;
  at: Date;
  actor: string;
  /** The account's email address when the actor is a user who still has one; the host's name when it is a host. */
  actorName: string | null;
  action: string;
  target: string | null;
  detail: unknown;
}

/** A page of the audit log as readAudit gives it, each actor named as operators know it. */
export async function auditEntries(db: Database, query: AuditQuery): Promise<AuditEntry[]> {
  const rows = await readAudit(db, query);
  const idsOf = (prefix: string) => [...new Set(rows.flatMap((row) => (row.actor.startsWith(prefix) ? [row.actor.slice(prefix.length)] : [])))];
  const [people, machines] = await Promise.all([
    db
      .select({ id: users.id, name: users.email })
      .from(users)
      .where(inArray(users.id, idsOf("user:"))),
    db
      .select({ id: hosts.id, name: hosts.name })
      .from(hosts)
      .where(inArray(hosts.id, idsOf("host:"))),
  ]);
  const names = new Map<string, string>([
    ...people.map((row) => [`user:${row.id}`, row.name] as const),
    ...machines.map((row) => [`host:${row.id}`, row.name] as const),
  ]);
  return rows.map((row) => ({ ...row, actorName: names.get(row.actor) ?? null }));
}
