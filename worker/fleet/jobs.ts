import { and, asc, eq, exists, gt, inArray, isNotNull, isNull, lt, lte, notInArray, or, sql } from "drizzle-orm";
import { alias } from "drizzle-orm/sqlite-core";
import { checkJobPayload, checkJobResult, JOBS, JobSchemaError, type JobKind, type JobPayload, type JobResult } from "../../protocol/jobs";
import type { Database } from "../db/client";
import { backups, jobs, servers, type Job, type JobStatus } from "../db/schema";
import { JOB_PRUNE_BATCH, JOB_RETENTION_MS, RETRY_BASE_MS, RETRY_MAX_MS } from "./policy";

/**
 * The job lifecycle, persisted in D1: queued → sent → acked → succeeded | failed.
 * A job is written before it is sent; the host's Durable Object delivers it,
 * sends it again until the agent acknowledges it, and again after a reconnect
 * until the agent reports a result. Past its deadline it fails. Its kind,
 * payload, result and deadline are the job catalogue's (protocol/jobs.ts).
 */
const UNFINISHED: JobStatus[] = ["queued", "sent", "acked"];

export interface NewJob<K extends JobKind = JobKind> {
  /** Given when a row written before the job must name it (a backup names its job). */
  id?: string;
  hostId: string;
  kind: K;
  /** Checked against the kind's payload schema before anything is written. */
  payload: NoInfer<JobPayload<K>>;
  /** The kind's deadline unless given (operators choose their test jobs'). */
  timeoutMs?: number;
}

/** What a job is about, from its payload: the columns a server's and a backup's queries use. */
function subjectOf(kind: JobKind, payload: JobPayload<JobKind>): { serverId: string | null; backupId: string | null } {
  // A legal export's job is not the customer's to see (their server's jobs are in their views and data export):
  // whether they are told is the export's notice, recorded in the audit log.
  if (payload === null || kind === "homeserver.legal_export") return { serverId: null, backupId: null };
  // An import names its server in the spec it makes it from (the payload was checked against its kind).
  if (kind === "homeserver.import") return { serverId: (payload as JobPayload<"homeserver.import">).spec.serverId, backupId: null };
  return {
    serverId: "serverId" in payload ? payload.serverId : null,
    backupId: "backupId" in payload ? payload.backupId : null,
  };
}

/**
 * The insert that writes a job (RETURNING its row), for a batch whose other writes must land with
 * it; a payload that does not match its kind is refused (a JobSchemaError naming the field) before
 * any query is made.
 */
export function insertJobQuery<K extends JobKind>(db: Database, job: NewJob<K>, now: Date) {
  const payload = checkJobPayload(job.kind, job.payload);
  return db
    .insert(jobs)
    .values({
      id: job.id ?? crypto.randomUUID(),
      hostId: job.hostId,
      kind: job.kind,
      payload,
      ...subjectOf(job.kind, payload),
      status: "queued",
      nextAttemptAt: now,
      deadline: new Date(now.getTime() + (job.timeoutMs ?? JOBS[job.kind].timeoutMs)),
      createdAt: now,
      updatedAt: now,
    })
    .returning();
}

/** Writes a job; a payload that does not match its kind is refused (a JobSchemaError naming the field) and nothing is written. */
export async function createJob<K extends JobKind>(db: Database, job: NewJob<K>, now: Date): Promise<Job> {
  const [row] = await insertJobQuery(db, job, now);
  return row!;
}

/** A job's payload as its kind declares it; undefined for another kind, or for a row that does not match (written before the catalogue). */
export function payloadOf<K extends JobKind>(job: Pick<Job, "kind" | "payload">, kind: K): JobPayload<K> | undefined {
  if (job.kind !== kind) return undefined;
  const parsed = JOBS[kind].payload.safeParse(job.payload);
  return parsed.success ? (parsed.data as JobPayload<K>) : undefined;
}

/** A succeeded job's result as its kind declares it (checked when it was recorded); undefined otherwise. */
export function resultOf<K extends JobKind>(job: Pick<Job, "kind" | "status" | "result">, kind: K): JobResult<K> | undefined {
  if (job.kind !== kind || job.status !== "succeeded") return undefined;
  const parsed = JOBS[kind].result.safeParse(job.result);
  return parsed.success ? (parsed.data as JobResult<K>) : undefined;
}

export async function getJob(db: Database, id: string): Promise<Job | undefined> {
  const [row] = await db.select().from(jobs).where(eq(jobs.id, id));
  return row;
}

/** How often awaitJob reads the job again. */
const AWAIT_POLL_MS = 200;

/**
 * The job once it finished, or as it stands after about `withinMs`: for a request whose
 * customer waits on a quick job (a call to Synapse's admin API). It reads the row in D1, where
 * the host's Durable Object records the result. Time is counted in polls, not read from the
 * clock, so the wait ends whatever Date says.
 */
export async function awaitJob(db: Database, id: string, { withinMs }: { withinMs: number }): Promise<Job> {
  for (let waited = 0; ; waited += AWAIT_POLL_MS) {
    const job = await getJob(db, id);
    if (!job) throw new Error(`no job ${id}`);
    if (!UNFINISHED.includes(job.status) || waited >= withinMs) return job;
    await new Promise((resolve) => setTimeout(resolve, AWAIT_POLL_MS));
  }
}

/**
 * Claims the jobs to (re)send now — queued, or sent but not acknowledged in
 * time — in one UPDATE … RETURNING: each is counted as one more attempt with
 * its next resend pushed back, so deliveries that overlap never send a job twice.
 */
function claimDueJobsQuery(db: Database, hostId: string, now: Date) {
  const due = and(eq(jobs.hostId, hostId), inArray(jobs.status, ["queued", "sent"]), lte(jobs.nextAttemptAt, now));
  const ids = db.select({ id: jobs.id }).from(jobs).where(due).orderBy(asc(jobs.createdAt)).limit(100);
  return db
    .update(jobs)
    .set({
      status: "sent",
      attempts: sql`${jobs.attempts} + 1`,
      // The resend delay doubles with each attempt: RETRY_BASE_MS, 2×, 4× … up to RETRY_MAX_MS.
      nextAttemptAt: sql`${now.getTime()} + min(${RETRY_BASE_MS} * (1 << ${jobs.attempts}), ${RETRY_MAX_MS})`,
      updatedAt: now,
    })
    .where(and(inArray(jobs.id, ids), due))
    .returning();
}

/**
 * A host's delivery round in one D1 round trip (a batch, so a dispatched job waits on one query in
 * the host's Durable Object): its unfinished jobs past their deadline failed, and, when its agent
 * is connected, the jobs to send now claimed (claimDueJobsQuery), oldest first; then the moment
 * the host's jobs next need attention, as the claims left it (nextJobDeadlineQuery).
 */
export async function deliveryRound(
  db: Database,
  hostId: string,
  now: Date,
  connected: boolean,
): Promise<{ expired: Job[]; claimed: Job[]; nextDeadline: Date | null }> {
  if (!connected) {
    const [expired, next] = await db.batch([failExpiredJobsQuery(db, hostId, now), nextJobDeadlineQuery(db, hostId, false)]);
    return { expired, claimed: [], nextDeadline: deadlineOf(next) };
  }
  const [expired, claimed, next] = await db.batch([
    failExpiredJobsQuery(db, hostId, now),
    claimDueJobsQuery(db, hostId, now),
    nextJobDeadlineQuery(db, hostId, true),
  ]);
  return { expired, claimed: claimed.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime()), nextDeadline: deadlineOf(next) };
}

/**
 * The earliest moment a job of this host needs attention: its deadline, and,
 * while the agent is connected, its next resend.
 */
function nextJobDeadlineQuery(db: Database, hostId: string, connected: boolean) {
  const resendable = connected ? sql`${jobs.status} IN ('queued', 'sent')` : sql`0`;
  return db
    .select({
      next: sql<number | null>`min(CASE WHEN ${resendable} THEN min(${jobs.nextAttemptAt}, ${jobs.deadline}) ELSE ${jobs.deadline} END)`,
    })
    .from(jobs)
    .where(and(eq(jobs.hostId, hostId), inArray(jobs.status, UNFINISHED)));
}

const deadlineOf = ([row]: { next: number | null }[]) => (row?.next ? new Date(row.next) : null);

export async function nextJobDeadline(db: Database, hostId: string, connected: boolean): Promise<Date | null> {
  return deadlineOf(await nextJobDeadlineQuery(db, hostId, connected));
}

export async function markAcked(db: Database, hostId: string, id: string, now: Date): Promise<void> {
  await db
    .update(jobs)
    .set({ status: "acked", updatedAt: now })
    .where(and(eq(jobs.id, id), eq(jobs.hostId, hostId), inArray(jobs.status, ["queued", "sent"])));
}

export async function recordProgress(db: Database, hostId: string, id: string, progress: number, message: string | undefined, now: Date) {
  await db
    .update(jobs)
    .set({ progress, progressMessage: message ?? null, updatedAt: now })
    .where(and(eq(jobs.id, id), eq(jobs.hostId, hostId), inArray(jobs.status, UNFINISHED)));
}

/**
 * Stores the outcome once; a repeated result for a finished job changes nothing.
 * A success whose result does not match the kind's result schema is recorded as
 * a failure saying so: nothing downstream acts on a result it cannot read.
 */
export async function recordResult(
  db: Database,
  hostId: string,
  outcome: { id: string; ok: boolean; result?: unknown; error?: string },
  now: Date,
): Promise<Job | undefined> {
  const unfinished = and(eq(jobs.id, outcome.id), eq(jobs.hostId, hostId), inArray(jobs.status, UNFINISHED));
  const [job] = await db.select({ kind: jobs.kind }).from(jobs).where(unfinished);
  if (!job) return undefined;
  const settled = settle(job.kind, outcome);
  const [row] = await db
    .update(jobs)
    .set({
      status: settled.ok ? "succeeded" : "failed",
      result: settled.ok ? settled.result : null,
      error: settled.ok ? null : settled.error,
      progress: settled.ok ? 1 : undefined,
      finishedAt: now,
      updatedAt: now,
    })
    .where(unfinished)
    .returning();
  return row;
}

function settle(kind: JobKind, outcome: { ok: boolean; result?: unknown; error?: string }): { ok: true; result: unknown } | { ok: false; error: string } {
  if (!outcome.ok) return { ok: false, error: outcome.error ?? "the agent reported a failure" };
  try {
    return { ok: true, result: checkJobResult(kind, outcome.result) };
  } catch (error) {
    if (!(error instanceof JobSchemaError)) throw error;
    return { ok: false, error: `the agent reported success with a result this control plane cannot read: ${error.message}` };
  }
}

/** After a reconnect every unfinished job is due again: the agent's journal makes repeats harmless. */
export async function redeliverUnfinished(db: Database, hostId: string, now: Date): Promise<void> {
  await db
    .update(jobs)
    .set({ status: "sent", nextAttemptAt: now, updatedAt: now })
    .where(and(eq(jobs.hostId, hostId), inArray(jobs.status, ["sent", "acked"])));
}

/** The error of a job that ran out of time: ours, unlike the agent's own error text. */
export const JOB_DEADLINE_EXCEEDED = "deadline exceeded";

function failExpiredJobsQuery(db: Database, hostId: string | null, now: Date) {
  return db
    .update(jobs)
    .set({ status: "failed", error: JOB_DEADLINE_EXCEEDED, finishedAt: now, updatedAt: now })
    .where(and(hostId === null ? undefined : eq(jobs.hostId, hostId), inArray(jobs.status, UNFINISHED), lte(jobs.deadline, now)))
    .returning();
}

/** Fails unfinished jobs past their deadline and returns them (their callers apply the outcome). */
export async function failExpiredJobs(db: Database, hostId: string | null, now: Date): Promise<Job[]> {
  return failExpiredJobsQuery(db, hostId, now);
}

export async function unfinishedJobsOfKind(db: Database, hostId: string, kinds: JobKind[]): Promise<Job[]> {
  return db
    .select()
    .from(jobs)
    .where(and(eq(jobs.hostId, hostId), inArray(jobs.kind, kinds), inArray(jobs.status, UNFINISHED)));
}

/**
 * Retention: finished jobs older than JOB_RETENTION_MS are deleted, except
 * those still named elsewhere — a server's newest job of each kind (what its
 * page shows and its history ends with), a backup's job and a server's
 * current lifecycle job. Unfinished jobs are never pruned.
 */
export async function pruneJobs(db: Database, now: Date): Promise<number> {
  const newer = alias(jobs, "newer");
  const prunable = db
    .select({ id: jobs.id })
    .from(jobs)
    .where(
      and(
        inArray(jobs.status, ["succeeded", "failed"]),
        lt(jobs.finishedAt, new Date(now.getTime() - JOB_RETENTION_MS)),
        or(
          isNull(jobs.serverId),
          exists(
            db
              .select({ id: newer.id })
              .from(newer)
              .where(and(eq(newer.serverId, jobs.serverId), eq(newer.kind, jobs.kind), gt(newer.createdAt, jobs.createdAt))),
          ),
        ),
        notInArray(jobs.id, db.select({ id: backups.jobId }).from(backups)),
        notInArray(jobs.id, db.select({ id: servers.lifecycleJobId }).from(servers).where(isNotNull(servers.lifecycleJobId))),
      ),
    )
    .limit(JOB_PRUNE_BATCH);
  const pruned = await db.delete(jobs).where(inArray(jobs.id, prunable)).returning({ id: jobs.id });
  return pruned.length;
}
