import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { hashPassword } from "../../../worker/auth/password";
import { SESSION_ABSOLUTE_LIFETIME_MS, SESSION_IDLE_TIMEOUT_MS } from "../../../worker/auth/policy";
import { sha256Hex } from "../../../worker/crypto/bytes";
import { SESSION_COOKIE } from "../../../worker/http/session";
import { DAY, HOUR, advance, call, expectError, logIn, me, post, sessionCookie, signUp, uniqueEmail, PASSWORD } from "../helpers";

afterEach(() => vi.useRealTimers());

describe("log-in", () => {
  it("sets a __Host- session cookie: Secure, HttpOnly, SameSite=Lax, Path=/", async () => {
    const { email } = await signUp();
    const response = await post("/api/auth/login", { email, password: PASSWORD });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { user: { email: string; emailVerified: boolean } };
    expect(body.user).toMatchObject({ email, emailVerified: false });
    const header = response.headers.getSetCookie().find((cookie) => cookie.startsWith(`${SESSION_COOKIE}=`))!;
    expect(SESSION_COOKIE.startsWith("__Host-")).toBe(true);
    expect(header).toMatch(/; Path=\/(;|$)/);
    expect(header).toMatch(/; Secure(;|$)/);
    expect(header).toMatch(/; HttpOnly(;|$)/);
    expect(header).toMatch(/; SameSite=Lax(;|$)/);
    expect(header).not.toMatch(/Domain=/i);
  });

  it("refuses a wrong password and an unknown email with the same answer", async () => {
    const { email } = await signUp();
    const wrong = await post("/api/auth/login", { email, password: "not the password" });
    const unknown = await post("/api/auth/login", { email: uniqueEmail(), password: "not the password" });
    expect(wrong.status).toBe(401);
    expect(unknown.status).toBe(401);
    expect(await wrong.json()).toEqual(await unknown.json());
    expect(sessionCookie(wrong)).toBeNull();
  });

  it("stores only a hash of the session secret", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    const [, secret] = cookie.split(".");
    const row = await env.DB.prepare("SELECT id FROM sessions WHERE id = ?")
      .bind(await sha256Hex(secret!))
      .first();
    expect(row).not.toBeNull();
    const plain = await env.DB.prepare("SELECT id FROM sessions WHERE id = ?").bind(secret!).first();
    expect(plain).toBeNull();
  });

  it("rehashes a password stored with older parameters, transparently", async () => {
    const { email } = await signUp();
    const old = await hashPassword(PASSWORD, { ln: 12, r: 8, p: 1 });
    await env.DB.prepare("UPDATE users SET password_hash = ? WHERE email = ?").bind(old, email).run();
    await logIn(email);
    const { password_hash } = (await env.DB.prepare("SELECT password_hash FROM users WHERE email = ?").bind(email).first<{ password_hash: string }>())!;
    expect(password_hash).toMatch(/^\$scrypt\$ln=15,r=8,p=3\$/);
    await logIn(email);
  });
});

describe("sessions", () => {
  it("authenticate /api/me; no or garbage cookies get a 401", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    const response = await me(cookie);
    expect(response.status).toBe(200);
    expect(((await response.json()) as { email: string }).email).toBe(email);
    await expectError(await me(null), 401, "unauthorized");
    await expectError(await me("garbage"), 401, "unauthorized");
  });

  it("reject a cookie whose secret, signature or header (with its key id) was altered", async () => {
    const { email } = await signUp();
    const [header, secret, signature] = (await logIn(email)).split(".") as [string, string, string];
    const otherSecret = (await logIn(email)).split(".")[1]!;
    const flip = (s: string) => s.slice(0, 5) + (s[5] === "A" ? "B" : "A") + s.slice(6);
    for (const forged of [
      `${header}.${otherSecret}.${signature}`,
      `${header}.${secret}.${flip(signature)}`,
      `${flip(header)}.${secret}.${signature}`,
      `${header}.${secret}`,
      `${header}.${secret}.${signature}.extra`,
    ]) {
      await expectError(await me(forged), 401);
    }
  });

  it("slide forward with use, up to an absolute cap", async () => {
    const { email } = await signUp();
    let cookie = await logIn(email);
    // Used every 6 days, the session outlives the 7-day idle timeout...
    for (let day = 6; day < 30; day += 6) {
      advance(6 * DAY);
      const response = await me(cookie);
      expect(response.status).toBe(200);
      cookie = sessionCookie(response) ?? cookie;
    }
    // ...but not the 30-day absolute lifetime.
    advance(SESSION_ABSOLUTE_LIFETIME_MS - 24 * DAY);
    await expectError(await me(cookie), 401);
  });

  it("expire after the idle timeout", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    advance(SESSION_IDLE_TIMEOUT_MS - HOUR);
    expect((await me(cookie)).status).toBe(200);
    advance(SESSION_IDLE_TIMEOUT_MS + HOUR);
    await expectError(await me(cookie), 401);
  });

  it("end on log-out, server-side, and the cookie is cleared", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    const other = await logIn(email);
    const response = await post("/api/auth/logout", undefined, { cookie });
    expect(response.status).toBe(204);
    expect(sessionCookie(response)).toBe("");
    await expectError(await me(cookie), 401);
    expect((await me(other)).status).toBe(200);
  });

  it("all end on log-out-everywhere", async () => {
    const { email } = await signUp();
    const cookies = [await logIn(email), await logIn(email), await logIn(email)];
    expect((await post("/api/auth/logout-all", undefined, { cookie: cookies[0] })).status).toBe(204);
    for (const cookie of cookies) await expectError(await me(cookie), 401);
    await expectError(await post("/api/auth/logout-all"), 401);
  });

  it("end for every device when the password is changed, except the one that changed it", async () => {
    const { email } = await signUp();
    const current = await logIn(email);
    const other = await logIn(email);
    const response = await post("/api/auth/password-change", { currentPassword: PASSWORD, newPassword: "a brand new passphrase" }, { cookie: current });
    expect(response.status).toBe(200);
    expect((await me(current)).status).toBe(200);
    await expectError(await me(other), 401);
    await logIn(email, "a brand new passphrase");
  });

  it("a password change needs the current password", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    await expectError(
      await post("/api/auth/password-change", { currentPassword: "wrong guess!", newPassword: "whatever it is" }, { cookie }),
      403,
      "invalid_password",
    );
    await logIn(email, PASSWORD);
  });

  it("a new log-in from the same browser replaces its old session", async () => {
    const { email } = await signUp();
    const first = await logIn(email);
    const second = await logIn(email, PASSWORD, { cookie: first });
    await expectError(await me(first), 401);
    expect((await me(second)).status).toBe(200);
  });

  it("pages see the session too", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    const account = await call("/account", { cookie });
    expect(account.status).toBe(200);
    expect(await account.text()).toContain(email);
    const anonymous = await call("/account");
    expect(anonymous.status).toBe(303);
    expect(anonymous.headers.get("location")).toBe("/login");
  });
});
