import { workerConfig, type WorkerConfig } from "./config";
import { database, type Database } from "./db/client";
import type { Env, WorkerEnv } from "./env";

/** What the Worker's work runs with, whether a request, a cron run or a host's message sets it going. */
export interface WorkContext {
  db: Database;
  /** The bindings (D1, R2, the hosts' Durable Objects); settings are in `config`. */
  env: Env;
  config: WorkerConfig;
  /** One instant for all of this work. */
  now: Date;
  /**
   * Work that may finish after the answer (a request's executionCtx.waitUntil). Absent (the cron,
   * a host's connection): such work waits for the cron's next pass.
   */
  waitUntil?: (work: Promise<unknown>) => void;
}

/** What a request's work runs with: the work context, and who asked from where. */
export interface RequestContext extends WorkContext {
  /** The caller's network (clientNetwork()): per-client rate limits count it. */
  client: string;
  /** The absolute URL of one of our pages, for email and Stripe's redirects. */
  link: (path: string) => string;
}

/** Throws the ConfigError of settings that are missing or malformed. */
export function workContext(env: WorkerEnv, now: Date): WorkContext {
  return { db: database(env.DB), env, config: workerConfig(env), now };
}
