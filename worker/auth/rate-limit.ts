import { lte, sql } from "drizzle-orm";
import { z } from "zod";
import type { Database } from "../db/client";
import { rateLimitWindows } from "../db/schema";
import { sha256Hex } from "../crypto/bytes";
import { tooManyRequests } from "../errors";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

/**
 * Fixed-window counters in D1. Per-IP limits are sized for a shared office or
 * carrier NAT; per-account limits are the real defence against guessing.
 */
export const RATE_LIMIT_RULES = {
  login_ip: { limit: 100, windowMs: 15 * MINUTE },
  /** Failed log-ins only: a successful one clears it. */
  login_account: { limit: 10, windowMs: 15 * MINUTE },
  signup_ip: { limit: 100, windowMs: HOUR },
  signup_email: { limit: 5, windowMs: HOUR },
  verify_resend_ip: { limit: 30, windowMs: HOUR },
  verify_resend_account: { limit: 5, windowMs: HOUR },
  password_reset_ip: { limit: 30, windowMs: HOUR },
  password_reset_email: { limit: 5, windowMs: HOUR },
  email_change_account: { limit: 5, windowMs: HOUR },
  enroll_ip: { limit: 30, windowMs: HOUR },
} satisfies Record<string, RateLimitRule>;

export type RateLimitName = keyof typeof RATE_LIMIT_RULES;

export interface RateLimitRule {
  limit: number;
  windowMs: number;
}

const overridesSchema = z.partialRecord(
  z.enum(Object.keys(RATE_LIMIT_RULES) as [RateLimitName, ...RateLimitName[]]),
  z.strictObject({ limit: z.number().int().positive().optional(), windowMs: z.number().int().positive().optional() }),
);

/** The rules with the operator's RATE_LIMITS overrides (a JSON object) applied. */
export function rateLimitRules(overrides: string | undefined): Record<RateLimitName, RateLimitRule> {
  if (!overrides) return RATE_LIMIT_RULES;
  const parsed = overridesSchema.parse(JSON.parse(overrides));
  const rules = { ...RATE_LIMIT_RULES } as Record<RateLimitName, RateLimitRule>;
  for (const [name, override] of Object.entries(parsed) as [RateLimitName, Partial<RateLimitRule>][]) {
    rules[name] = { ...rules[name], ...override };
  }
  return rules;
}

async function windowKey(name: RateLimitName, rule: RateLimitRule, subject: string, now: Date) {
  const start = Math.floor(now.getTime() / rule.windowMs) * rule.windowMs;
  return { key: `${name}:${await sha256Hex(subject)}:${start}`, endsAt: new Date(start + rule.windowMs) };
}

export interface RateLimitCheck {
  name: RateLimitName;
  subject: string;
}

/**
 * Counts one attempt against every check, atomically per counter, and throws
 * a 429 (with Retry-After) if any of them is now over its limit.
 */
export async function consumeRateLimits(
  db: Database,
  rules: Record<RateLimitName, RateLimitRule>,
  checks: RateLimitCheck[],
  now: Date,
): Promise<void> {
  const windows = await Promise.all(checks.map((check) => windowKey(check.name, rules[check.name], check.subject, now)));
  const statements = windows.map(({ key, endsAt }) =>
    db
      .insert(rateLimitWindows)
      .values({ key, count: 1, windowEndsAt: endsAt })
      .onConflictDoUpdate({ target: rateLimitWindows.key, set: { count: sql`${rateLimitWindows.count} + 1` } })
      .returning({ count: rateLimitWindows.count }),
  );
  if (statements.length === 0) return;
  const results = await db.batch(statements as [(typeof statements)[number], ...typeof statements]);
  let retryAfterMs = 0;
  results.forEach(([row], i) => {
    const check = checks[i]!;
    if (row && row.count > rules[check.name].limit) {
      retryAfterMs = Math.max(retryAfterMs, windows[i]!.endsAt.getTime() - now.getTime());
    }
  });
  if (retryAfterMs > 0) throw tooManyRequests(Math.max(1, Math.ceil(retryAfterMs / 1000)));
}

export async function clearRateLimit(
  db: Database,
  rules: Record<RateLimitName, RateLimitRule>,
  check: RateLimitCheck,
  now: Date,
): Promise<void> {
  const { key } = await windowKey(check.name, rules[check.name], check.subject, now);
  await db.delete(rateLimitWindows).where(sql`${rateLimitWindows.key} = ${key}`);
}

export async function pruneRateLimitWindows(db: Database, now: Date): Promise<number> {
  const removed = await db
    .delete(rateLimitWindows)
    .where(lte(rateLimitWindows.windowEndsAt, now))
    .returning({ key: rateLimitWindows.key });
  return removed.length;
}
