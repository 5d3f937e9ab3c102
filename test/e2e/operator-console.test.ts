// The operator console in headless Chromium, against its own `wrangler dev` (--no-agent) with a
// host's agent played over a raw WebSocket: an operator goes from the dashboard to the hosts, opens
// the host, sets it draining and finds that change in the audit log, without JavaScript; then
// creates a join token, copies it with the page's button (JavaScript on), and sees it only once.
// Every page passes axe-core.
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reservePort } from "../ports.ts";
import { Api, DevServer, runCleanups, signUpOperator, tempRoot, type HostView, type RawSocket } from "./agent-helpers.ts";
import { axeSeriousViolations, axeSeriousViolationsWithoutScripts, expectAt, launchChromium, logInAs, submit } from "./browser-helpers.ts";
import { fakeAgent } from "./dashboard-helpers.ts";

const artifacts = fileURLToPath(new URL("../../test-results/e2e/", import.meta.url));
const REGION = "us-central";

type ConsoleHost = HostView & { region: string; state: string };

describe("an operator uses the console in a real browser", () => {
  let dev: DevServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let operatorApi: Api;
  let operatorEmail: string;
  let agent: RawSocket;
  let host: ConsoleHost;
  const problems: string[] = [];

  const accessibilityProblems = () => axeSeriousViolationsWithoutScripts(browser, page);
  const shot = (target: Page, step: string) => target.screenshot({ path: `${artifacts}operator-console-${step}.png`, fullPage: true });
  const watch = (target: Page) => {
    target.on("pageerror", (error) => problems.push(`pageerror at ${target.url()}: ${error.message}`));
    target.on("console", (message) => {
      if (message.type() === "error") problems.push(`console.error at ${target.url()}: ${message.text()}`);
    });
  };

  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    const root = tempRoot("berth-e2e-operator-console-");
    dev = new DevServer(await reservePort(), join(root, "state"), join(root, "dev.log"));
    await dev.start();
    operatorApi = new Api(dev.baseUrl);
    const operator = await signUpOperator(operatorApi, dev);
    operatorEmail = operator.email;
    agent = await fakeAgent(operatorApi, REGION);
    const { hosts } = await operatorApi.expect<{ hosts: ConsoleHost[] }>(200, "GET", "/api/admin/hosts");
    expect(hosts).toHaveLength(1);
    host = hosts[0]!;

    browser = await launchChromium();
    context = await browser.newContext({ javaScriptEnabled: false });
    page = await context.newPage();
    watch(page);
    await logInAs(page, dev.baseUrl, operator);
  }, 180_000);

  afterAll(async () => {
    agent?.ws.close();
    await browser?.close();
    await runCleanups();
  });

  it("walks from the dashboard to a host, sets it draining, and finds the change in the audit log, without JavaScript", async () => {
    await page.goto(`${dev.baseUrl}/servers`);
    await submit(page, page.getByRole("link", { name: "open the operator console" }));
    await expectAt(page, "/operator/hosts");
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe("Hosts");
    const nav = page.getByRole("navigation", { name: "Operator console" });
    expect(await nav.getByRole("link").allInnerTexts()).toEqual(["Hosts", "Add a host", "Audit log", "Alerts", "Legal exports"]);
    const card = page.getByRole("listitem").filter({ has: page.getByRole("link", { name: host.name }) });
    const facts = await card.innerText();
    expect(facts).toContain(REGION);
    expect(facts).toContain("Active");
    expect(facts).toMatch(/online last seen \d{4}-\d{2}-\d{2}/);
    expect(facts).toContain("0.0.0-e2e-dashboard");
    expect(facts).toContain("CPUs: 0 used of 16, 16 free");
    expect(facts).toContain("Not encrypted — its agent allows it (development only)");
    expect(await accessibilityProblems()).toEqual([]);
    await shot(page, "hosts");

    await submit(page, card.getByRole("link", { name: host.name }));
    await expectAt(page, `/operator/hosts/${host.id}`);
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe(`Host ${host.name}`);
    expect(await page.getByRole("radio", { name: /^Active/ }).isChecked()).toBe(true);
    expect(await accessibilityProblems()).toEqual([]);

    await page.getByRole("radio", { name: /^Draining/ }).check();
    await page.getByLabel("Reason (optional)").fill("kernel update");
    await submit(page, page.getByRole("button", { name: "Set the state" }));
    await expectAt(page, `/operator/hosts/${host.id}?notice=host_state_changed`);
    expect(await page.getByRole("status").innerText()).toBe("The host's state is changed.");
    expect(await page.getByRole("radio", { name: /^Draining/ }).isChecked()).toBe(true);
    expect((await operatorApi.expect<ConsoleHost>(200, "GET", `/api/admin/hosts/${host.id}`)).state).toBe("draining");
    expect(await accessibilityProblems()).toEqual([]);
    await shot(page, "host");

    // The drain's confirmation page says what would happen; going back starts nothing.
    await submit(page, page.getByRole("link", { name: "Drain this host…" }));
    await expectAt(page, `/operator/hosts/${host.id}/drain`);
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe(`Drain host ${host.name}`);
    expect(
      await page
        .locator("form")
        .filter({ has: page.getByRole("button", { name: "Drain the host" }) })
        .innerText(),
    ).toContain(`Its 0 running homeservers move to other hosts of ${REGION}, 2 at a time`);
    expect(await accessibilityProblems()).toEqual([]);
    await shot(page, "drain");
    await submit(page, page.getByRole("link", { name: `← Host ${host.name}` }));
    await expectAt(page, `/operator/hosts/${host.id}`);
    expect(await page.getByText("This host was never drained.").count()).toBe(1);

    await submit(page, page.getByRole("link", { name: "Audit entries about this host" }));
    await expectAt(page, `/operator/audit?target=${host.id}`);
    await page.getByLabel("Action (optional)").fill("host.state_changed");
    await submit(page, page.getByRole("button", { name: "Filter" }));
    await expectAt(page, `/operator/audit?actor=&action=host.state_changed&target=${host.id}&from=&until=`);
    const rows = page.getByRole("table").getByRole("row");
    expect(await rows.count()).toBe(2);
    const change = await rows.nth(1).innerText();
    expect(change).toContain(operatorEmail);
    expect(change).toContain("host.state_changed");
    expect(change).toContain('"from":"active","to":"draining","reason":"kernel update"');
    expect(await accessibilityProblems()).toEqual([]);
    await shot(page, "audit");
    expect(problems).toEqual([]);
  });

  it("creates a join token, copies it with the page's button, sees it only once, and the token enrolls a host", async () => {
    const scripted = await browser.newContext({ storageState: await context.storageState() });
    await scripted.grantPermissions(["clipboard-read", "clipboard-write"], { origin: dev.baseUrl });
    const tokenPage = await scripted.newPage();
    watch(tokenPage);
    await tokenPage.goto(`${dev.baseUrl}/operator/join-tokens`);
    expect(await axeSeriousViolations(tokenPage)).toEqual([]);
    await tokenPage.getByRole("radio", { name: /^us-west/ }).check();
    await tokenPage.getByLabel("Valid for (minutes)").fill("15");
    await submit(tokenPage, tokenPage.getByRole("button", { name: "Create a join token" }));

    expect(await tokenPage.getByRole("heading", { level: 1 }).innerText()).toBe("Join token created");
    const token = (await tokenPage.locator("#join-token").innerText()).trim();
    expect(token).toMatch(/^bjt_[A-Za-z0-9_-]{20,}$/);
    expect((await tokenPage.locator("#enroll-command").innerText()).trim()).toBe(`BERTH_AGENT_JOIN_TOKEN='${token}' berth-agent enroll --url ${dev.baseUrl}`);
    await tokenPage.getByRole("button", { name: "Copy join token" }).click();
    await expect.poll(() => tokenPage.getByRole("status").filter({ hasText: "Copied." }).count()).toBe(1);
    expect(
      await tokenPage.evaluate(() => (globalThis as unknown as { navigator: { clipboard: { readText(): Promise<string> } } }).navigator.clipboard.readText()),
    ).toBe(token);
    expect(await axeSeriousViolations(tokenPage)).toEqual([]);
    await shot(tokenPage, "join-token");

    // Shown once: the form again has no token, and neither has any other page of the console.
    await tokenPage.goto(`${dev.baseUrl}/operator/join-tokens`);
    expect(await tokenPage.content()).not.toContain(token);
    await tokenPage.goto(`${dev.baseUrl}/operator/audit?action=join_token`);
    expect(await tokenPage.locator("main").innerText()).toContain("join_token.created");
    expect(await tokenPage.content()).not.toContain(token);
    await scripted.close();

    const enrolled = await new Api(dev.baseUrl).expect<{ region: string }>(201, "POST", "/api/agent/enroll", {
      joinToken: token,
      publicKey: generateKeyPairSync("ed25519").publicKey.export({ format: "der", type: "spki" }).subarray(-32).toString("base64url"),
      name: `e2e-joined-${Date.now()}`,
      capacity: { memoryMiB: 4096, cpus: 2, diskGiB: 100 },
      agentVersion: "0.0.0-e2e-console",
    });
    expect(enrolled.region).toBe("us-west");
    expect(problems).toEqual([]);
  });
});
