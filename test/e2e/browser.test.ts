// The whole account journey through the server-rendered pages in headless
// Chromium against `npm run dev`: sign up, confirm the email from the dev
// mailbox, log in and out, reset the password, log in with the new one.
import { randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, ConsoleMessage, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it, onTestFailed } from "vitest";
import { expectAt, launchChromium, newestTokenLink, submit } from "./browser-helpers";

const baseUrl = inject("devBaseUrl");
const artifacts = fileURLToPath(new URL("../../test-results/e2e/", import.meta.url));
const SESSION_COOKIE = "__Host-berth_session";

describe("account journey in a real browser", () => {
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const problems: string[] = [];

  const shot = (name: string) => page.screenshot({ path: `${artifacts}${name}.png`, fullPage: true });

  async function logIn(email: string, password: string) {
    await page.goto(`${baseUrl}/login`);
    await page.getByLabel("Email", { exact: true }).fill(email);
    await page.getByLabel("Password", { exact: true }).fill(password);
    await submit(page, page.getByRole("main").getByRole("button", { name: "Log in", exact: true }));
  }

  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    browser = await launchChromium();
    context = await browser.newContext();
    page = await context.newPage();
    // CSP violations, failed subresources and script errors all end up here.
    page.on("console", (message: ConsoleMessage) => {
      if (message.type() !== "error" && message.type() !== "warning") return;
      const source = message.location().url;
      const text = message.text();
      // Expected: the 401 page of a refused log-in.
      if (/status of 401/.test(text) && new URL(source || page.url()).pathname === "/login") return;
      problems.push(`console.${message.type()} at ${page.url()} (${source}): ${text}`);
    });
    page.on("pageerror", (error) => problems.push(`pageerror at ${page.url()}: ${error.message}`));
    page.on("requestfailed", (request) => problems.push(`request failed: ${request.method()} ${request.url()}: ${request.failure()?.errorText}`));
    page.on("response", (response) => {
      // The only non-2xx/3xx pages this journey should see are the expected 401 of a wrong password.
      if (response.status() >= 400 && !(response.status() === 401 && new URL(response.url()).pathname === "/login")) {
        problems.push(`HTTP ${response.status()} for ${response.request().method()} ${response.url()}`);
      }
    });
  });

  afterAll(async () => {
    await browser?.close();
  });

  it("signs up, confirms, logs in and out, resets the password", async () => {
    onTestFailed(async () => {
      await shot("failure").catch(() => undefined);
    });
    const email = `browser-${randomUUID()}@example.com`;
    const oldPassword = `old pass ${randomUUID()}`;
    const newPassword = `new pass ${randomUUID()}`;

    // Sign up.
    await page.goto(`${baseUrl}/signup`);
    await expect(page.title()).resolves.toBe("Sign up · Berth");
    // The stylesheet is same-origin and must have applied under the CSP.
    // (Page-side code as strings: this project's TypeScript has no DOM types.)
    const stylesheetLoaded = await page.evaluate<boolean>("document.styleSheets.length > 0 && document.styleSheets[0].cssRules.length > 0");
    expect(stylesheetLoaded).toBe(true);
    await page.getByLabel("Email", { exact: true }).fill(email);
    await page.getByLabel("Password", { exact: true }).fill(oldPassword);
    await submit(page, page.getByRole("button", { name: "Sign up", exact: true }));
    await expectAt(page, "/login?notice=signed_up");
    await expect(page.getByRole("status").textContent()).resolves.toContain("Check your inbox");
    await shot("01-signed-up");

    // Confirm the address from the emailed link.
    const verifyLink = await newestTokenLink(baseUrl, email, "/verify-email");
    await page.goto(verifyLink);
    await expect(page.getByRole("heading", { level: 1 }).textContent()).resolves.toBe("Confirm your email address");
    await submit(page, page.getByRole("button", { name: "Confirm my email" }));
    await expectAt(page, "/verify-email");
    await expect(page.getByRole("heading", { level: 1 }).textContent()).resolves.toBe("Email confirmed");
    await expect(page.getByRole("status").textContent()).resolves.toBe("Your email address is confirmed.");
    await shot("02-email-confirmed");

    // Log in.
    await logIn(email, oldPassword);
    await expectAt(page, "/account");
    await expect(page.getByRole("heading", { level: 1 }).textContent()).resolves.toBe("Your account");
    await expect(page.getByText(email, { exact: true }).isVisible()).resolves.toBe(true);
    await expect(page.getByText("verified", { exact: true }).isVisible()).resolves.toBe(true);
    await expect(page.getByText("not verified", { exact: true }).count()).resolves.toBe(0);
    await shot("03-account-verified");

    // The session cookie: host-only, secure, httpOnly, SameSite=Lax, invisible to scripts.
    const cookies = await context.cookies(baseUrl);
    expect(cookies.map((cookie) => cookie.name)).toEqual([SESSION_COOKIE]);
    const session = cookies[0]!;
    expect(session).toMatchObject({ name: SESSION_COOKIE, path: "/", httpOnly: true, secure: true, sameSite: "Lax" });
    expect(session.domain).toBe(new URL(baseUrl).hostname);
    expect(session.expires).toBeGreaterThan(Date.now() / 1000);
    await expect(page.evaluate<string>("document.cookie")).resolves.not.toContain(SESSION_COOKIE);

    // Log out from the header.
    await submit(page, page.getByRole("navigation", { name: "Account" }).getByRole("button", { name: "Log out", exact: true }));
    await expectAt(page, "/login?notice=logged_out");
    await expect(page.getByRole("status").textContent()).resolves.toBe("You are logged out.");
    expect((await context.cookies(baseUrl)).filter((cookie) => cookie.name === SESSION_COOKIE)).toEqual([]);
    await expect(page.getByRole("navigation", { name: "Account" }).getByRole("link", { name: "Log in" }).isVisible()).resolves.toBe(true);

    // The account page is gone with the session.
    await page.goto(`${baseUrl}/account`);
    await expectAt(page, "/login");
    await expect(page.getByRole("heading", { level: 1 }).textContent()).resolves.toBe("Log in");

    // Forgot password.
    await page.goto(`${baseUrl}/forgot-password`);
    await page.getByLabel("Email", { exact: true }).fill(email);
    await submit(page, page.getByRole("button", { name: "Send reset link" }));
    await expectAt(page, "/forgot-password?notice=reset_sent");
    await expect(page.getByRole("status").textContent()).resolves.toContain("we sent it a link to reset the password");
    await shot("04-reset-sent");

    // Reset it from the newest emailed link.
    const resetLink = await newestTokenLink(baseUrl, email, "/reset-password");
    await page.goto(resetLink);
    await expect(page.getByRole("heading", { level: 1 }).textContent()).resolves.toBe("Choose a new password");
    await page.getByLabel("New password", { exact: true }).fill(newPassword);
    await submit(page, page.getByRole("button", { name: "Set new password" }));
    await expectAt(page, "/login?notice=password_reset");
    await expect(page.getByRole("status").textContent()).resolves.toContain("Your password was changed");
    await shot("05-password-reset");

    // The old password no longer works: the form comes back with the error.
    await logIn(email, oldPassword);
    await expectAt(page, "/login");
    await expect(page.getByRole("alert").textContent()).resolves.toBe("Email or password is incorrect.");
    await expect(page.getByLabel("Email", { exact: true }).inputValue()).resolves.toBe(email);
    expect((await context.cookies(baseUrl)).filter((cookie) => cookie.name === SESSION_COOKIE)).toEqual([]);
    await shot("06-old-password-refused");

    // The new one does.
    await logIn(email, newPassword);
    await expectAt(page, "/account");
    await expect(page.getByText(email, { exact: true }).isVisible()).resolves.toBe(true);
    await expect(page.getByText("verified", { exact: true }).isVisible()).resolves.toBe(true);
    expect((await context.cookies(baseUrl)).map((cookie) => cookie.name)).toEqual([SESSION_COOKIE]);
    await shot("07-logged-in-with-new-password");

    // Nothing along the way tripped the CSP, threw, or failed to load.
    expect(problems).toEqual([]);
  });
});
