import { afterEach, describe, expect, it, vi } from "vitest";
import { HOUR, advance, emailedToken, expectError, logIn, mailbox, me, post, sessionCookie, signUp, uniqueEmail, PASSWORD } from "../helpers";

afterEach(() => vi.useRealTimers());

const NEW_PASSWORD = "a completely new passphrase";

describe("password reset", () => {
  it("answers known and unknown addresses identically, and mails each", async () => {
    const { email } = await signUp();
    const stranger = uniqueEmail("stranger");
    const known = await post("/api/auth/password-reset/request", { email });
    const unknown = await post("/api/auth/password-reset/request", { email: stranger });
    expect(known.status).toBe(202);
    expect(unknown.status).toBe(known.status);
    expect(await unknown.json()).toEqual(await known.json());

    expect((await mailbox(email))[0]!.subject).toBe("Reset your Berth password");
    const [notice] = await mailbox(stranger);
    expect(notice!.subject).toBe("Password reset requested");
    expect(notice!.links.some((link) => link.includes("token="))).toBe(false);
  });

  it("sets the new password, logs out every session and does not log in", async () => {
    const { email } = await signUp();
    const sessions = [await logIn(email), await logIn(email)];
    await post("/api/auth/password-reset/request", { email });
    const token = await emailedToken(email, "/reset-password");

    const response = await post("/api/auth/password-reset/confirm", { token, password: NEW_PASSWORD });
    expect(response.status).toBe(200);
    expect(sessionCookie(response)).toBeNull();
    for (const cookie of sessions) await expectError(await me(cookie), 401);

    await expectError(await post("/api/auth/login", { email, password: PASSWORD }), 401);
    await logIn(email, NEW_PASSWORD);
    expect((await mailbox(email))[0]!.subject).toBe("Your Berth password was changed");
  });

  it("works once", async () => {
    const { email } = await signUp();
    await post("/api/auth/password-reset/request", { email });
    const token = await emailedToken(email, "/reset-password");
    expect((await post("/api/auth/password-reset/confirm", { token, password: NEW_PASSWORD })).status).toBe(200);
    await expectError(await post("/api/auth/password-reset/confirm", { token, password: "yet another passphrase" }), 400, "invalid_token");
    await logIn(email, NEW_PASSWORD);
  });

  it("expires after one hour", async () => {
    const { email } = await signUp();
    await post("/api/auth/password-reset/request", { email });
    const token = await emailedToken(email, "/reset-password");
    advance(HOUR + 1000);
    await expectError(await post("/api/auth/password-reset/confirm", { token, password: NEW_PASSWORD }), 400, "invalid_token");
    await logIn(email, PASSWORD);
  });

  it("a newer request invalidates the earlier link", async () => {
    const { email } = await signUp();
    await post("/api/auth/password-reset/request", { email });
    const first = await emailedToken(email, "/reset-password");
    await post("/api/auth/password-reset/request", { email });
    const second = await emailedToken(email, "/reset-password");
    expect(second).not.toBe(first);
    await expectError(await post("/api/auth/password-reset/confirm", { token: first, password: NEW_PASSWORD }), 400, "invalid_token");
    expect((await post("/api/auth/password-reset/confirm", { token: second, password: NEW_PASSWORD })).status).toBe(200);
  });

  it("refuses a tampered token and a verification token used for a reset", async () => {
    const { email } = await signUp();
    const verification = await emailedToken(email, "/verify-email");
    await expectError(await post("/api/auth/password-reset/confirm", { token: verification, password: NEW_PASSWORD }), 400, "invalid_token");
    await post("/api/auth/password-reset/request", { email });
    const token = await emailedToken(email, "/reset-password");
    const tampered = `${token.slice(1)}A`;
    await expectError(await post("/api/auth/password-reset/confirm", { token: tampered, password: NEW_PASSWORD }), 400, "invalid_token");
  });

  it("validates the new password before spending the token", async () => {
    const { email } = await signUp();
    await post("/api/auth/password-reset/request", { email });
    const token = await emailedToken(email, "/reset-password");
    await expectError(await post("/api/auth/password-reset/confirm", { token, password: "short" }), 400, "validation_failed");
    expect((await post("/api/auth/password-reset/confirm", { token, password: NEW_PASSWORD })).status).toBe(200);
  });
});
