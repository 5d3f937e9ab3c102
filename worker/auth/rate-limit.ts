import { eq, lte, sql } from "drizzle-orm";
import { z } from "zod";
import type { Database } from "../db/client";
import { rateLimitWindows } from "../db/schema";
import { sha256Hex } from "../crypto/bytes";
import { tooManyRequests } from "../errors";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

/**
 * Fixed-window counters in D1. Per-client limits ("_ip": an IPv4 address, an
 * IPv6 /64) are sized for a shared office or carrier NAT. Guessing at one
 * account is limited per account and client, so that whoever knows an address
 * cannot lock its owner out from elsewhere, under a much larger account-wide
 * ceiling that still stops guessing spread over many clients
 * (docs/decisions.md, "Rate limits in D1").
 */
export const RATE_LIMIT_RULES = {
  login_ip: { limit: 100, windowMs: 15 * MINUTE },
  /** Failed log-ins at one account from one client; a successful one clears it. */
  login_account_client: { limit: 10, windowMs: 15 * MINUTE },
  /** Failed log-ins at one account from all clients together; a successful one clears it. */
  login_account: { limit: 100, windowMs: 15 * MINUTE },
  /** Wrong passwords given to confirm a password change or account deletion, per session. */
  password_check_session: { limit: 10, windowMs: 15 * MINUTE },
  signup_ip: { limit: 100, windowMs: HOUR },
  signup_email: { limit: 5, windowMs: HOUR },
  verify_resend_ip: { limit: 30, windowMs: HOUR },
  verify_resend_account: { limit: 5, windowMs: HOUR },
  password_reset_ip: { limit: 30, windowMs: HOUR },
  /** Reset links asked for one address from one client. */
  password_reset_email_client: { limit: 5, windowMs: HOUR },
  /** Reset links asked for one address from all clients together: how much mail one inbox can be sent. */
  password_reset_email: { limit: 30, windowMs: HOUR },
  email_change_account: { limit: 5, windowMs: HOUR },
  enroll_ip: { limit: 30, windowMs: HOUR },
  /** "Back up now" per homeserver: each is a database dump and an upload of everything on its host. */
  backup_server: { limit: 3, windowMs: HOUR },
  /** Restores per homeserver: each stops Synapse and replaces all of its data. */
  restore_server: { limit: 3, windowMs: HOUR },
  /** Full exports per homeserver: each is a database dump, the whole media store and an upload of them all on its host. */
  export_server: { limit: 3, windowMs: HOUR },
  /** Changes to a homeserver's users and registration tokens: each is a job on a host that runs other customers' homeservers too. */
  homeserver_changes_server: { limit: 300, windowMs: HOUR },
  /** Changes to a homeserver's settings: each restarts its Synapse on a host that runs other customers' homeservers too. */
  homeserver_settings_server: { limit: 12, windowMs: HOUR },
  /** "Check now" per homeserver: each is a probe user, a TLS handshake and a network probe on its host. */
  checks_server: { limit: 3, windowMs: HOUR },
  /** Lists of a homeserver's users and registration tokens: a job each, too. */
  homeserver_reads_server: { limit: 600, windowMs: HOUR },
  /** Password links refused (invalid, used, expired) per client: the links' own routes need no session. */
  password_link_ip: { limit: 30, windowMs: 15 * MINUTE },
  /**
   * Storage alert mails per homeserver (owner and operators together): a genuine one crosses 80 %, 95 %,
   * then clears and crosses again at most a few times a day; a host reporting figures that swing cannot mail more.
   */
  storage_alert_mail_server: { limit: 4, windowMs: 24 * HOUR },
  /** Agent requests and connections refused for proving nothing; a genuine agent is never refused. */
  agent_refusals_ip: { limit: 30, windowMs: 15 * MINUTE },
} satisfies Record<string, RateLimitRule>;

export type RateLimitName = keyof typeof RATE_LIMIT_RULES;

export interface RateLimitRule {
  limit: number;
  windowMs: number;
}

/** RATE_LIMITS: a JSON object overriding rules by name ({"login_ip": {"limit": 500}}), parsed into the whole set of rules. */
export const rateLimitRulesSchema = z
  .partialRecord(
    z.enum(Object.keys(RATE_LIMIT_RULES) as [RateLimitName, ...RateLimitName[]]),
    z.strictObject({ limit: z.number().int().positive().optional(), windowMs: z.number().int().positive().optional() }),
  )
  .transform((overrides) => {
    const rules = { ...RATE_LIMIT_RULES } as Record<RateLimitName, RateLimitRule>;
    for (const [name, override] of Object.entries(overrides) as [RateLimitName, Partial<RateLimitRule>][]) {
      rules[name] = { ...rules[name], ...override };
    }
    return rules;
  });

async function windowKey(name: RateLimitName, rule: RateLimitRule, subject: string, now: Date) {
  const start = Math.floor(now.getTime() / rule.windowMs) * rule.windowMs;
  return { key: `${name}:${await sha256Hex(subject)}:${start}`, endsAt: new Date(start + rule.windowMs) };
}

export interface RateLimitCheck {
  name: RateLimitName;
  subject: string;
}

/**
 * Throws the 429 (with Retry-After) a client already over the limit gets, without counting
 * an attempt: for refusing before doing any work at all.
 */
export async function requireUnderRateLimit(db: Database, rules: Record<RateLimitName, RateLimitRule>, check: RateLimitCheck, now: Date): Promise<void> {
  const { key, endsAt } = await windowKey(check.name, rules[check.name], check.subject, now);
  const [row] = await db.select({ count: rateLimitWindows.count }).from(rateLimitWindows).where(eq(rateLimitWindows.key, key));
  if (row && row.count > rules[check.name].limit) throw tooManyRequests(Math.max(1, Math.ceil((endsAt.getTime() - now.getTime()) / 1000)));
}

/**
 * Counts one attempt against every check, atomically per counter, and throws
 * a 429 (with Retry-After, and `message` if given) if any of them is now over its limit.
 */
export async function consumeRateLimits(
  db: Database,
  rules: Record<RateLimitName, RateLimitRule>,
  checks: RateLimitCheck[],
  now: Date,
  message?: (retryAfterSeconds: number) => string,
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
  if (retryAfterMs > 0) {
    const retryAfterSeconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
    throw tooManyRequests(retryAfterSeconds, message?.(retryAfterSeconds));
  }
}

export async function clearRateLimit(db: Database, rules: Record<RateLimitName, RateLimitRule>, check: RateLimitCheck, now: Date): Promise<void> {
  const { key } = await windowKey(check.name, rules[check.name], check.subject, now);
  await db.delete(rateLimitWindows).where(sql`${rateLimitWindows.key} = ${key}`);
}

export async function pruneRateLimitWindows(db: Database, now: Date): Promise<number> {
  const removed = await db.delete(rateLimitWindows).where(lte(rateLimitWindows.windowEndsAt, now)).returning({ key: rateLimitWindows.key });
  return removed.length;
}

/**
 * The client a per-client limit counts: an IPv4 address as itself, an IPv6
 * address as its /64 (one subscriber's network: a host given a /64 has 2^64
 * addresses to rotate through), an IPv4-mapped IPv6 address as its IPv4.
 */
export function clientNetwork(address: string | undefined): string {
  const value = address?.trim().toLowerCase() ?? "";
  if (!value) return "unknown";
  if (!value.includes(":")) return value;
  const groups = ipv6Groups(value);
  if (!groups) return value;
  if (groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff) {
    return [groups[6]! >> 8, groups[6]! & 0xff, groups[7]! >> 8, groups[7]! & 0xff].join(".");
  }
  return `${groups
    .slice(0, 4)
    .map((group) => group.toString(16))
    .join(":")}::/64`;
}

/** An IPv6 address's eight 16-bit groups (`::`, a trailing dotted IPv4 and a zone allowed), or null. */
function ipv6Groups(address: string): number[] | null {
  let text = address.split("%")[0]!;
  const dotted = /(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (dotted) {
    const octets = dotted.slice(1).map(Number);
    if (octets.some((octet) => octet > 255)) return null;
    text = `${text.slice(0, dotted.index)}${((octets[0]! << 8) | octets[1]!).toString(16)}:${((octets[2]! << 8) | octets[3]!).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const parse = (half: string) => (half === "" ? [] : half.split(":"));
  const head = parse(halves[0]!);
  const tail = halves.length === 2 ? parse(halves[1]!) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  if (groups.some((group) => !/^[0-9a-f]{1,4}$/.test(group))) return null;
  return groups.map((group) => parseInt(group, 16));
}
