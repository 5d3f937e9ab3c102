// Backups' timings, in one place (the backup and restore jobs' deadlines are the job catalogue's, protocol/jobs.ts).
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** Backups older than this are deleted (but never a homeserver's newest successful one). */
export const BACKUP_RETENTION_MS = 30 * DAY;
/** The daily backup is skipped when one succeeded, or is under way, this recently. */
export const DAILY_BACKUP_SKIP_MS = 20 * HOUR;
/** An unfinished backup whose job was never written (the Worker stopped in between) is given up after this. */
export const ORPHANED_BACKUP_AFTER_MS = 10 * MINUTE;
/** A due deletion whose final backup failed is tried again after this. */
export const DELETION_RETRY_MS = DAY;
/** No successful backup for this long (two daily ones missed) raises an operator alert, repeated daily. */
export const BACKUP_OVERDUE_AFTER_MS = 2 * DAY;
export const BACKUP_OVERDUE_REALERT_MS = DAY;
/** Operators' pages list a homeserver as late once its last successful backup is this old: a daily backup missed, with two hours' slack. */
export const BACKUP_LATE_AFTER_MS = 26 * HOUR;
