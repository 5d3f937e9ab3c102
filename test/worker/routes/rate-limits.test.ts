import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RATE_LIMIT_RULES } from "../../../worker/auth/rate-limit";
import { MINUTE, advance, call, expectError, logIn, post, randomIp, setNow, signUp, uniqueEmail, PASSWORD } from "../helpers";

// Limits count in fixed windows: the Worker's clock stands still unless a test moves it, so no test's attempts straddle two windows.
beforeEach(() => setNow(Date.now()));
afterEach(() => vi.useRealTimers());

async function expect429(response: Response) {
  await expectError(response, 429, "rate_limited");
  const retryAfter = Number(response.headers.get("retry-after"));
  expect(Number.isInteger(retryAfter)).toBe(true);
  expect(retryAfter).toBeGreaterThan(0);
  return retryAfter;
}

describe("rate limits", () => {
  it("lock an account for one client after 10 failed log-ins in 15 minutes, then let it go", async () => {
    const { email } = await signUp();
    const ip = randomIp();
    for (let i = 0; i < RATE_LIMIT_RULES.login_account_client.limit; i++) {
      await expectError(await post("/api/auth/login", { email, password: `wrong guess ${i}` }, { ip }), 401);
    }
    const retryAfter = await expect429(await post("/api/auth/login", { email, password: PASSWORD }, { ip }));
    expect(retryAfter).toBeLessThanOrEqual(15 * 60);
    advance(retryAfter * 1000 + 1000);
    await logIn(email, PASSWORD, { ip });
  });

  it("an attacker who exhausts an account's attempts from one client does not lock its owner out elsewhere", async () => {
    const { email } = await signUp();
    const attacker = randomIp();
    for (let i = 0; i < RATE_LIMIT_RULES.login_account_client.limit; i++) {
      await expectError(await post("/api/auth/login", { email, password: `wrong guess ${i}` }, { ip: attacker }), 401);
    }
    await expect429(await post("/api/auth/login", { email, password: "another guess" }, { ip: attacker }));
    await logIn(email, PASSWORD, { ip: randomIp() });
  });

  it("stop distributed guessing with a much larger account-wide ceiling", async () => {
    expect(RATE_LIMIT_RULES.login_account.limit).toBeGreaterThanOrEqual(10 * RATE_LIMIT_RULES.login_account_client.limit);
    const { email } = await signUp();
    const env = { RATE_LIMITS: JSON.stringify({ login_account: { limit: 3 } }) };
    for (let i = 0; i < 3; i++) await expectError(await post("/api/auth/login", { email, password: `wrong guess ${i}` }, { env }), 401);
    await expect429(await post("/api/auth/login", { email, password: PASSWORD }, { env }));
  });

  it("count an IPv6 client as its /64 and an IPv4-mapped address as its IPv4", async () => {
    const { email } = await signUp();
    const [, a, b] = randomIp().split(".");
    const prefix = `2001:db8:${a}:${b}`;
    for (let i = 0; i < RATE_LIMIT_RULES.login_account_client.limit; i++) {
      await expectError(await post("/api/auth/login", { email, password: `wrong guess ${i}` }, { ip: `${prefix}::${i + 1}` }), 401);
    }
    await expect429(await post("/api/auth/login", { email, password: PASSWORD }, { ip: `${prefix}:ffff:1:2:3` }));
    await logIn(email, PASSWORD, { ip: `${prefix.replace(/^2001:db8/, "2001:db9")}::1` });

    const other = await signUp();
    const ipv4 = randomIp();
    for (let i = 0; i < RATE_LIMIT_RULES.login_account_client.limit; i++) {
      await expectError(await post("/api/auth/login", { email: other.email, password: `wrong guess ${i}` }, { ip: ipv4 }), 401);
    }
    await expect429(await post("/api/auth/login", { email: other.email, password: PASSWORD }, { ip: `::ffff:${ipv4}` }));
  });

  it("count unknown accounts the same way (no enumeration through 429s)", async () => {
    const email = uniqueEmail("ghost");
    const ip = randomIp();
    for (let i = 0; i < RATE_LIMIT_RULES.login_account_client.limit; i++) {
      await expectError(await post("/api/auth/login", { email, password: `wrong guess ${i}` }, { ip }), 401);
    }
    await expect429(await post("/api/auth/login", { email, password: "wrong again" }, { ip }));
  });

  it("a successful log-in clears the account's failure count", async () => {
    const { email } = await signUp();
    const ip = randomIp();
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < RATE_LIMIT_RULES.login_account_client.limit - 1; i++) {
        await expectError(await post("/api/auth/login", { email, password: `wrong guess ${i}` }, { ip }), 401);
      }
      await logIn(email, PASSWORD, { ip });
    }
  });

  it("guessing at an account's log-in, even past its ceiling, does not stop its owner's password change or deletion", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    const env = { RATE_LIMITS: JSON.stringify({ login_account: { limit: 2 } }) };
    for (let i = 0; i < 2; i++) await expectError(await post("/api/auth/login", { email, password: `wrong guess ${i}` }, { env }), 401);
    await expect429(await post("/api/auth/login", { email, password: PASSWORD }, { env }));
    const changed = await post("/api/auth/password-change", { currentPassword: PASSWORD, newPassword: "a whole new passphrase" }, { cookie, env });
    expect(changed.status).toBe(200);
    expect((await call("/api/me", { method: "DELETE", body: { password: "a whole new passphrase" }, cookie, env })).status).toBe(202);
  });

  it("limit log-ins per IP", async () => {
    const ip = randomIp();
    const env = { RATE_LIMITS: JSON.stringify({ login_ip: { limit: 3 } }) };
    for (let i = 0; i < 3; i++) {
      await expectError(await post("/api/auth/login", { email: uniqueEmail(), password: "whatever123" }, { ip, env }), 401);
    }
    await expect429(await post("/api/auth/login", { email: uniqueEmail(), password: "whatever123" }, { ip, env }));
    // Another address is unaffected.
    await expectError(await post("/api/auth/login", { email: uniqueEmail(), password: "whatever123" }, { env }), 401);
  });

  it("limit sign-ups per IP and per address", async () => {
    const ip = randomIp();
    const env = { RATE_LIMITS: JSON.stringify({ signup_ip: { limit: 2 } }) };
    for (let i = 0; i < 2; i++) {
      expect((await post("/api/auth/signup", { email: uniqueEmail(), password: PASSWORD }, { ip, env })).status).toBe(202);
    }
    await expect429(await post("/api/auth/signup", { email: uniqueEmail(), password: PASSWORD }, { ip, env }));

    const email = uniqueEmail();
    for (let i = 0; i < RATE_LIMIT_RULES.signup_email.limit; i++) {
      expect((await post("/api/auth/signup", { email, password: PASSWORD })).status).toBe(202);
    }
    await expect429(await post("/api/auth/signup", { email, password: PASSWORD }));
  });

  it("limit password-reset requests per address and client, per address, and per IP", async () => {
    const { email } = await signUp();
    const attacker = randomIp();
    for (let i = 0; i < RATE_LIMIT_RULES.password_reset_email_client.limit; i++) {
      expect((await post("/api/auth/password-reset/request", { email }, { ip: attacker })).status).toBe(202);
    }
    await expect429(await post("/api/auth/password-reset/request", { email }, { ip: attacker }));
    // The owner, elsewhere, still gets a link.
    expect((await post("/api/auth/password-reset/request", { email })).status).toBe(202);

    expect(RATE_LIMIT_RULES.password_reset_email.limit).toBeGreaterThanOrEqual(5 * RATE_LIMIT_RULES.password_reset_email_client.limit);
    const ceiling = { RATE_LIMITS: JSON.stringify({ password_reset_email: { limit: 2 } }) };
    const flooded = (await signUp()).email;
    for (let i = 0; i < 2; i++) expect((await post("/api/auth/password-reset/request", { email: flooded }, { env: ceiling })).status).toBe(202);
    await expect429(await post("/api/auth/password-reset/request", { email: flooded }, { env: ceiling }));

    const ip = randomIp();
    const env = { RATE_LIMITS: JSON.stringify({ password_reset_ip: { limit: 1 } }) };
    expect((await post("/api/auth/password-reset/request", { email: uniqueEmail() }, { ip, env })).status).toBe(202);
    await expect429(await post("/api/auth/password-reset/request", { email: uniqueEmail() }, { ip, env }));
  });

  it("limit verification resends per account", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    for (let i = 0; i < RATE_LIMIT_RULES.verify_resend_account.limit; i++) {
      expect((await post("/api/auth/verify-email/resend", undefined, { cookie })).status).toBe(202);
    }
    await expect429(await post("/api/auth/verify-email/resend", undefined, { cookie }));
    advance(61 * MINUTE);
    expect((await post("/api/auth/verify-email/resend", undefined, { cookie })).status).toBe(202);
  });

  it("show the limit on pages too, with Retry-After", async () => {
    const ip = randomIp();
    const env = { RATE_LIMITS: JSON.stringify({ login_ip: { limit: 1 } }) };
    const form = () => new URLSearchParams({ email: uniqueEmail(), password: "whatever123" });
    const headers = { "content-type": "application/x-www-form-urlencoded" };
    expect((await call("/login", { method: "POST", rawBody: form(), headers, ip, env })).status).toBe(401);
    const limited = await call("/login", { method: "POST", rawBody: form(), headers, ip, env });
    expect(limited.status).toBe(429);
    expect(limited.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(await limited.text()).toContain("Too many attempts");
  });
});
