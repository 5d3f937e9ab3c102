// Shared by the browser tests: launching Debian's Chromium, the dev mailbox, page navigation, and axe-core.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium, type Browser, type Locator, type Page } from "playwright-core";
import { expect } from "vitest";

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

export interface MailboxMessage {
  to: string;
  subject: string;
  text: string;
  links: string[];
  sentAt: string;
}

/** Newest first, as the dev mailbox lists it. */
export async function mailboxFor(baseUrl: string, email: string): Promise<MailboxMessage[]> {
  const response = await fetch(`${baseUrl}/dev/mailbox.json?to=${encodeURIComponent(email)}`);
  expect(response.status).toBe(200);
  const messages = (await response.json()) as MailboxMessage[];
  expect(Array.isArray(messages)).toBe(true);
  for (const message of messages) expect(message.to).toBe(email);
  return messages;
}

/** The newest link in the mailbox whose path is `path` and that carries a token. */
export async function newestTokenLink(baseUrl: string, email: string, path: string): Promise<string> {
  const messages = await mailboxFor(baseUrl, email);
  for (const message of messages) {
    const link = message.links.find((candidate) => {
      const url = new URL(candidate);
      return url.pathname === path && (url.searchParams.get("token") ?? "") !== "";
    });
    if (link) {
      expect(new URL(link).origin).toBe(new URL(baseUrl).origin);
      return link;
    }
  }
  throw new Error(`no ${path}?token= link in the mailbox of ${email}: ${JSON.stringify(messages)}`);
}

export function pathOf(page: Page): string {
  const url = new URL(page.url());
  return `${url.pathname}${url.search}`;
}

/** Presses a form's submit button and waits until the page it leads to (after any redirect) has loaded. */
export async function submit(page: Page, button: Locator): Promise<void> {
  await Promise.all([page.waitForEvent("framenavigated", (frame) => frame === page.mainFrame()), button.click()]);
  await page.waitForLoadState("load");
}

/** Logs in through the log-in page, as a person would. */
export async function logInAs(page: Page, baseUrl: string, account: { email: string; password: string }): Promise<void> {
  await page.goto(`${baseUrl}/login`);
  await page.getByLabel("Email", { exact: true }).fill(account.email);
  await page.getByLabel("Password", { exact: true }).fill(account.password);
  await submit(page, page.getByRole("main").getByRole("button", { name: "Log in", exact: true }));
}

/** Asserts where the browser is, showing the page's text when it is somewhere else (an error page, say). */
export async function expectAt(page: Page, path: string): Promise<void> {
  const where = pathOf(page);
  if (where !== path) {
    const text = (
      await page
        .locator("body")
        .innerText()
        .catch(() => "")
    ).slice(0, 500);
    expect.fail(`expected to be at ${path} but at ${where}; the page says: ${text}`);
  }
}

interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: string[] }[];
}

let axeSource: string | undefined;

/**
 * axe-core's serious and critical findings on the current page, WCAG 2.1 A/AA and best practice, one line each
 * (injected through the debugger protocol, which the page's CSP does not govern).
 */
export async function axeSeriousViolations(page: Page): Promise<string[]> {
  axeSource ??= readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const axe = (globalThis as unknown as { axe: { run: (options: unknown) => Promise<{ violations: AxeViolation[] }> } }).axe;
    return (await axe.run({ runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] } })).violations;
  });
  return violations
    .filter((violation) => violation.impact === "serious" || violation.impact === "critical")
    .map((violation) => `${violation.id} (${violation.impact}): ${violation.help} at ${violation.nodes.map((node) => node.target.join(" ")).join(", ")}`);
}

/**
 * axe for a page of a context without JavaScript: axe runs as a script, and such a page runs none (an
 * evaluation never settles). Its HTML is checked as loaded in a page where scripts run, with the
 * product's own scripts blocked.
 */
export async function axeSeriousViolationsWithoutScripts(browser: Browser, page: Page): Promise<string[]> {
  const url = page.url();
  const html = await page.content();
  const checker = await browser.newPage();
  try {
    await checker.route(
      (candidate) => candidate.href === url,
      (route) => route.fulfill({ body: html, contentType: "text/html; charset=utf-8" }),
    );
    await checker.route("**/assets/*.js", (route) => route.abort());
    await checker.goto(url);
    return await axeSeriousViolations(checker);
  } finally {
    await checker.close();
  }
}
