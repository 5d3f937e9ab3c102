import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { dailyBackupHour } from "../../worker/backups/maintenance";
import { call, expectError, logIn, post, runCron, setNow, signUp, uniqueEmail, PASSWORD } from "./helpers";
import { runningServer } from "./servers/server-helpers";

// An unexpected database error is logged as its class, its cause's code and the query's SQL:
// never the message, which for a failed query carries every parameter it was given.

afterEach(() => vi.useRealTimers());

/** Runs `run` with every console method captured. */
async function capturingLogs<T>(run: () => Promise<T>): Promise<{ result: T; logs: string }> {
  const lines: string[] = [];
  const spies = (["error", "warn", "log", "info", "debug"] as const).map((level) =>
    vi.spyOn(console, level).mockImplementation((...args: unknown[]) => void lines.push(args.map(String).join(" "))),
  );
  try {
    return { result: await run(), logs: lines.join("\n") };
  } finally {
    for (const spy of spies) spy.mockRestore();
  }
}

/** Runs `run` while a trigger makes every `event` on `table` fail, as a broken database would. */
async function whileFailing<T>(table: string, event: "INSERT" | "UPDATE", run: () => Promise<T>): Promise<T> {
  await env.DB.prepare(`CREATE TRIGGER forced_failure BEFORE ${event} ON ${table} BEGIN SELECT RAISE(ABORT, 'forced failure'); END`).run();
  try {
    return await run();
  } finally {
    await env.DB.prepare("DROP TRIGGER forced_failure").run();
  }
}

/** The one line logged for `event`, parsed. */
function logged(logs: string, event: string) {
  const lines = logs.split("\n").filter((line) => line.includes(`"event":"${event}"`));
  expect(lines, logs).toHaveLength(1);
  return JSON.parse(lines[0]!);
}

/** Nothing a query was given: no password hash, no 13-digit timestamp, no id or email it was passed. */
function expectNoParameters(logs: string, values: string[]) {
  expect(logs).not.toContain("$scrypt$");
  expect(logs).not.toContain("params");
  expect(logs).not.toMatch(/\d{13}/);
  for (const value of values) expect(logs).not.toContain(value);
}

describe("an unexpected database error", () => {
  it("on sign-up through the API: the generic 500, and a log of the failed insert without its parameters", async () => {
    const email = uniqueEmail("logged");
    const { result: response, logs } = await capturingLogs(() =>
      whileFailing("users", "INSERT", () => post("/api/auth/signup", { email, password: PASSWORD })),
    );
    await expectError(response, 500, "internal_error");
    expectNoParameters(logs, [email, email.split("@")[0]!, PASSWORD]);
    expect(logged(logs, "unhandled_error")).toMatchObject({
      error: { class: "DrizzleQueryError", query: expect.stringMatching(/^insert into "users" .*values \(\?, \?/), cause: { code: "SQLITE_CONSTRAINT" } },
    });
  });

  it("on the sign-up page: a page that says so, and the same log", async () => {
    const email = uniqueEmail("logged");
    const { result: response, logs } = await capturingLogs(() =>
      whileFailing("users", "INSERT", () =>
        call("/signup", {
          method: "POST",
          rawBody: new URLSearchParams({ email, password: PASSWORD }),
          headers: { "content-type": "application/x-www-form-urlencoded", accept: "text/html" },
        }),
      ),
    );
    expect(response.status).toBe(500);
    expect(await response.text()).toContain("Something went wrong on our side.");
    expectNoParameters(logs, [email, email.split("@")[0]!, PASSWORD]);
    expect(logged(logs, "unhandled_error").error.class).toBe("DrizzleQueryError");
  });

  it("on a password change: the new password's hash stays out of the log", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    const newPassword = "a brand new passphrase";
    const { result: response, logs } = await capturingLogs(() =>
      whileFailing("users", "UPDATE", () => post("/api/auth/password-change", { currentPassword: PASSWORD, newPassword }, { cookie })),
    );
    await expectError(response, 500, "internal_error");
    expectNoParameters(logs, [email, PASSWORD, newPassword]);
    expect(logged(logs, "unhandled_error").error.query).toMatch(/^update "users" set "password_hash" = \?/);
  });

  it("in the hourly cron's backups: the server's new wrapped key stays out of the log", async () => {
    const { id } = await runningServer();
    const at = new Date(Date.UTC(2031, 0, 10, dailyBackupHour(id), 17));
    setNow(at);
    const { logs } = await capturingLogs(() => whileFailing("backup_keys", "INSERT", () => runCron(at)));
    // The key's public half (age1…) is a parameter too; the wrapped identity beside it is the secret.
    expectNoParameters(logs, ["age1"]);
    expect(logged(logs, "scheduled_backup_failed")).toMatchObject({
      serverId: id,
      error: { class: "DrizzleQueryError", query: expect.stringMatching(/^insert into "backup_keys"/), cause: { code: "SQLITE_CONSTRAINT" } },
    });
  });
});
