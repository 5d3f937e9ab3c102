// The local job journal: one JSON file per job id in <stateDir>/jobs, replaced
// atomically. It is what makes repeated delivery harmless:
//   done                          → never run again; the stored result is re-sent
//   running in this process       → only acknowledged again
//   running in another process    → that agent died mid-job: run it again
// A process is told apart by a random instance id (pids repeat across restarts,
// notably as pid 1 in a container), with the pid recorded for operators.
import { mkdirSync, readdirSync, readFileSync, unlinkSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { z } from "zod";
import { TEMP_SUFFIX, removeStaleTempFiles, writeFileAtomic } from "./atomic-file.ts";
import { silentLogger, type Logger } from "./log.ts";

export const JOURNAL_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;

const common = {
  id: z.string().min(1).max(128),
  kind: z.string().min(1).max(64),
  /** How many times this agent has started the job (counting interrupted runs). */
  attempt: z.number().int().positive(),
  startedAt: z.number().int().nonnegative(),
  pid: z.number().int().nonnegative(),
  instance: z.string().min(1).max(64),
};

export const journalEntrySchema = z.discriminatedUnion("state", [
  z.strictObject({ ...common, state: z.literal("running") }),
  z.strictObject({
    ...common,
    state: z.literal("done"),
    ok: z.boolean(),
    result: z.json().optional(),
    error: z.string().optional(),
    finishedAt: z.number().int().nonnegative(),
  }),
]);
export type JournalEntry = z.infer<typeof journalEntrySchema>;
export type RunningEntry = Extract<JournalEntry, { state: "running" }>;
export type DoneEntry = Extract<JournalEntry, { state: "done" }>;
export type JobOutcome = { ok: true; result: DoneEntry["result"] } | { ok: false; error: string };

/** What the journal says to do with a delivered job. */
export type JournalVerdict =
  | { action: "run"; attempt: number }
  | { action: "resend"; entry: DoneEntry }
  | { action: "ack-only"; entry: RunningEntry }
  | { action: "rerun-interrupted"; attempt: number; entry: RunningEntry };

export interface JournalOptions {
  pid?: number;
  /** Identifies this process; default: a fresh random id. */
  instance?: string;
  now?: () => number;
  log?: Logger;
  /** Only read (status): create nothing, clean nothing — a running agent may be mid-write. */
  readOnly?: boolean;
}

export class Journal {
  readonly dir: string;
  readonly instance: string;
  private readonly pid: number;
  private readonly now: () => number;
  private readonly log: Logger;

  constructor(dir: string, options: JournalOptions = {}) {
    this.dir = dir;
    this.pid = options.pid ?? process.pid;
    this.instance = options.instance ?? randomUUID();
    this.now = options.now ?? Date.now;
    this.log = options.log ?? silentLogger;
    if (options.readOnly) return;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const removed = removeStaleTempFiles(dir);
    if (removed > 0) this.log.warn("removed temporary journal files left by an interrupted write", { count: removed });
  }

  /** The file of a job id (ids are arbitrary strings: encoded to a safe name). */
  fileOf(id: string): string {
    return join(this.dir, `job-${Buffer.from(id, "utf8").toString("base64url")}.json`);
  }

  get(id: string): JournalEntry | undefined {
    let text: string;
    try {
      text = readFileSync(this.fileOf(id), "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw error;
    }
    const parsed = safeJson(text);
    const entry = journalEntrySchema.safeParse(parsed);
    if (!entry.success || entry.data.id !== id) {
      // Cannot happen with atomic writes short of disk corruption; rerunning is the safe reading.
      this.log.error("unreadable journal entry ignored", { jobId: id, file: this.fileOf(id) });
      return undefined;
    }
    return entry.data;
  }

  /** Decides what a delivery of job `id` means, given this process's own bookkeeping. */
  verdict(id: string): JournalVerdict {
    const entry = this.get(id);
    if (!entry) return { action: "run", attempt: 1 };
    if (entry.state === "done") return { action: "resend", entry };
    if (entry.instance === this.instance) return { action: "ack-only", entry };
    return { action: "rerun-interrupted", attempt: entry.attempt + 1, entry };
  }

  markRunning(id: string, kind: string, attempt: number): RunningEntry {
    const entry: RunningEntry = {
      id,
      kind,
      state: "running",
      attempt,
      startedAt: this.now(),
      pid: this.pid,
      instance: this.instance,
    };
    this.write(entry);
    return entry;
  }

  markDone(running: RunningEntry, outcome: JobOutcome): DoneEntry {
    const entry: DoneEntry = {
      ...running,
      state: "done",
      ok: outcome.ok,
      ...(outcome.ok ? (outcome.result === undefined ? {} : { result: outcome.result }) : { error: outcome.error }),
      finishedAt: this.now(),
    };
    this.write(entry);
    return entry;
  }

  /** All readable entries (for status and tests). */
  list(): JournalEntry[] {
    const out: JournalEntry[] = [];
    for (const name of this.files()) {
      const entry = journalEntrySchema.safeParse(safeJson(readOrUndefined(join(this.dir, name))));
      if (entry.success) out.push(entry.data);
    }
    return out;
  }

  /**
   * Deletes done entries finished more than `maxAgeMs` ago, and interrupted entries
   * started that long ago (the control plane's deadline has long passed by then).
   * The control plane must never redeliver a job id older than this.
   */
  prune(maxAgeMs = JOURNAL_RETENTION_MS): number {
    const cutoff = this.now() - maxAgeMs;
    let removed = 0;
    for (const name of this.files()) {
      const path = join(this.dir, name);
      const entry = journalEntrySchema.safeParse(safeJson(readOrUndefined(path)));
      if (!entry.success) continue;
      const e = entry.data;
      const old = e.state === "done" ? e.finishedAt < cutoff : e.instance !== this.instance && e.startedAt < cutoff;
      if (!old) continue;
      try {
        unlinkSync(path);
        removed++;
      } catch {
        // gone already
      }
    }
    removeStaleTempFiles(this.dir);
    return removed;
  }

  private files(): string[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    return names.filter((n) => n.startsWith("job-") && n.endsWith(".json") && !n.endsWith(TEMP_SUFFIX));
  }

  private write(entry: JournalEntry): void {
    writeFileAtomic(this.fileOf(entry.id), `${JSON.stringify(entry)}\n`, 0o600);
  }
}

function safeJson(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function readOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}
