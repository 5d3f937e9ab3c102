import { describe, expect, it } from "vitest";
import { SESSION_COOKIE } from "../../../worker/http/session";
import { call, emailedToken, mailbox, me, sessionCookie, signUp, uniqueEmail, PASSWORD } from "../helpers";

const formHeaders = { "content-type": "application/x-www-form-urlencoded" };

function submit(path: string, fields: Record<string, string>, cookie?: string) {
  return call(path, { method: "POST", rawBody: new URLSearchParams(fields), headers: formHeaders, cookie: cookie ?? null });
}

describe("pages", () => {
  it.each(["/", "/signup", "/login", "/forgot-password", "/reset-password?token=x", "/verify-email?token=x", "/confirm-email-change?token=x"])(
    "%s renders as HTML with labelled fields",
    async (path) => {
      const response = await call(path);
      expect(response.status).toBe(200);
      expect(response.headers.get("content-type")).toMatch(/^text\/html/);
      const html = await response.text();
      expect(html.startsWith("<!doctype html>")).toBe(true);
      for (const [, id] of html.matchAll(/<input id="([^"]+)"/g)) expect(html).toContain(`<label for="${id}">`);
    },
  );

  it("sign up, confirm the email and log in without JavaScript", async () => {
    const email = uniqueEmail("form");
    const signup = await submit("/signup", { email, password: PASSWORD });
    expect(signup.status).toBe(303);
    expect(signup.headers.get("location")).toBe("/login?notice=signed_up");

    const token = await emailedToken(email, "/verify-email");
    const confirmPage = await call(`/verify-email?token=${token}`);
    expect(await confirmPage.text()).toContain(`value="${token}"`);
    // Opening the link spends nothing; only the button does.
    const confirmed = await submit("/verify-email", { token });
    expect(confirmed.status).toBe(200);
    expect(await confirmed.text()).toContain("Your email address is confirmed.");

    const login = await submit("/login", { email, password: PASSWORD });
    expect(login.status).toBe(303);
    expect(login.headers.get("location")).toBe("/account");
    const cookie = sessionCookie(login)!;
    const account = await (await call("/account", { cookie })).text();
    expect(account).toContain(email);
    expect(account).toContain("verified");
  });

  it("a failed log-in re-renders the form with the reason and the email kept", async () => {
    const { email } = await signUp();
    const response = await submit("/login", { email, password: "wrong password" });
    expect(response.status).toBe(401);
    const html = await response.text();
    expect(html).toContain("Email or password is incorrect.");
    expect(html).toContain(`value="${email}"`);
    expect(sessionCookie(response)).toBeNull();
  });

  it("forgot and reset the password through the forms", async () => {
    const { email } = await signUp();
    const request = await submit("/forgot-password", { email });
    expect(request.headers.get("location")).toBe("/forgot-password?notice=reset_sent");
    const token = await emailedToken(email, "/reset-password");
    const reset = await submit("/reset-password", { token, password: "my new passphrase" });
    expect(reset.status).toBe(303);
    expect(reset.headers.get("location")).toBe("/login?notice=password_reset");
    expect((await submit("/login", { email, password: "my new passphrase" })).status).toBe(303);
  });

  it("account settings: change email, change password, log out, log out everywhere", async () => {
    const { email } = await signUp();
    const login = await submit("/login", { email, password: PASSWORD });
    const cookie = sessionCookie(login)!;
    const other = sessionCookie(await submit("/login", { email, password: PASSWORD }))!;

    const newEmail = uniqueEmail("moved");
    const change = await submit("/account/email", { newEmail, password: PASSWORD }, cookie);
    expect(change.headers.get("location")).toBe("/account?notice=email_change_sent");
    expect((await mailbox(newEmail))[0]!.subject).toBe("Confirm your new email address");

    const password = await submit("/account/password", { currentPassword: PASSWORD, newPassword: "another passphrase" }, cookie);
    expect(password.headers.get("location")).toBe("/account?notice=password_changed");
    expect((await me(other)).status).toBe(401);

    const third = sessionCookie(await submit("/login", { email, password: "another passphrase" }))!;
    const logout = await submit("/logout", {}, cookie);
    expect(logout.headers.get("location")).toBe("/login?notice=logged_out");
    expect(logout.headers.getSetCookie().some((c) => c.startsWith(`${SESSION_COOKIE}=;`))).toBe(true);
    expect((await me(cookie)).status).toBe(401);
    expect((await me(third)).status).toBe(200);

    const fourth = sessionCookie(await submit("/login", { email, password: "another passphrase" }))!;
    expect((await submit("/logout-all", {}, fourth)).headers.get("location")).toBe("/login?notice=logged_out_everywhere");
    expect((await me(third)).status).toBe(401);
  });

  it("an unverified account is told so and can ask for a new link", async () => {
    const { email } = await signUp();
    const cookie = sessionCookie(await submit("/login", { email, password: PASSWORD }))!;
    expect(await (await call("/account", { cookie })).text()).toContain("not verified");
    const resend = await submit("/account/resend-verification", {}, cookie);
    expect(resend.headers.get("location")).toBe("/account?notice=verification_sent");
    expect((await mailbox(email)).filter((mail) => mail.subject === "Confirm your email address")).toHaveLength(2);
  });

  it("an unknown address is an HTML 404 for browsers and a JSON 404 for programs", async () => {
    const page = await call("/no/such/page", { headers: { accept: "text/html,application/xhtml+xml" } });
    expect(page.status).toBe(404);
    expect(await page.text()).toContain("Page not found");
    const api = await call("/api/no/such/route", { headers: { accept: "text/html" } });
    expect(api.status).toBe(404);
    expect(await api.json()).toEqual({ error: { code: "not_found", message: "Not found." } });
  });

  it("escapes what users type", async () => {
    const response = await submit("/login", { email: "<script>alert(1)</script>@example.com", password: "x" });
    const html = await response.text();
    expect(html).not.toContain("<script>alert(1)</script>");
    expect(html).toContain("&lt;script&gt;");
  });
});
