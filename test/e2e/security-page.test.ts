// The public security page in headless Chromium without JavaScript, against `npm run dev`: reached
// from the home page and from a page's footer, each promise linked to how it is kept, a logged-in
// customer's own homeservers listed; every page passes axe-core.
import { randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { SECURITY_SECTIONS } from "../../worker/pages/security-statements.ts";
import { axeSeriousViolationsWithoutScripts, expectAt, launchChromium, logInAs, submit } from "./browser-helpers";

const baseUrl = inject("devBaseUrl");
const artifacts = fileURLToPath(new URL("../../test-results/e2e/", import.meta.url));

describe("the security page in a real browser, without JavaScript", () => {
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];

  const accessibilityProblems = () => axeSeriousViolationsWithoutScripts(browser, page);
  const shot = (step: string) => page.screenshot({ path: `${artifacts}security-${step}.png`, fullPage: true });

  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    browser = await launchChromium();
    page = await (await browser.newContext({ javaScriptEnabled: false })).newPage();
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console.error at ${page.url()}: ${message.text()}`);
    });
  });

  afterAll(async () => {
    await browser?.close();
  });

  it("is reached from the home page and from the footer, and links each promise to how it is kept", async () => {
    await page.goto(`${baseUrl}/`);
    await submit(page, page.getByRole("link", { name: "Read every promise on our security page" }));
    await expectAt(page, "/security");
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe("Security");
    expect(await page.getByRole("heading", { level: 2 }).allInnerTexts()).toEqual(SECURITY_SECTIONS.map((section) => section.title));
    expect(await accessibilityProblems()).toEqual([]);
    await shot("01-page");

    const backups = page.locator("#check-backups");
    expect(await backups.innerText()).toContain("backed up every day");
    expect(await backups.locator("code").innerText()).toBe("backups");
    await submit(page, backups.getByRole("link", { name: /^How we keep it/ }));
    await expectAt(page, "/security/how/backups");
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe("Daily encrypted backups, and restores");
    expect(await page.getByText("docs/decisions.md").count()).toBeGreaterThan(0);
    expect(await accessibilityProblems()).toEqual([]);
    await shot("02-how-backups");

    await submit(page, page.getByRole("link", { name: /backed up every day/ }));
    await expectAt(page, "/security");
    expect(new URL(page.url()).hash).toBe("#check-backups");

    await page.goto(`${baseUrl}/login`);
    await submit(page, page.getByRole("contentinfo").getByRole("link", { name: "Security" }));
    await expectAt(page, "/security");
    expect(problems).toEqual([]);
  });

  it("lists a logged-in customer's homeservers: none yet, said so", async () => {
    const account = { email: `security-${randomUUID()}@example.com`, password: `pass ${randomUUID()}` };
    const signup = await fetch(`${baseUrl}/api/auth/signup`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(account),
    });
    expect(signup.status).toBe(202);
    await logInAs(page, baseUrl, account);
    await page.goto(`${baseUrl}/security`);
    const yours = page.getByRole("region", { name: "Your homeservers" });
    expect(await yours.innerText()).toContain("You have no homeserver yet.");
    expect(await accessibilityProblems()).toEqual([]);
    await shot("03-logged-in");
    expect(problems).toEqual([]);
  });
});
