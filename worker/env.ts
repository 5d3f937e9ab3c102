import type { Settings } from "./config";

/** The Worker's bindings, as wrangler.toml declares them. Its settings are read only through config.ts. */
export interface Env {
  DB: D1Database;
  /** Encrypted backups: backups/<serverId>/<backupId>.age and a .manifest.json beside each. */
  BACKUPS: R2Bucket;
  /** One Durable Object per host (HostConnection). */
  HOSTS: DurableObjectNamespace<import("./fleet/host-connection").HostConnection>;
}

/** What the runtime passes the Worker, its Durable Objects and its cron: the bindings, and the settings as strings. */
export type WorkerEnv = Env & Settings;
