// The job runner: a `job` message in, `job.ack` at once, the handler for its
// kind (its payload and result checked against the job catalogue by the
// registry), then `job.result`. The journal makes repeated delivery harmless; at most
// `maxConcurrent` jobs run at once (different ids), the rest wait in arrival order.
import type { AgentMessage, JobAssignment } from "../protocol/messages.ts";
import type { Journal, JobOutcome, RunningEntry } from "./journal.ts";
import { errorMessage, type Logger } from "./log.ts";
import type { HandlerRegistry } from "./handlers/registry.ts";
import type { JobContext, Json } from "./handlers/types.ts";

export const MAX_ERROR_LENGTH = 4000;
/** A result larger than this (serialised) is replaced by an error: the socket is no place for bulk data. */
export const MAX_RESULT_BYTES = 256 * 1024;
const PROGRESS_MIN_INTERVAL_MS = 250;

export interface JobRunnerOptions {
  journal: Journal;
  handlers: HandlerRegistry;
  /** Hands a message to the connection (which queues it while disconnected). */
  send: (message: AgentMessage) => void;
  dataRoot: string;
  log: Logger;
  maxConcurrent?: number;
  now?: () => number;
}

interface ActiveJob {
  job: JobAssignment;
  attempt: number;
  controller: AbortController;
  /** Set once the handler started; settles when the job is over (never rejects). */
  done?: Promise<void>;
  lastProgressAt: number;
}

export interface ShutdownReport {
  /** Jobs that finished during the grace period. */
  finished: string[];
  /** Jobs aborted: their journal entries stay `running`, so the next agent process reruns them. */
  handedBack: string[];
  /** Jobs acknowledged but never started (the control plane redelivers them). */
  dropped: string[];
}

export class JobRunner {
  private readonly options: JobRunnerOptions;
  private readonly maxConcurrent: number;
  private readonly now: () => number;
  private readonly active = new Map<string, ActiveJob>();
  private readonly queue: string[] = [];
  private accepting = true;
  private stopping = false;

  constructor(options: JobRunnerOptions) {
    this.options = options;
    this.maxConcurrent = options.maxConcurrent ?? 4;
    this.now = options.now ?? Date.now;
  }

  /** Jobs running right now. */
  get runningCount(): number {
    let n = 0;
    for (const job of this.active.values()) if (job.done) n++;
    return n;
  }

  get activeIds(): string[] {
    return [...this.active.keys()];
  }

  handle(job: JobAssignment): void {
    const log = this.options.log.child({ jobId: job.id, kind: job.kind, delivery: job.attempt });
    if (!this.accepting) {
      log.info("job not taken: the agent is shutting down (the control plane will redeliver it)");
      return;
    }
    if (this.active.has(job.id)) {
      log.info("repeated delivery of a job in progress: acknowledged again");
      this.ack(job.id);
      return;
    }
    let verdict: ReturnType<Journal["verdict"]>;
    try {
      verdict = this.options.journal.verdict(job.id);
    } catch (error) {
      // Unacknowledged, the control plane tries again; better than running blind.
      log.error("cannot read the job journal; job not taken", { error });
      return;
    }
    this.ack(job.id);
    let attempt: number;
    switch (verdict.action) {
      case "resend": {
        log.info("job already done: stored result sent again");
        const { entry } = verdict;
        this.options.send({
          type: "job.result",
          id: job.id,
          ok: entry.ok,
          ...(entry.result === undefined ? {} : { result: entry.result }),
          ...(entry.error === undefined ? {} : { error: entry.error }),
        });
        return;
      }
      case "run":
        attempt = verdict.attempt;
        break;
      case "ack-only": // recorded as running here, yet not in progress: its bookkeeping failed; run it again
      case "rerun-interrupted":
        attempt = verdict.entry.attempt + 1;
        log.warn("job was interrupted before it finished (agent stopped mid-job): running it again", {
          previousPid: verdict.entry.pid,
          attempt,
        });
        break;
    }
    this.active.set(job.id, { job, attempt, controller: new AbortController(), lastProgressAt: 0 });
    this.queue.push(job.id);
    this.pump();
  }

  /** Stops taking jobs: later deliveries are not acknowledged, queued jobs are dropped. */
  stopAccepting(): string[] {
    this.accepting = false;
    const dropped = this.queue.splice(0);
    for (const id of dropped) this.active.delete(id);
    return dropped;
  }

  /**
   * Graceful stop: take no more jobs, give running ones `timeoutMs` to finish, then
   * abort them (handing them back) and wait up to `abortGraceMs` for them to let go.
   */
  async shutdown(timeoutMs: number, abortGraceMs = 5_000): Promise<ShutdownReport> {
    const dropped = this.stopAccepting();
    const running = [...this.active.values()];
    const finished: string[] = [];
    const handedBack: string[] = [];
    const settled = new Set<string>();
    for (const job of running) void job.done?.then(() => settled.add(job.job.id));
    await race(Promise.all(running.map((j) => j.done)), timeoutMs);
    this.stopping = true;
    for (const job of running) {
      if (settled.has(job.job.id)) finished.push(job.job.id);
      else {
        handedBack.push(job.job.id);
        job.controller.abort(new Error("the agent is shutting down"));
      }
    }
    if (handedBack.length) await race(Promise.all(running.map((j) => j.done)), abortGraceMs);
    return { finished, handedBack, dropped };
  }

  /** Aborts everything at once (fatal close, second signal). */
  abortAll(): void {
    this.stopAccepting();
    this.stopping = true;
    for (const job of this.active.values()) job.controller.abort(new Error("the agent is stopping"));
  }

  /** Resolves when no job is running or queued (tests). */
  async idle(): Promise<void> {
    while (this.active.size > 0) await Promise.all([...this.active.values()].map((j) => j.done ?? tick()));
  }

  private ack(id: string): void {
    this.options.send({ type: "job.ack", id });
  }

  private pump(): void {
    while (this.queue.length > 0 && this.runningCount < this.maxConcurrent) {
      const id = this.queue.shift()!;
      const active = this.active.get(id);
      if (!active) continue;
      active.done = this.run(active)
        .catch((error: unknown) => {
          this.options.log.error("job runner failure", { jobId: id, error });
        })
        .finally(() => {
          this.active.delete(id);
          this.pump();
        });
    }
  }

  private async run(active: ActiveJob): Promise<void> {
    const { job, attempt, controller } = active;
    const log = this.options.log.child({ jobId: job.id, kind: job.kind, attempt });
    const handler = this.options.handlers.get(job.kind);
    if (!handler) {
      // Nothing ran, so nothing is journaled: an upgraded agent may run this id later.
      const known = this.options.handlers.kinds().join(", ");
      log.warn("unknown job kind");
      this.sendResult(job.id, { ok: false, error: `unknown job kind "${job.kind}" (this agent runs: ${known})` });
      return;
    }

    let running: RunningEntry;
    try {
      running = this.options.journal.markRunning(job.id, job.kind, attempt);
    } catch (error) {
      log.error("cannot write the job journal; job not run", { error });
      this.sendResult(job.id, { ok: false, error: `cannot record the job in the agent's journal: ${errorMessage(error)}` });
      return;
    }

    const ctx: JobContext = {
      signal: controller.signal,
      dataRoot: this.options.dataRoot,
      log,
      job: { id: job.id, kind: job.kind, attempt: job.attempt, deadline: job.deadline },
      progress: (progress, message) => this.progress(active, progress, message),
    };

    log.info("job started");
    const started = this.now();
    let outcome: JobOutcome;
    try {
      const result = await handler(job.payload, ctx);
      outcome = checkResult(result);
    } catch (error) {
      if (controller.signal.aborted && this.stopping) {
        log.warn("job aborted by shutdown: handed back (its journal entry stays running)");
        return;
      }
      outcome = { ok: false, error: truncate(errorMessage(error), MAX_ERROR_LENGTH) };
    }
    try {
      this.options.journal.markDone(running, outcome);
    } catch (error) {
      log.error("cannot record the job's result in the journal", { error });
    }
    log.info(outcome.ok ? "job succeeded" : "job failed", {
      durationMs: this.now() - started,
      ...(outcome.ok ? {} : { error: outcome.error }),
    });
    this.sendResult(job.id, outcome);
  }

  private progress(active: ActiveJob, progress: number, message?: string): void {
    if (!this.active.has(active.job.id)) return;
    const now = this.now();
    const final = progress >= 1;
    if (!final && now - active.lastProgressAt < PROGRESS_MIN_INTERVAL_MS) return;
    active.lastProgressAt = now;
    const p = Number.isFinite(progress) ? Math.min(1, Math.max(0, progress)) : 0;
    this.options.send({
      type: "job.progress",
      id: active.job.id,
      progress: p,
      ...(message === undefined ? {} : { message: truncate(message, 500) }),
    });
  }

  private sendResult(id: string, outcome: JobOutcome): void {
    this.options.send({
      type: "job.result",
      id,
      ok: outcome.ok,
      ...(outcome.ok ? (outcome.result === undefined ? {} : { result: outcome.result }) : { error: outcome.error }),
    });
  }
}

/** A handler's result (its kind's, which the registry checked) as an outcome, unless too big for the socket. */
function checkResult(result: Json): JobOutcome {
  const size = Buffer.byteLength(JSON.stringify(result));
  if (size > MAX_RESULT_BYTES) return { ok: false, error: `the job's result is too large (${size} bytes)` };
  return { ok: true, result };
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function race(promise: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    promise.then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      () => {
        clearTimeout(timer);
        resolve();
      },
    );
  });
}

function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
