// The dashboard's pages in headless Chromium against `npm run dev`: the name is checked as it is
// typed with the server's reasons, the pages pass axe-core with no serious violations, nothing
// trips the CSP, and the script stays far inside the JavaScript budget.
import { randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { axeSeriousViolations, expectAt, launchChromium, newestTokenLink, submit } from "./browser-helpers";

const baseUrl = inject("devBaseUrl");
const artifacts = fileURLToPath(new URL("../../test-results/e2e/", import.meta.url));
const JS_BUDGET_GZIPPED = 100 * 1024;

async function api(path: string, body: unknown) {
  return fetch(`${baseUrl}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

describe("the dashboard in a real browser", () => {
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];

  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    browser = await launchChromium();
    page = await (await browser.newContext()).newPage();
    page.on("console", (message) => {
      if (message.type() !== "error") return;
      // Expected: the 403 page of creating a server without a plan.
      if (/status of 403/.test(message.text()) && new URL(page.url()).pathname === "/servers") return;
      problems.push(`console.error at ${page.url()}: ${message.text()}`);
    });
    page.on("pageerror", (error) => problems.push(`pageerror at ${page.url()}: ${error.message}`));

    const email = `dashboard-${randomUUID()}@example.com`;
    const password = `pass ${randomUUID()}`;
    expect((await api("/api/auth/signup", { email, password })).status).toBe(202);
    const link = await newestTokenLink(baseUrl, email, "/verify-email");
    expect((await api("/api/auth/verify-email", { token: new URL(link).searchParams.get("token") })).status).toBe(200);
    await page.goto(`${baseUrl}/login`);
    await page.getByLabel("Email", { exact: true }).fill(email);
    await page.getByLabel("Password", { exact: true }).fill(password);
    await submit(page, page.getByRole("main").getByRole("button", { name: "Log in", exact: true }));
    await expectAt(page, "/account");
  });

  afterAll(async () => {
    await browser?.close();
  });

  it("checks the name as it is typed, with the server's reasons", async () => {
    await page.getByRole("navigation", { name: "Account" }).getByRole("link", { name: "Servers" }).click();
    await page.waitForLoadState("load");
    await expectAt(page, "/servers");
    const name = page.getByLabel("Name", { exact: true });
    const problem = page.locator("#field-name-problem");

    await name.fill("Team");
    await expect.poll(() => problem.textContent()).toBe("The name may contain only lower-case letters a–z, digits and hyphens.");
    expect(await name.getAttribute("aria-invalid")).toBe("true");
    await name.fill("admin");
    await expect.poll(() => problem.textContent()).toBe("The name is reserved.");
    await name.fill("ab");
    await expect.poll(() => problem.textContent()).toBe("The name must be 3 to 40 characters.");
    await name.fill("our-team");
    await expect.poll(() => problem.textContent()).toBe("");
    expect(await name.getAttribute("aria-invalid")).toBe("false");
    await page.screenshot({ path: `${artifacts}dashboard-servers.png`, fullPage: true });

    // Without a plan the form still submits, and the server says why it cannot create one.
    await page.getByRole("radio").first().check();
    await submit(page, page.getByRole("button", { name: "Create homeserver" }));
    await expect.poll(() => page.getByRole("alert").textContent()).toContain("choose a plan on the billing page first");
    expect(await name.inputValue()).toBe("our-team");
  });

  it.each(["/servers", "/account", "/billing"])("%s has no serious accessibility violations", async (path) => {
    await page.goto(`${baseUrl}${path}`);
    expect(await axeSeriousViolations(page)).toEqual([]);
  });

  it("loads one same-origin script, far under the JavaScript budget, and nothing trips the CSP", async () => {
    await page.goto(`${baseUrl}/servers`);
    const scripts = await page.locator("script").evaluateAll((elements) => elements.map((element) => element.getAttribute("src")));
    expect(scripts).toEqual(["/assets/dashboard.js"]);
    const body = Buffer.from(await (await fetch(`${baseUrl}/assets/dashboard.js`)).arrayBuffer());
    expect(gzipSync(body).length).toBeLessThan(JS_BUDGET_GZIPPED);
    expect(problems).toEqual([]);
  });
});
