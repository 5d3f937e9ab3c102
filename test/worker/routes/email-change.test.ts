import { afterEach, describe, expect, it, vi } from "vitest";
import { HOUR, advance, emailedToken, expectError, logIn, mailbox, me, post, sessionCookie, signUp, uniqueEmail, PASSWORD } from "../helpers";

afterEach(() => vi.useRealTimers());

async function requestChange(cookie: string, newEmail: string, password = PASSWORD) {
  return post("/api/auth/email-change/request", { newEmail, password }, { cookie });
}

describe("email change", () => {
  it("needs a session and the current password", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    await expectError(await post("/api/auth/email-change/request", { newEmail: uniqueEmail(), password: PASSWORD }), 401);
    await expectError(await requestChange(cookie, uniqueEmail(), "not my password"), 403, "invalid_password");
    await expectError(await requestChange(cookie, email), 400, "same_email");
  });

  it("confirms through the NEW address, tells the OLD one, and logs out every session", async () => {
    const { email } = await signUp();
    const cookies = [await logIn(email), await logIn(email)];
    const newEmail = uniqueEmail("moved");
    expect((await requestChange(cookies[0]!, newEmail)).status).toBe(202);

    // Nothing changes until the link sent to the new address is used.
    expect(((await (await me(cookies[0]!)).json()) as { email: string }).email).toBe(email);
    expect((await mailbox(email))[0]!.subject).toBe("Email change requested");
    expect((await mailbox(email)).some((mail) => mail.links.some((link) => link.includes("confirm-email-change")))).toBe(false);

    const token = await emailedToken(newEmail, "/confirm-email-change");
    const confirm = await post("/api/auth/email-change/confirm", { token });
    expect(confirm.status).toBe(200);
    expect(sessionCookie(confirm)).toBe("");

    for (const cookie of cookies) await expectError(await me(cookie), 401);
    const [changed] = await mailbox(email);
    expect(changed!.subject).toBe("Your Berth email address was changed");
    expect(changed!.text).toContain(newEmail);

    await expectError(await post("/api/auth/login", { email, password: PASSWORD }), 401);
    const body = (await (await me(await logIn(newEmail))).json()) as { email: string; emailVerified: boolean };
    expect(body).toMatchObject({ email: newEmail, emailVerified: true });
  });

  it("links work once and expire after an hour", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    const newEmail = uniqueEmail("moved");
    await requestChange(cookie, newEmail);
    const stale = await emailedToken(newEmail, "/confirm-email-change");
    advance(HOUR + 1000);
    await expectError(await post("/api/auth/email-change/confirm", { token: stale }), 400, "invalid_token");

    const fresh = await logIn(email);
    await requestChange(fresh, newEmail);
    const token = await emailedToken(newEmail, "/confirm-email-change");
    expect((await post("/api/auth/email-change/confirm", { token })).status).toBe(200);
    await expectError(await post("/api/auth/email-change/confirm", { token }), 400, "invalid_token");
  });

  it("does not reveal that the new address has an account; that address gets a note, not a link", async () => {
    const owner = await signUp();
    const other = await signUp();
    const cookie = await logIn(owner.email);
    const free = await requestChange(cookie, uniqueEmail("free"));
    const taken = await requestChange(cookie, other.email);
    expect(taken.status).toBe(free.status);
    expect(await taken.json()).toEqual(await free.json());
    const [note] = await mailbox(other.email);
    expect(note!.subject).toBe("Email change not possible");
    expect(note!.links.some((link) => link.includes("token="))).toBe(false);
  });

  it("a password reset cancels a pending email change", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    const newEmail = uniqueEmail("moved");
    await requestChange(cookie, newEmail);
    const token = await emailedToken(newEmail, "/confirm-email-change");
    await post("/api/auth/password-reset/request", { email });
    const reset = await emailedToken(email, "/reset-password");
    await post("/api/auth/password-reset/confirm", { token: reset, password: "a completely new passphrase" });
    await expectError(await post("/api/auth/email-change/confirm", { token }), 400, "invalid_token");
  });

  it("refuses to confirm onto an address that was taken in the meantime", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    const newEmail = uniqueEmail("contested");
    await requestChange(cookie, newEmail);
    const token = await emailedToken(newEmail, "/confirm-email-change");
    await signUp(newEmail);
    await expectError(await post("/api/auth/email-change/confirm", { token }), 409, "email_taken");
    expect((await me(cookie)).status).toBe(200);
  });
});
