import { and, asc, eq, inArray, lte, sql } from "drizzle-orm";
import type { Database } from "../db/client";
import { jobs, type Job, type JobStatus } from "../db/schema";
import { JOB_DEFAULT_TIMEOUT_MS, RETRY_BASE_MS, RETRY_MAX_MS } from "./policy";

/**
 * The job lifecycle, persisted in D1: queued → sent → acked → succeeded | failed.
 * A job is written before it is sent; the host's Durable Object delivers it,
 * sends it again until the agent acknowledges it, and again after a reconnect
 * until the agent reports a result. Past its deadline it fails.
 */
const UNFINISHED: JobStatus[] = ["queued", "sent", "acked"];

export interface NewJob {
  /** Given when a row written before the job must name it (a backup names its job). */
  id?: string;
  hostId: string;
  kind: string;
  payload: unknown;
  timeoutMs?: number;
}

export async function createJob(db: Database, job: NewJob, now: Date): Promise<Job> {
  const [row] = await db
    .insert(jobs)
    .values({
      id: job.id ?? crypto.randomUUID(),
      hostId: job.hostId,
      kind: job.kind,
      payload: job.payload ?? {},
      status: "queued",
      nextAttemptAt: now,
      deadline: new Date(now.getTime() + (job.timeoutMs ?? JOB_DEFAULT_TIMEOUT_MS)),
      createdAt: now,
      updatedAt: now,
    })
    .returning();
  return row!;
}

export async function getJob(db: Database, id: string): Promise<Job | undefined> {
  const [row] = await db.select().from(jobs).where(eq(jobs.id, id));
  return row;
}

/**
 * Claims the jobs to (re)send now — queued, or sent but not acknowledged in
 * time — in one UPDATE … RETURNING: each is counted as one more attempt with
 * its next resend pushed back, so deliveries that overlap never send a job twice.
 */
export async function claimDueJobs(db: Database, hostId: string, now: Date): Promise<Job[]> {
  const due = and(eq(jobs.hostId, hostId), inArray(jobs.status, ["queued", "sent"]), lte(jobs.nextAttemptAt, now));
  const ids = db.select({ id: jobs.id }).from(jobs).where(due).orderBy(asc(jobs.createdAt)).limit(100);
  const claimed = await db
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
  return claimed.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
}

/**
 * The earliest moment a job of this host needs attention: its deadline, and,
 * while the agent is connected, its next resend.
 */
export async function nextJobDeadline(db: Database, hostId: string, connected: boolean): Promise<Date | null> {
  const resendable = connected ? sql`${jobs.status} IN ('queued', 'sent')` : sql`0`;
  const [row] = await db
    .select({
      next: sql<number>`min(CASE WHEN ${resendable} THEN min(${jobs.nextAttemptAt}, ${jobs.deadline}) ELSE ${jobs.deadline} END)`,
    })
    .from(jobs)
    .where(and(eq(jobs.hostId, hostId), inArray(jobs.status, UNFINISHED)));
  return row?.next ? new Date(row.next) : null;
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

/** Stores the outcome once; a repeated result for a finished job changes nothing. */
export async function recordResult(
  db: Database,
  hostId: string,
  outcome: { id: string; ok: boolean; result?: unknown; error?: string },
  now: Date,
): Promise<Job | undefined> {
  const [row] = await db
    .update(jobs)
    .set({
      status: outcome.ok ? "succeeded" : "failed",
      result: outcome.result ?? null,
      error: outcome.ok ? null : (outcome.error ?? "the agent reported a failure"),
      progress: outcome.ok ? 1 : undefined,
      finishedAt: now,
      updatedAt: now,
    })
    .where(and(eq(jobs.id, outcome.id), eq(jobs.hostId, hostId), inArray(jobs.status, UNFINISHED)))
    .returning();
  return row;
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

/** Fails unfinished jobs past their deadline and returns them (their callers apply the outcome). */
export async function failExpiredJobs(db: Database, hostId: string | null, now: Date): Promise<Job[]> {
  return db
    .update(jobs)
    .set({ status: "failed", error: JOB_DEADLINE_EXCEEDED, finishedAt: now, updatedAt: now })
    .where(
      and(
        hostId === null ? undefined : eq(jobs.hostId, hostId),
        inArray(jobs.status, UNFINISHED),
        lte(jobs.deadline, now),
      ),
    )
    .returning();
}

export async function unfinishedJobsOfKind(db: Database, hostId: string, kinds: string[]): Promise<Job[]> {
  return db
    .select()
    .from(jobs)
    .where(and(eq(jobs.hostId, hostId), inArray(jobs.kind, kinds), inArray(jobs.status, UNFINISHED)));
}

