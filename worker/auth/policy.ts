// Lifetimes of everything auth hands out, in one place.
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

export const SESSION_IDLE_TIMEOUT_MS = 7 * DAY;
export const SESSION_ABSOLUTE_LIFETIME_MS = 30 * DAY;
/** How stale `last_seen_at` may get before a request slides the expiry forward (bounds D1 writes). */
export const SESSION_REFRESH_INTERVAL_MS = HOUR;

/** A new signing key takes over this often; retired keys verify for one more absolute session lifetime. */
export const SIGNING_KEY_ROTATION_INTERVAL_MS = 7 * DAY;

export const TOKEN_LIFETIME_MS = {
  verify_email: DAY,
  password_reset: HOUR,
  email_change: HOUR,
} as const;
