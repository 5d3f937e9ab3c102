// A verified customer subscribes in a real browser: our billing page, the
// emulator's hosted Stripe Checkout (the card goes there, never to us), back to
// us, and the active plan and first invoice show on the billing page.
import { randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { waitFor } from "./agent-helpers";
import { expectAt, launchChromium, newestTokenLink, submit } from "./browser-helpers";

const baseUrl = inject("devBaseUrl");
const artifacts = fileURLToPath(new URL("../../test-results/e2e/", import.meta.url));

async function api(path: string, body: unknown) {
  return fetch(`${baseUrl}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

/** Signs up and verifies through the API, so the browser starts at log-in. */
async function verifiedAccount(email: string, password: string) {
  expect((await api("/api/auth/signup", { email, password })).status).toBe(202);
  const link = await newestTokenLink(baseUrl, email, "/verify-email");
  expect((await api("/api/auth/verify-email", { token: new URL(link).searchParams.get("token") })).status).toBe(200);
}

describe("subscribing in a real browser", () => {
  let browser: Browser;
  let page: Page;
  const requestsToUs: string[] = [];

  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    browser = await launchChromium();
    page = await (await browser.newContext()).newPage();
    page.on("request", (request) => {
      if (request.url().startsWith(baseUrl)) requestsToUs.push(`${request.url()} ${request.postData() ?? ""}`);
    });
  });

  afterAll(async () => {
    await browser?.close();
  });

  it("a verified user subscribes through Checkout and sees the active plan and first invoice", async () => {
    const email = `billing-${randomUUID()}@example.com`;
    const password = `pass ${randomUUID()}`;
    await verifiedAccount(email, password);

    await page.goto(`${baseUrl}/login`);
    await page.getByLabel("Email", { exact: true }).fill(email);
    await page.getByLabel("Password", { exact: true }).fill(password);
    await submit(page, page.getByRole("main").getByRole("button", { name: "Log in", exact: true }));
    await expectAt(page, "/account");

    await page.goto(`${baseUrl}/billing`);
    await page.screenshot({ path: `${artifacts}billing-01-plans.png`, fullPage: true });
    await submit(page, page.getByRole("button", { name: "Subscribe to Starter" }));

    // Stripe's hosted Checkout (the emulator): another origin.
    expect(new URL(page.url()).origin).not.toBe(new URL(baseUrl).origin);
    expect(new URL(page.url()).pathname).toMatch(/^\/c\/pay\/cs_test_/);
    await page.getByLabel("Card number").fill("4242 4242 4242 4242");
    await page.getByLabel("Expiration (MM / YY)").fill("12 / 34");
    await page.getByLabel("CVC").fill("123");
    await page.getByLabel("Cardholder name").fill("Test Customer");
    await page.screenshot({ path: `${artifacts}billing-02-checkout.png`, fullPage: true });
    await submit(page, page.getByRole("button", { name: "Subscribe" }));

    expect(new URL(page.url()).pathname).toBe("/billing/success");
    expect(new URL(page.url()).searchParams.get("session_id")).toMatch(/^cs_test_/);

    // Webhooks arrive asynchronously; the page shows the plan and the paid invoice once they have.
    const text = await waitFor(
      "the billing page to show the plan renewing and the invoice paid",
      async () => {
        await page.goto(`${baseUrl}/billing`);
        const shown = await page.locator("main").innerText();
        return shown.includes("Renews on") && /\$9\.00\s+paid/.test(shown) && shown;
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    await page.screenshot({ path: `${artifacts}billing-03-active.png`, fullPage: true });
    expect(text).toContain("Starter — $9.00 / month");
    expect(text).toContain("active");
    expect(text).toContain("Your homeservers are running.");
    const invoiceRows = page.getByRole("table").getByRole("row");
    await expect(invoiceRows.count()).resolves.toBe(2);
    const invoice = await invoiceRows.nth(1).innerText();
    expect(invoice).toContain("$9.00");
    expect(invoice).toContain("paid");
    await expect(page.getByRole("link", { name: "PDF" }).getAttribute("href")).resolves.toMatch(/\/pdf$/);

    // The card number went to Stripe's page only: nothing sent to us carried it.
    expect(requestsToUs.join("\n")).not.toMatch(/4242\s?4242/);
  });
});
