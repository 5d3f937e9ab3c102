import { and, desc, eq, isNull, lt, or } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import type { JobKind } from "../../protocol/jobs";
import { audit } from "../audit/audit";
import type { Database } from "../db/client";
import { hosts, type Host, type HostState, type Job } from "../db/schema";
import type { Env } from "../env";
import { notFound } from "../errors";
import { insertJobQuery, type NewJob } from "./jobs";
import { STALE_ONLINE_AFTER_MS } from "./policy";

export function hostStub(env: Env, hostId: string) {
  return env.HOSTS.get(env.HOSTS.idFromName(hostId));
}

/**
 * Persists a job, then asks the host's Durable Object to deliver it (now, or when the host is back).
 * Its payload is typed by its kind and checked against the job catalogue before anything is written.
 * `alongside` are writes that land with the job, in its round trip (its audit entry, say): a job
 * on its way to the agent waits on no more queries for them.
 */
export async function dispatchJob<K extends JobKind>(db: Database, env: Env, job: NewJob<K>, now: Date, alongside: BatchItem<"sqlite">[] = []): Promise<Job> {
  const insert = insertJobQuery(db, job, now);
  const [[created]] = alongside.length > 0 ? await db.batch([insert, ...alongside]) : [await insert];
  await hostStub(env, job.hostId).deliver(job.hostId);
  return created!;
}

/**
 * The cron's backstop for the Durable Objects' own checks: a host still
 * "online" that has not been seen for a few minutes (its object lost its
 * sockets and alarm, say in a restart) is marked offline.
 */
export async function markStaleHostsOffline(db: Database, now: Date): Promise<number> {
  const stale = await db
    .update(hosts)
    .set({ status: "offline" })
    .where(and(eq(hosts.status, "online"), or(isNull(hosts.lastSeenAt), lt(hosts.lastSeenAt, new Date(now.getTime() - STALE_ONLINE_AFTER_MS)))))
    .returning({ id: hosts.id });
  for (const { id } of stale) await audit(db, now, `host:${id}`, "agent.disconnected", id, { reason: "not seen (cron)" });
  return stale.length;
}

export async function listHosts(db: Database): Promise<Host[]> {
  return db.select().from(hosts).orderBy(desc(hosts.enrolledAt));
}

export async function requireHost(db: Database, id: string): Promise<Host> {
  const [host] = await db.select().from(hosts).where(eq(hosts.id, id));
  if (!host) throw notFound("No such host.");
  return host;
}

/** Revokes a host: it can never authenticate again, and its live connection is closed at once. */
export async function revokeHost(db: Database, env: Env, operatorId: string, hostId: string, now: Date): Promise<Host> {
  await requireHost(db, hostId);
  const [host] = await db.batch([
    db.update(hosts).set({ status: "revoked", revokedAt: now }).where(eq(hosts.id, hostId)).returning(),
    audit(db, now, `user:${operatorId}`, "host.revoked", hostId),
  ]);
  await hostStub(env, hostId).revoke();
  return host[0]!;
}

/**
 * An operator lets customer data onto a host whose data root is not encrypted
 * (or takes that back). Production places homeservers only on encrypted hosts
 * otherwise, whatever the agent's own flag says. Recorded in the audit log
 * with the operator's reason.
 */
export async function setUnencryptedPlacementOverride(
  db: Database,
  operatorId: string,
  hostId: string,
  allow: boolean,
  reason: string,
  now: Date,
): Promise<Host> {
  await requireHost(db, hostId);
  const [host] = await db.batch([
    db.update(hosts).set({ unencryptedPlacementOverride: allow }).where(eq(hosts.id, hostId)).returning(),
    audit(db, now, `user:${operatorId}`, allow ? "host.unencrypted_placement_allowed" : "host.unencrypted_placement_withdrawn", hostId, { reason }),
  ]);
  return host[0]!;
}

/**
 * The operator sets what a host is for (see hosts.state). A revoked host keeps
 * the state it had: revocation is final and says more.
 */
export async function setHostState(db: Database, operatorId: string, hostId: string, state: HostState, reason: string | undefined, now: Date): Promise<Host> {
  const before = await requireHost(db, hostId);
  if (before.state === state) return before;
  const [host] = await db.batch([
    db.update(hosts).set({ state }).where(eq(hosts.id, hostId)).returning(),
    audit(db, now, `user:${operatorId}`, "host.state_changed", hostId, { from: before.state, to: state, ...(reason ? { reason } : {}) }),
  ]);
  return host[0]!;
}
