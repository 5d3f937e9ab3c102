import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { DAY, HOUR, advance, emailedToken, logIn, post, runCron, signUp } from "./helpers";

afterEach(() => vi.useRealTimers());

const count = async (table: string) => (await env.DB.prepare(`SELECT count(*) AS n FROM ${table}`).first<{ n: number }>())!.n;

describe("the scheduled handler", () => {
  it("creates the first signing key", async () => {
    await env.DB.prepare("DELETE FROM session_keys").run();
    await runCron();
    expect(await count("session_keys")).toBe(1);
  });

  it("prunes expired sessions, spent or expired tokens, and finished rate-limit windows", async () => {
    const { email } = await signUp();
    await logIn(email);
    await post("/api/auth/password-reset/request", { email });
    await post("/api/auth/verify-email", { token: await emailedToken(email, "/verify-email") });
    expect(await count("sessions")).toBeGreaterThan(0);
    expect(await count("rate_limit_windows")).toBeGreaterThan(0);

    await runCron();
    const afterFirst = await count("one_time_tokens");
    expect(afterFirst).toBe(1); // the reset token: unused, unexpired

    advance(31 * DAY + HOUR);
    await runCron();
    expect(await count("sessions")).toBe(0);
    expect(await count("one_time_tokens")).toBe(0);
    expect(await count("rate_limit_windows")).toBe(0);
  });
});
