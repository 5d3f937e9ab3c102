import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { sha256Hex } from "../../../worker/crypto/bytes";
import { DAY, advance, emailedToken, expectError, logIn, mailbox, me, post, sessionCookie, signUp, uniqueEmail, PASSWORD } from "../helpers";

afterEach(() => vi.useRealTimers());

async function emailVerified(email: string): Promise<boolean> {
  const body = (await (await me(await logIn(email))).json()) as { emailVerified: boolean };
  return body.emailVerified;
}

describe("sign-up", () => {
  it("creates an unverified account that can log in, and mails a verification link", async () => {
    const email = uniqueEmail();
    const response = await post("/api/auth/signup", { email, password: PASSWORD });
    expect(response.status).toBe(202);
    expect(sessionCookie(response)).toBeNull();

    const [mail] = await mailbox(email);
    expect(mail!.subject).toBe("Confirm your email address");
    expect(mail!.links[0]).toMatch(/^http:\/\/localhost\/verify-email\?token=[A-Za-z0-9_-]{43}$/);
    expect(mail!.text).toContain(mail!.links[0]);
    expect(await emailVerified(email)).toBe(false);
  });

  it("stores the email in canonical form", async () => {
    const local = `MiXeD-${crypto.randomUUID()}`;
    await signUp(`${local}@Example.COM`);
    expect((await mailbox(`${local.toLowerCase()}@example.com`)).length).toBe(1);
    await logIn(`${local.toLowerCase()}@example.com`);
  });

  it("answers an existing address exactly like a new one, and tells the owner instead", async () => {
    const first = await post("/api/auth/signup", { email: uniqueEmail(), password: PASSWORD });
    const { email } = await signUp();
    const again = await post("/api/auth/signup", { email, password: "a different password" });
    expect(again.status).toBe(first.status);
    expect(await again.json()).toEqual(await first.json());
    expect(sessionCookie(again)).toBeNull();

    const [notice] = await mailbox(email);
    expect(notice!.subject).toBe("You already have a Berth account");
    // The original password still works; the second sign-up changed nothing.
    await logIn(email, PASSWORD);
    await expectError(await post("/api/auth/login", { email, password: "a different password" }), 401);
  });

  it("stores only the SHA-256 of the verification token", async () => {
    const { email } = await signUp();
    const token = await emailedToken(email, "/verify-email");
    const rows = await env.DB.prepare("SELECT id FROM one_time_tokens").all<{ id: string }>();
    const ids = rows.results.map((row) => row.id);
    expect(ids).toContain(await sha256Hex(token));
    expect(ids).not.toContain(token);
  });
});

describe("email verification", () => {
  it("verifies once; the same link cannot be used again", async () => {
    const { email } = await signUp();
    const token = await emailedToken(email, "/verify-email");
    const response = await post("/api/auth/verify-email", { token });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ verified: true });
    expect(await emailVerified(email)).toBe(true);
    await expectError(await post("/api/auth/verify-email", { token }), 400, "invalid_token");
  });

  it("refuses a tampered or unknown token", async () => {
    const { email } = await signUp();
    const token = await emailedToken(email, "/verify-email");
    const flipped = token.slice(0, -1) + (token.endsWith("A") ? "B" : "A");
    await expectError(await post("/api/auth/verify-email", { token: flipped }), 400, "invalid_token");
    await expectError(await post("/api/auth/verify-email", { token: "x".repeat(43) }), 400, "invalid_token");
    expect(await emailVerified(email)).toBe(false);
  });

  it("expires after 24 hours", async () => {
    const { email } = await signUp();
    const token = await emailedToken(email, "/verify-email");
    advance(DAY + 1000);
    await expectError(await post("/api/auth/verify-email", { token }), 400, "invalid_token");
  });

  it("resend invalidates the earlier link and needs a session", async () => {
    const { email } = await signUp();
    const first = await emailedToken(email, "/verify-email");
    await expectError(await post("/api/auth/verify-email/resend"), 401, "unauthorized");

    const cookie = await logIn(email);
    const resend = await post("/api/auth/verify-email/resend", undefined, { cookie });
    expect(resend.status).toBe(202);
    const second = await emailedToken(email, "/verify-email");
    expect(second).not.toBe(first);

    await expectError(await post("/api/auth/verify-email", { token: first }), 400, "invalid_token");
    expect((await post("/api/auth/verify-email", { token: second })).status).toBe(200);
    await expectError(await post("/api/auth/verify-email/resend", undefined, { cookie }), 409, "already_verified");
  });
});
