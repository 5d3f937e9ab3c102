// The contract between the job runner and a job handler. A handler must be
// idempotent: the same job may run again after the agent was killed mid-job.
import type { JobAssignment } from "../../protocol/messages.ts";
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

export type JobHandler = (payload: Json, ctx: JobContext) => Promise<Json>;

/** Job kind → handler. Open: later issues register homeserver and backup kinds. */
export type HandlerRegistry = Map<string, JobHandler>;

/** A handler's refusal of bad input: its message is the job's error. */
export class JobInputError extends Error {
  override name = "JobInputError";
}
