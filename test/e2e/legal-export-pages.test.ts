// The operators' legal-export pages in headless Chromium without JavaScript, against their own
// `wrangler dev` (--no-agent) with a host's agent played over a raw WebSocket: an operator requests
// an export (a refused form first, then the confirmation step, a change, the request), finds it in
// the list, and the host is sent the job. Every page passes axe-core; a customer finds nothing there.
import { randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateAgeKeyPair } from "../../agent/backup/age.ts";
import { reservePort } from "../ports.ts";
import { Api, DevServer, runCleanups, signUpOperator, tempRoot, type RawSocket } from "./agent-helpers.ts";
import { axeSeriousViolationsWithoutScripts, expectAt, launchChromium, logInAs, submit } from "./browser-helpers.ts";
import { fakeAgent, jobOf } from "./dashboard-helpers.ts";
import { createHomeserver, payingCustomer } from "./homeserver-helpers.ts";

const artifacts = fileURLToPath(new URL("../../test-results/e2e/", import.meta.url));
const REGION = "us-west";
const LIST = "/operator/legal-exports";

describe("an operator requests a legal export in a real browser, without JavaScript", () => {
  let dev: DevServer;
  let browser: Browser;
  let page: Page;
  let agent: RawSocket;
  let customer: Api;
  let server: { id: string; serverName: string };
  const problems: string[] = [];

  const accessibilityProblems = () => axeSeriousViolationsWithoutScripts(browser, page);
  const shot = (step: string) => page.screenshot({ path: `${artifacts}legal-exports-${step}.png`, fullPage: true });

  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    const root = tempRoot("berth-e2e-legal-exports-");
    dev = new DevServer(await reservePort(), join(root, "state"), join(root, "dev.log"));
    await dev.start();
    const operatorApi = new Api(dev.baseUrl);
    const operator = await signUpOperator(operatorApi, dev);
    agent = await fakeAgent(operatorApi, REGION);

    // A customer's homeserver, placed on the played host: an export needs a server on a host.
    customer = new Api(dev.baseUrl);
    await payingCustomer(customer, dev.baseUrl, `legal-${randomUUID()}@example.com`, `pass ${randomUUID()}`);
    server = await createHomeserver(customer, `legal-${randomUUID().slice(0, 8)}`, REGION);

    browser = await launchChromium();
    const context = await browser.newContext({ javaScriptEnabled: false });
    page = await context.newPage();
    page.on("pageerror", (error) => problems.push(`pageerror at ${page.url()}: ${error.message}`));
    page.on("console", (message) => {
      // The refused form answers 400: the browser logs that status.
      if (message.type() === "error" && !/status of 400/.test(message.text())) problems.push(`console.error at ${page.url()}: ${message.text()}`);
    });
    await logInAs(page, dev.baseUrl, operator);
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await runCleanups();
  });

  it("answers a customer as for an address with nothing at it", async () => {
    const response = await fetch(`${dev.baseUrl}${LIST}`, { headers: { cookie: customer.cookie, accept: "text/html" } });
    expect(response.status).toBe(404);
    expect(await response.text()).toContain("There is nothing at this address.");
  });

  it("walks an operator through a request: a refused form keeps its input, the confirmation says what and who, the export is listed and sent to the host", async () => {
    await page.goto(`${dev.baseUrl}${LIST}`);
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe("Legal exports");
    expect(await page.locator("main").innerText()).toContain("No export has been requested.");
    expect(await accessibilityProblems()).toEqual([]);

    await submit(page, page.getByRole("link", { name: "Request an export" }));
    await expectAt(page, `${LIST}/new`);
    const reference = `Court order ${randomUUID().slice(0, 8)}`;
    const user = `@alice:${server.serverName}`;
    await page.getByLabel("Homeserver").fill(server.serverName);
    await page.getByLabel("Reference").fill(reference);
    await page.getByLabel("Users (optional)").fill(user);
    await page.getByLabel("From (UTC, optional)").fill("2026-01-01T00:00");
    await page.getByRole("radio", { name: /^Metadata and content/ }).check();
    await page.getByLabel("Age recipient").fill("age1notarecipient");
    await page.getByRole("radio", { name: /^Notice is given/ }).check();
    expect(await accessibilityProblems()).toEqual([]);
    await submit(page, page.getByRole("button", { name: "Review the request" }));
    expect(await page.getByRole("alert").innerText()).toContain("The recipient must be an age X25519 recipient");
    expect(await page.getByLabel("Reference").inputValue()).toBe(reference);
    expect(await page.getByLabel("Users (optional)").inputValue()).toBe(user);
    expect(await page.getByLabel("From (UTC, optional)").inputValue()).toBe("2026-01-01T00:00");
    expect(await page.getByRole("radio", { name: /^Metadata and content/ }).isChecked()).toBe(true);
    expect(await accessibilityProblems()).toEqual([]);
    await shot("refused");

    const { recipient } = generateAgeKeyPair();
    await page.getByLabel("Age recipient").fill(recipient);
    await submit(page, page.getByRole("button", { name: "Review the request" }));
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe("Confirm the legal export");
    const confirmation = await page.locator("main").innerText();
    expect(confirmation).toContain(`From the homeserver ${server.serverName}`);
    expect(confirmation).toContain(`Only these users, the rooms they were ever members of, their memberships and the events they sent: ${user}`);
    expect(confirmation).toContain("Events and memberships from 2026-01-01 00:00 UTC onwards.");
    expect(confirmation).toContain("encrypted rooms' events as the ciphertext they are");
    expect(confirmation).toContain(`only whoever holds that recipient's identity can read it`);
    expect(confirmation).toMatch(
      /The customer \(legal-.+@example\.com\) sees this request, its reference and scope, in their audit log and their data export\./,
    );
    expect(await accessibilityProblems()).toEqual([]);
    await shot("confirm");

    // Changing it goes back to the form with everything typed; a second user is added.
    await submit(page, page.getByRole("button", { name: "Change the request" }));
    expect(await page.getByLabel("Age recipient").inputValue()).toBe(recipient);
    const bob = `@bob:${server.serverName}`;
    await page.getByLabel("Users (optional)").fill(`${user}\n${bob}`);
    await submit(page, page.getByRole("button", { name: "Review the request" }));
    expect(await page.locator("main").innerText()).toContain(`${user}, ${bob}`);
    await submit(page, page.getByRole("button", { name: "Request the export" }));

    expect(new URL(page.url()).pathname).toMatch(new RegExp(`^${LIST}/[0-9a-f-]{36}$`));
    const exportId = new URL(page.url()).pathname.split("/").at(-1)!;
    expect(await page.getByRole("status").innerText()).toContain("The export is requested");
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe(`Legal export ${reference}`);
    const audit = page.getByRole("list", { name: "Audit entries about this export" });
    expect(await audit.getByRole("listitem").filter({ hasText: "legal_export.requested" }).count()).toBe(1);
    expect(await accessibilityProblems()).toEqual([]);
    await shot("requested");

    const { job } = await jobOf(agent, "homeserver.legal_export");
    expect(job.payload).toMatchObject({
      serverId: server.id,
      exportId,
      reference,
      recipient,
      scope: { users: [user, bob], rooms: [], from: Date.UTC(2026, 0, 1), content: true },
    });

    // Reloading the export's page sends nothing again (the request was answered with a redirect).
    await page.reload();
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe(`Legal export ${reference}`);

    await submit(page, page.getByRole("link", { name: "← Legal exports" }));
    const row = page.getByRole("listitem").filter({ hasText: reference });
    expect(await row.innerText()).toContain(server.serverName);
    expect(await row.innerText()).toContain("2 users; all rooms; from 2026-01-01 00:00 UTC; with content");
    expect(await row.innerText()).toContain("Given");
    expect(await accessibilityProblems()).toEqual([]);
    await shot("list");
    const exportJobs = agent.messages.flatMap((message) => {
      const sent = (message as { job?: { id: string; kind: string } }).job;
      return message.type === "job" && sent?.kind === "homeserver.legal_export" ? [sent.id] : [];
    });
    expect(new Set(exportJobs)).toEqual(new Set([job.id]));
    expect(problems).toEqual([]);
  });
});
