// Moving to Berth, the whole way, as its owner would: a Synapse run outside Berth (the stock images,
// Synapse's own generated configuration) whose users left an encrypted room and a public one is
// archived by hand with README.md's commands; its owner, a customer of Berth, makes a homeserver of
// the same name on their own domain (which Caddy stands in for: npm run dev -- --stand-in-domain),
// publishes the dashboard's well-knowns there, uploads the archive through the import page in
// headless Chromium, and the local agent makes the homeserver from it. Its users then log in on
// Berth with the passwords they had and read their history, alice's encrypted message with the room
// keys she exported.
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import type { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectStockHistoryAt, type StockHistory, StockSynapse } from "../agent/homeserver/stock-synapse.ts";
import { reservePort, reservePortPair } from "../ports.ts";
import { DevServer, Fatal, runCleanups, tempRoot, waitFor } from "./agent-helpers.ts";
import { launchChromium, submit } from "./browser-helpers.ts";
import { subscribedCustomer } from "./dashboard-helpers.ts";
import { type DelegationView, standInSite } from "./federation-helpers.ts";
import { caddyDispatcher, fetchThrough, requireHomeserverHost, stopDevWithAgent, type ServerView } from "./homeserver-helpers.ts";

const prefix = `e2e-import-${randomBytes(3).toString("hex")}`;
/** The owner's own domain: the stock Synapse's server name, and Berth's homeserver's. */
const DOMAIN = `${prefix}.test`;

describe("a self-hosted Synapse, archived by hand and imported through the dashboard, is its users' homeserver on Berth", () => {
  let root: string;
  let dev: DevServer;
  let browser: Browser;
  let page: Page;
  let dispatcher: Agent | undefined;
  let stock: StockSynapse;
  let history: StockHistory;
  let archive: string;
  /** DOMAIN: nothing published until its owner publishes the dashboard's documents. */
  let site: Awaited<ReturnType<typeof standInSite>> | undefined;
  const problems: string[] = [];

  beforeAll(async () => {
    await requireHomeserverHost();
    root = tempRoot("berth-e2e-import-stock-");
    site = await standInSite();
    dev = new DevServer(await reservePort(), join(root, "state"), join(root, "dev.log"), {
      httpsPort: await reservePortPair(),
      standInDomains: { [DOMAIN]: { host: "127.0.0.1", port: site.port } },
    });
    await dev.start();

    // The homeserver people used before Berth, and the archive its owner makes of it.
    mkdirSync(join(root, "stock"));
    stock = new StockSynapse(prefix, join(root, "stock"), DOMAIN);
    stock.startPostgres();
    stock.generateConfig();
    stock.editConfig();
    history = await stock.leaveHistory(await stock.start());
    archive = stock.archiveByHand(join(root, "archive"));

    browser = await launchChromium();
    page = await (await browser.newContext()).newPage();
    page.on("pageerror", (error) => problems.push(`pageerror at ${page.url()}: ${error.message}`));
  }, 600_000);

  afterAll(async () => {
    await browser?.close();
    await dispatcher?.close().catch(() => undefined);
    await stopDevWithAgent(dev, "import-stock e2e");
    site?.close();
    stock?.remove();
    await runCleanups();
  }, 180_000);

  it("its owner makes a homeserver on their domain, publishes its well-knowns, uploads the archive, and its users read their history on Berth", {
    timeout: 600_000,
  }, async () => {
    await subscribedCustomer(page, dev.baseUrl);
    await page.getByLabel("Name", { exact: true }).fill(`moved-${randomBytes(3).toString("hex")}`);
    await page.getByRole("radio", { name: /us-east — has room/ }).check();
    await page.getByLabel("Domain", { exact: true }).fill(DOMAIN);
    await submit(page, page.getByRole("button", { name: "Create homeserver" }));
    const serverId = /^\/servers\/([^/]+)\/delegation$/.exec(new URL(page.url()).pathname)![1]!;
    const api = `${dev.baseUrl}/api/servers/${serverId}`;

    // The host's first check finds nothing on the domain; its owner publishes what the dashboard shows.
    const delegation = await waitFor(
      "the first delegation check's verdict",
      async () => {
        const view = (await (await page.request.get(`${api}/delegation`)).json()) as DelegationView;
        return view.check && !view.checking ? view : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 500 },
    );
    expect(delegation.check).toMatchObject({ result: "fails" });
    site!.publish(delegation);

    // The archive, through the import page; a Synapse archive needs no passphrase.
    await page.reload();
    await submit(page, page.getByRole("link", { name: "Import it from an archive" }));
    await page.getByLabel("Archive", { exact: true }).setInputFiles(archive);
    await page.getByRole("button", { name: "Upload and import" }).click();
    await page.waitForURL(`${dev.baseUrl}/servers/${serverId}/import?notice=import_uploaded`, { timeout: 60_000 });

    // Completing the upload had the domain checked again: it delegates, and the host makes the homeserver.
    const imported = await waitFor(
      "the import to finish",
      async () => {
        const view = (await (await page.request.get(`${api}/import`)).json()) as { status: string; error: string | null; counts: Record<string, number> };
        if (view.status === "failed") throw new Fatal(`the import failed: ${view.error}`);
        return view.status === "imported" ? view : undefined;
      },
      { timeoutMs: 420_000, intervalMs: 1_000 },
    );
    expect(imported.counts).toMatchObject({ rooms: 2 });
    expect(imported.counts.users).toBeGreaterThanOrEqual(2);
    await page.reload();
    expect(await page.locator("main").innerText()).toMatch(/Imported on .*: \d+ users, 2 rooms, \d+ events/);
    const server = (await (await page.request.get(api)).json()) as ServerView;
    expect(server).toMatchObject({ status: "running", serverName: DOMAIN });

    dispatcher = caddyDispatcher(await dev.caddyRoot(), { standInDomains: [DOMAIN] });
    await expectStockHistoryAt(fetchThrough(dispatcher), server.homeserverUrl, DOMAIN, history);
    expect(problems).toEqual([]);
  });
});
