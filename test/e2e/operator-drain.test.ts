// An operator empties a host from the console, in headless Chromium without JavaScript, against
// `npm run dev -- --hosts 2 --enroll-by-hand`: two real agents on this machine. The first host is
// enrolled and runs a paying customer's real homeserver. The operator creates a join token on "Add
// a host" and reads it from the page; the second host enrolls with exactly that token (as
// `berth-agent enroll` on a new machine) and appears online among the hosts. The operator opens
// the first host, drains it through the confirmation page, and reloads the host's page until the
// drain ended: its progress shows the move under way, then the homeserver moved, with its
// downtime. The move links to the second host, whose page lists the homeserver; its name is
// served by the second host's Caddy only. Every page passes axe-core.
import { randomBytes, randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Api, type DevServer, runCleanups, signUpOperator, waitFor } from "./agent-helpers";
import { axeSeriousViolationsWithoutScripts, expectAt, launchChromium, logInAs, submit } from "./browser-helpers";
import {
  createHomeserver,
  homeserverDiagnostics,
  payingCustomer,
  requireHomeserverHost,
  type ServerView,
  skipAfterFirstFailure,
  stopDevWithAgent,
  Timeline,
  untilRunning,
} from "./homeserver-helpers";
import { clientVersions, enrollLocalHost, HostResolver, startDevWithHosts } from "./local-hosts-helpers";

const artifacts = fileURLToPath(new URL("../../test-results/e2e/", import.meta.url));
const REGION = "us-east";

let dev: DevServer;
let operatorApi: Api;
let customer: Api;
let browser: Browser | undefined;
let page: Page;
let server: ServerView | undefined;
let firstHostId: string;
let secondHostId: string;
let resolver: HostResolver;
const problems: string[] = [];
const timeline = new Timeline();
const mark = (what: string) => timeline.mark(what);

const accessibilityProblems = () => axeSeriousViolationsWithoutScripts(browser!, page);
const shot = (step: string) => page.screenshot({ path: `${artifacts}operator-drain-${step}.png`, fullPage: true });
const main = () => page.getByRole("main").innerText();
/** The drain's section of the host's page: its counts, and its moves. */
const drainSection = () => page.getByRole("region", { name: "Drain", exact: true });
/** The facts of the drain section, "Moved" → "1", as the page shows them. */
async function drainCounts(): Promise<Record<string, string>> {
  const terms = await drainSection().locator("dl dt").allInnerTexts();
  const values = await drainSection().locator("dl dd").allInnerTexts();
  return Object.fromEntries(terms.map((term, i) => [term, values[i]!.trim()]));
}
/** The drain's one move as its table shows it. */
async function drainMove(): Promise<{ homeserver: string; to: string; phase: string; downtime: string }> {
  const rows = drainSection().getByRole("table").locator("tbody tr");
  expect(await rows.count()).toBe(1);
  // Homeserver, From, To, Phase, Started, Downtime, Error: a drain's moves leave From and Started empty.
  const [homeserver, , to, phase, , downtime] = await rows.first().locator("td").allInnerTexts();
  return { homeserver: homeserver!, to: to!, phase: phase!, downtime: downtime! };
}

afterAll(runCleanups);

describe("an operator enrolls a second host, drains the first, and watches the homeserver move", () => {
  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    await requireHomeserverHost();
    dev = await startDevWithHosts(2, "berth-e2e-operator-drain-", { enrollByHand: true });
    resolver = new HostResolver(dev);
    operatorApi = new Api(dev.baseUrl);
    customer = new Api(dev.baseUrl);
    const operator = await signUpOperator(operatorApi, dev);
    // The first host is there before the story: enrolled with a join token from the API.
    const { token } = await operatorApi.expect<{ token: string }>(201, "POST", "/api/admin/join-tokens", { region: REGION });
    firstHostId = await enrollLocalHost(dev, 1, token);
    await operatorApi.waitHost(firstHostId, "connected", (host) => host.connection.connected, 90_000);
    mark("dev server answers, host 1 enrolled and connected");

    browser = await launchChromium();
    page = await (await browser.newContext({ javaScriptEnabled: false })).newPage();
    page.on("pageerror", (error) => problems.push(`pageerror at ${page.url()}: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console.error at ${page.url()}: ${message.text()}`);
    });
    await logInAs(page, dev.baseUrl, operator);
  }, 240_000);

  afterAll(async () => {
    // The homeservers are destroyed even when the browser fails to close: runCleanups then removes their state.
    try {
      await browser?.close();
    } finally {
      await stopDevWithAgent(dev, "operator drain e2e");
      console.log(`[operator drain e2e] timings:\n${timeline}`);
    }
  });

  skipAfterFirstFailure(() => homeserverDiagnostics(timeline, dev, customer, server));

  it("a paying customer's homeserver runs on the first host, the only one", { timeout: 300_000 }, async () => {
    await payingCustomer(customer, dev.baseUrl, `operator-drain-${randomUUID()}@example.com`, `account ${randomUUID()}`);
    server = await createHomeserver(customer, `e2e-drain-${randomBytes(4).toString("hex")}`, REGION);
    server = await untilRunning(customer, server.id, mark);
    expect(resolver.hostsRouting(server.serverName)).toEqual([1]);
    mark("server running on host 1");
  });

  it("the operator creates a join token on Add a host; the second host enrolls with it and shows online", { timeout: 180_000 }, async () => {
    await page.goto(`${dev.baseUrl}/operator/hosts`);
    await submit(page, page.getByRole("navigation", { name: "Operator console" }).getByRole("link", { name: "Add a host" }));
    await expectAt(page, "/operator/join-tokens");
    expect(await accessibilityProblems()).toEqual([]);
    await page.getByRole("radio", { name: new RegExp(`^${REGION}`) }).check();
    await page.getByLabel("Valid for (minutes)").fill("10");
    await submit(page, page.getByRole("button", { name: "Create a join token" }));
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe("Join token created");
    const token = (await page.locator("#join-token").innerText()).trim();
    expect(token).toMatch(/^bjt_[A-Za-z0-9_-]{20,}$/);
    expect(await accessibilityProblems()).toEqual([]);
    await shot("join-token");

    secondHostId = await enrollLocalHost(dev, 2, token);
    mark("host 2 enrolled with the console's token");
    await submit(page, page.getByRole("navigation", { name: "Operator console" }).getByRole("link", { name: "Hosts" }));
    await expectAt(page, "/operator/hosts");
    const secondCard = page.getByRole("listitem").filter({ has: page.getByRole("link", { name: dev.host(2).name, exact: true }) });
    await waitFor(
      "the second host to show online on the Hosts page",
      async () => {
        await page.reload();
        return (await secondCard.innerText()).includes("online last seen");
      },
      { timeoutMs: 90_000, intervalMs: 1_000 },
    );
    const facts = await secondCard.innerText();
    expect(facts).toContain(REGION);
    expect(facts).toContain("Active");
    expect(facts).toMatch(/Homeservers\s+0/);
    expect(
      await page
        .getByRole("listitem")
        .filter({ has: page.getByRole("link", { name: dev.host(1).name, exact: true }) })
        .innerText(),
    ).toMatch(/Homeservers\s+1/);
    expect(await accessibilityProblems()).toEqual([]);
    await shot("hosts");
    mark("host 2 online on the Hosts page");
  });

  it("the operator opens the first host and drains it through the confirmation page", { timeout: 60_000 }, async () => {
    await submit(page, page.getByRole("link", { name: dev.host(1).name, exact: true }));
    await expectAt(page, `/operator/hosts/${firstHostId}`);
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe(`Host ${dev.host(1).name}`);
    expect(await page.getByRole("region", { name: "Homeservers on this host", exact: true }).innerText()).toContain(server!.serverName);
    expect(await drainSection().innerText()).toContain("This host was never drained.");
    expect(await accessibilityProblems()).toEqual([]);

    await submit(page, page.getByRole("link", { name: "Drain this host…" }));
    await expectAt(page, `/operator/hosts/${firstHostId}/drain`);
    expect(await main()).toContain(`Its one running homeserver moves to other hosts of ${REGION}`);
    expect(await accessibilityProblems()).toEqual([]);
    await submit(page, page.getByRole("button", { name: "Drain the host" }));
    await expectAt(page, `/operator/hosts/${firstHostId}?notice=host_drain_started`);
    mark("drain started");

    // Under way: the host drains, its one homeserver is moving to the second host.
    expect(await page.getByRole("status").innerText()).toContain("The drain has started");
    expect(await page.getByRole("radio", { name: /^Draining/ }).isChecked()).toBe(true);
    expect(await drainSection().innerText()).toContain("A drain is under way");
    expect(await drainCounts()).toMatchObject({ Homeservers: "1", Moving: "1", Moved: "0", "Failed (still here)": "0", Remaining: "0" });
    const underWay = await drainMove();
    expect(underWay).toMatchObject({ homeserver: `${server!.serverName} ${server!.id}`, to: dev.host(2).name, downtime: "not yet known" });
    expect(["provisioning target", "stopping source", "backing up", "restoring target", "checking target"]).toContain(underWay.phase);
    expect(await accessibilityProblems()).toEqual([]);
    await shot("drain-under-way");
  });

  it("the operator reloads the host's page until the drain ended: the homeserver moved, and the second host serves it", { timeout: 360_000 }, async () => {
    const phases = new Set<string>();
    await waitFor(
      "the drain to end on the host's page",
      async () => {
        await page.reload();
        const { phase } = await drainMove();
        if (!phases.has(phase)) mark(`the page shows the move ${phase}`);
        phases.add(phase);
        if (phase === "failed") throw new Error(`the move failed: ${await drainSection().innerText()}`);
        return (await drainSection().innerText()).includes("The last drain ended");
      },
      { timeoutMs: 300_000, intervalMs: 2_000 },
    );
    expect(await drainCounts()).toMatchObject({ Homeservers: "1", Moving: "0", Moved: "1", "Failed (still here)": "0", Remaining: "0" });
    const { downtime, ...moved } = await drainMove();
    expect(moved).toEqual({ homeserver: `${server!.serverName} ${server!.id}`, to: dev.host(2).name, phase: "succeeded" });
    expect(downtime).toMatch(/^\d+\.\d s$/);
    expect(await page.getByRole("region", { name: "Homeservers on this host", exact: true }).count()).toBe(0);
    expect(await main()).toContain("No homeserver runs on this host.");
    expect(await accessibilityProblems()).toEqual([]);
    await shot("drain-ended");
    mark(`drain ended on the page (downtime ${downtime})`);

    // The move's target links to the host the homeserver went to.
    await submit(page, drainSection().getByRole("link", { name: dev.host(2).name, exact: true }));
    await expectAt(page, `/operator/hosts/${secondHostId}`);
    const homeservers = await page.getByRole("region", { name: "Homeservers on this host", exact: true }).innerText();
    expect(homeservers).toContain(server!.serverName);
    expect(homeservers).toContain("running");
    expect(await page.getByRole("region", { name: "Moves into or out of this host, newest first", exact: true }).innerText()).toContain("succeeded");
    expect(await accessibilityProblems()).toEqual([]);
    await shot("second-host");

    await waitFor("only host 2 to route the name", () => resolver.hostsRouting(server!.serverName).join() === "2", { timeoutMs: 60_000, intervalMs: 250 });
    const versions = await clientVersions(dev, resolver, server!.homeserverUrl);
    expect(versions.status).toBe(200);
    expect(versions.versions.length).toBeGreaterThan(0);
    expect(await customer.expect<{ status: string; lastMove: { outcome: string } }>(200, "GET", `/api/servers/${server!.id}`)).toMatchObject({
      status: "running",
      lastMove: { outcome: "moved" },
    });
    mark("served by host 2 only");
    expect(problems).toEqual([]);
  });
});
