// The contract between the job runner and a job handler. A handler must be
// idempotent: the same job may run again after the agent was killed mid-job.
import type { JobAssignment } from "../../protocol/messages.ts";
import type { DeliveredJobPayload, JobKind, JobResult } from "../../protocol/jobs.ts";
import type { Logger } from "../log.ts";

export type Json = JobAssignment["payload"];

export interface JobContext {
  /** Reports progress (0 to 1) to the control plane. */
  progress(progress: number, message?: string): void;
  /** Aborted when the agent shuts down before the job finished: stop, leave things consistent. */
  signal: AbortSignal;
  /** The data root (customer data lives below it). */
  dataRoot: string;
  log: Logger;
  job: Pick<JobAssignment, "id" | "kind" | "attempt" | "deadline">;
}

/** Runs one kind of the catalogue: its payload already checked against the kind's schema, its result the kind's. */
export type JobHandler<K extends JobKind> = (payload: DeliveredJobPayload<K>, ctx: JobContext) => Promise<JobResult<K>>;

/** Handlers for some kinds of the catalogue, each typed by its kind. */
export type JobHandlers<K extends JobKind = JobKind> = { [Kind in K]: JobHandler<Kind> };

/** A handler's refusal of bad input: its message is the job's error. */
export class JobInputError extends Error {
  override name = "JobInputError";
}
