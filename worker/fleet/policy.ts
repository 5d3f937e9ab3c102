// The fleet's timings, in one place.
export const JOIN_TOKEN_DEFAULT_MINUTES = 60;
export const JOIN_TOKEN_MAX_MINUTES = 24 * 60;

/** The agent sends PING this often; the Durable Object answers without waking. */
export const HEARTBEAT_INTERVAL_MS = 20_000;
/** Silence after which a host counts as offline, once two watch rounds in a row found it (1.5–2 minutes). */
export const OFFLINE_AFTER_MS = 90_000;
/** How often the Durable Object's alarm looks at its connection when nothing else is due. */
export const WATCH_INTERVAL_MS = 30_000;
/** A socket must say hello this soon after the challenge. */
export const AUTH_TIMEOUT_MS = 10_000;
export const USAGE_INTERVAL_MS = 30_000;
/** Development's echo (the dispatch benchmark's baseline) gives up on an agent that does not answer after this. */
export const ECHO_TIMEOUT_MS = 5_000;

/** Each kind's deadline is the job catalogue's (protocol/jobs.ts). Unacknowledged jobs are sent again after 5 s, 10 s, 20 s … up to 5 minutes apart. */
export const RETRY_BASE_MS = 5_000;
export const RETRY_MAX_MS = 5 * 60_000;
/** A connected host's last-seen time is written to D1 at most this often. */
export const LAST_SEEN_WRITE_INTERVAL_MS = 60_000;
/** The cron's backstop: an "online" host not seen for this long is marked offline. */
export const STALE_ONLINE_AFTER_MS = 3 * 60_000;
/**
 * Finished jobs older than this are deleted hourly, except what a server's page, its history and
 * its backups still name (pruneJobs). The export's operations[] come from jobs: docs/data-export.md.
 */
export const JOB_RETENTION_MS = 90 * 24 * 60 * 60_000;
/** At most this many jobs are deleted per hourly run (a backlog drains over a few hours). */
export const JOB_PRUNE_BATCH = 5_000;
/** How many of a drain's moves run at once: each stops a homeserver and streams its backup through two hosts. */
export const DRAIN_CONCURRENCY = 2;
