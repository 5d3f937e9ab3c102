import { createExecutionContext, createScheduledController, SELF, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { expect, vi } from "vitest";
import worker from "../../worker/index";
import type { WorkerEnv } from "../../worker/env";
import { SESSION_COOKIE } from "../../worker/http/session";

export const ORIGIN = "http://localhost";

export interface CallOptions {
  method?: string;
  /** Sent as JSON unless `rawBody` is given. */
  body?: unknown;
  rawBody?: BodyInit;
  cookie?: string | null;
  headers?: Record<string, string>;
  /** The client address Cloudflare would report; a fresh random one by default, so tests don't share rate limits. */
  ip?: string;
  /** Run the real Worker with these settings changed (for example the production environment). */
  env?: Partial<WorkerEnv>;
}

/**
 * With these over the test settings (which are development's), the Worker runs the production
 * configuration: wrangler.toml's variables, and stand-ins for the production secrets the tests
 * never use to reach Resend or Stripe.
 */
export const PRODUCTION: Partial<WorkerEnv> = {
  ENVIRONMENT: "production",
  RESEND_API_KEY: "re_workerd_tests_never_send",
  STRIPE_SECRET_KEY: "sk_test_workerd_tests_never_call",
  CLOUDFLARE_DNS_API_TOKEN: "workerd_tests_never_call_cloudflare_0123456789",
  SYNAPSE_IMAGE: "matrixdotorg/synapse:v1.163.2",
  POSTGRES_IMAGE: "postgres:15",
};

export function randomIp(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(3));
  return `10.${bytes[0]}.${bytes[1]}.${bytes[2]}`;
}

export async function call(path: string, options: CallOptions = {}): Promise<Response> {
  const headers = new Headers(options.headers);
  let body = options.rawBody;
  if (options.body !== undefined) {
    headers.set("content-type", "application/json");
    body = JSON.stringify(options.body);
  }
  if (options.cookie) headers.set("cookie", `${SESSION_COOKIE}=${options.cookie}`);
  headers.set("cf-connecting-ip", options.ip ?? randomIp());
  const request = new Request(`${ORIGIN}${path}`, {
    method: options.method ?? (body === undefined ? "GET" : "POST"),
    headers,
    body,
    redirect: "manual",
  });
  if (!options.env) return SELF.fetch(request);
  const ctx = createExecutionContext();
  const response = await worker.fetch(request, { ...env, ...options.env }, ctx);
  await waitOnExecutionContext(ctx);
  return response;
}

export const post = (path: string, body?: unknown, options: CallOptions = {}) => call(path, { ...options, method: "POST", body });

/** Asserts the response is an API error of the documented shape and returns its code. */
export async function expectError(response: Response, status: number, code?: string): Promise<string> {
  expect(response.status).toBe(status);
  expect(response.headers.get("content-type")).toMatch(/^application\/json/);
  const body = (await response.json()) as { error: { code: string; message: string } };
  expect(Object.keys(body)).toEqual(["error"]);
  expect(typeof body.error.code).toBe("string");
  expect(body.error.message.length).toBeGreaterThan(0);
  if (code) expect(body.error.code).toBe(code);
  return body.error.code;
}

/** The value of the session cookie a response set ("" when it cleared it, null when untouched). */
export function sessionCookie(response: Response): string | null {
  const header = response.headers.getSetCookie().find((cookie) => cookie.startsWith(`${SESSION_COOKIE}=`));
  if (!header) return null;
  return header.slice(SESSION_COOKIE.length + 1).split(";")[0]!;
}

export interface OutboxMail {
  to: string;
  subject: string;
  text: string;
  links: string[];
  sentAt: string;
}

export async function mailbox(to: string): Promise<OutboxMail[]> {
  const response = await call(`/dev/mailbox.json?to=${encodeURIComponent(to)}`);
  expect(response.status).toBe(200);
  return response.json();
}

/** The token in the newest emailed link to `to` whose path is `path`. */
export async function emailedToken(to: string, path: string): Promise<string> {
  for (const mail of await mailbox(to)) {
    for (const link of mail.links) {
      const url = new URL(link);
      if (url.pathname === path && url.searchParams.get("token")) return url.searchParams.get("token")!;
    }
  }
  throw new Error(`no ${path} link was mailed to ${to}`);
}

export function uniqueEmail(label = "user"): string {
  return `${label}-${crypto.randomUUID()}@example.com`;
}

export const PASSWORD = "correct horse battery staple";

export async function signUp(email = uniqueEmail(), password = PASSWORD) {
  const response = await post("/api/auth/signup", { email, password });
  expect(response.status).toBe(202);
  return { email, password };
}

export async function logIn(email: string, password = PASSWORD, options: CallOptions = {}): Promise<string> {
  const response = await post("/api/auth/login", { email, password }, options);
  expect(response.status).toBe(200);
  const cookie = sessionCookie(response);
  expect(cookie).toBeTruthy();
  return cookie!;
}

export async function verifiedUser() {
  const user = await signUp();
  const token = await emailedToken(user.email, "/verify-email");
  expect((await post("/api/auth/verify-email", { token })).status).toBe(200);
  return user;
}

export async function me(cookie: string | null): Promise<Response> {
  return call("/api/me", { cookie });
}

/** Moves the clock the Worker reads (Date only: timers and I/O keep running). */
export function setNow(date: Date | number): void {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(date);
}

export function advance(ms: number): void {
  setNow(Date.now() + ms);
}

/** Runs the real scheduled handler: the hourly schedule by default, or `cron` (e.g. the minutely one). */
export async function runCron(at: Date = new Date(), cron = "17 * * * *") {
  const ctx = createExecutionContext();
  await worker.scheduled(createScheduledController({ scheduledTime: at, cron }), env, ctx);
  await waitOnExecutionContext(ctx);
}

/** The hourly cron at minute 17 of `hour` (UTC), `day` days after a fixed date (2031-01-10), with the clock there too. */
export async function cronAt(day: number, hour: number) {
  const at = new Date(Date.UTC(2031, 0, 10 + day, hour, 17));
  setNow(at);
  await runCron(at);
}

export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

/** Every row of every table, as text. */
export async function dumpDatabase(): Promise<string> {
  const tables = await env.DB.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%'").all<{
    name: string;
  }>();
  const dump: string[] = [];
  for (const { name } of tables.results) {
    const rows = await env.DB.prepare(`SELECT * FROM "${name}"`).all();
    dump.push(`${name}: ${JSON.stringify(rows.results)}`);
  }
  return dump.join("\n");
}
