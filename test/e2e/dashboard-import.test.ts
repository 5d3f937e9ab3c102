// "Import a homeserver" in headless Chromium against its own `wrangler dev` (--no-agent): a customer
// creates a homeserver on their own domain, uploads an archive through the import page (the dashboard
// script hashes and sends it in parts), loses the connection on the last part, resumes by choosing
// the file again, and the host — played over a raw WebSocket — downloads exactly the bytes chosen,
// with the passphrase typed, once the domain's delegation holds.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signAgentRequest } from "../../protocol/agent-requests.ts";
import { runningHomeserver } from "../job-results.ts";
import { type DevServer, runCleanups, waitFor } from "./agent-helpers.ts";
import { axeSeriousViolations, axeSeriousViolationsWithoutScripts, submit } from "./browser-helpers.ts";
import { dashboardInstance, jobOf, subscribedCustomer, type FakeAgentSocket } from "./dashboard-helpers.ts";

const REGION = "us-west";
const PART_SIZE = 8 * 1024 * 1024;
const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

describe("importing a homeserver through the dashboard, in a real browser", () => {
  let dev: DevServer;
  let browser: Browser;
  let agent: FakeAgentSocket;
  let page: Page;
  let serverId: string;
  let serverName: string;
  let firstCheck: string;
  const problems: string[] = [];

  beforeAll(async () => {
    ({ dev, agent, browser, page } = await dashboardInstance("berth-e2e-import-", REGION));
    page.on("pageerror", (error) => problems.push(`pageerror at ${page.url()}: ${error.message}`));
    await subscribedCustomer(page, dev.baseUrl);

    serverName = `acme-${randomUUID().slice(0, 8)}.test`;
    await page.getByLabel("Name", { exact: true }).fill(`imp-${randomUUID().slice(0, 8)}`);
    await page.getByRole("radio", { name: new RegExp(`${REGION} — has room`) }).check();
    await page.getByLabel("Domain", { exact: true }).fill(serverName);
    await submit(page, page.getByRole("button", { name: "Create homeserver" }));
    serverId = /^\/servers\/([^/]+)\/delegation$/.exec(new URL(page.url()).pathname)![1]!;
    // The domain does not delegate yet: its files are published once the archive is up.
    const { job: check } = await jobOf(agent, "homeserver.delegation_check");
    firstCheck = check.id;
    answerCheck(check.id, "fails");
  }, 180_000);

  const answerCheck = (id: string, result: "holds" | "fails") =>
    agent.ws.send(
      JSON.stringify({
        type: "job.result",
        id,
        ok: true,
        result: { serverId, serverName, outcome: { result, evidence: { summary: `The delegation of ${serverName} ${result}.`, facts: [] } } },
      }),
    );

  afterAll(async () => {
    await browser?.close();
    await runCleanups();
  });

  it("says, without JavaScript, that the upload needs the page's script, and stays accessible", async () => {
    const context = await browser.newContext({ javaScriptEnabled: false, storageState: await page.context().storageState() });
    const plain = await context.newPage();
    await plain.goto(`${dev.baseUrl}/servers/${serverId}/import`);
    expect(await plain.locator("main").innerText()).toContain("Uploading needs this page's script");
    expect(await plain.getByRole("button", { name: "Upload and import" }).isVisible()).toBe(false);
    expect(await axeSeriousViolationsWithoutScripts(browser, plain)).toEqual([]);
    await context.close();
  });

  it("uploads the archive in checked parts, resumes after a lost connection, and hands the host exactly that file once the domain delegates", async () => {
    await submit(page, page.getByRole("link", { name: "Import it from an archive" }));
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe("Import a homeserver");
    expect(await axeSeriousViolations(page)).toEqual([]);

    // Three parts; the connection fails on every try of the last one.
    const archive = randomBytes(2 * PART_SIZE + 12_345);
    const passphrase = `otter lantern ${randomUUID()}`;
    const sentParts: string[] = [];
    page.on("request", (request) => {
      if (request.method() === "PUT") sentParts.push(new URL(request.url()).pathname.split("/").at(-1)!);
    });
    await page.route("**/import/parts/3", (route) => route.abort("connectionreset"));
    await page.getByLabel("Archive", { exact: true }).setInputFiles({ name: "acme.age", mimeType: "application/octet-stream", buffer: archive });
    await page.getByLabel("Passphrase of a Berth export").fill(passphrase);
    await page.getByRole("button", { name: "Upload and import" }).click();
    const status = page.locator("#import-upload-status");
    await waitFor("the upload to stop", async () => (await status.innerText()).startsWith("The upload stopped:"), { timeoutMs: 30_000, intervalMs: 100 });
    expect(await status.innerText()).toContain("Choose the same file again to resume.");
    expect(sentParts).toEqual(["1", "2", "3", "3", "3"]);
    const api = `${dev.baseUrl}/api/servers/${serverId}/import`;
    expect(await (await page.request.get(api)).json()).toMatchObject({ status: "uploading", parts: 3, missingParts: [3] });

    // The connection is back: the same file again sends only the part that did not arrive.
    await page.unroute("**/import/parts/3");
    sentParts.length = 0;
    await page.getByRole("button", { name: "Upload and import" }).click();
    await page.waitForURL(`${dev.baseUrl}/servers/${serverId}/import?notice=import_uploaded`);
    expect(sentParts).toEqual(["3"]);
    expect(await page.getByRole("status").first().innerText()).toContain("The archive is uploaded");
    expect(await page.getByText("Uploaded. Your homeserver is made from it as soon as").count()).toBe(1);
    expect(await page.getByRole("button", { name: "Upload and import" }).count()).toBe(0);

    // Completing the upload had the domain checked again. It delegates now: the host gets the import,
    // with the passphrase, and downloads what was chosen.
    const { job: check } = await jobOf(agent, "homeserver.delegation_check", [firstCheck]);
    answerCheck(check.id, "holds");
    const { job } = await jobOf(agent, "homeserver.import");
    expect(job.payload).toMatchObject({ spec: { serverId, serverName }, passphrase });
    const path = new URL(String(job.payload.downloadUrl)).pathname;
    const token = await signAgentRequest(agent.privateKey, { hostId: agent.hostId, method: "GET", path, bodySha256: sha256(Buffer.alloc(0)) });
    const download = await fetch(`${dev.baseUrl}${path}`, { headers: { authorization: `Bearer ${token}` } });
    expect(download.status).toBe(200);
    expect(sha256(Buffer.from(await download.arrayBuffer()))).toBe(sha256(archive));

    const made = {
      ...runningHomeserver(serverId, serverName),
      adminUserId: `@admin:${serverName}`,
      importId: job.payload.importId,
      counts: { users: 4, rooms: 3, events: 120, mediaFiles: 2 },
      schema: { found: 88, after: 94 },
    };
    agent.ws.send(JSON.stringify({ type: "job.result", id: job.id, ok: true, result: made }));
    await waitFor(
      "the import page to show what was imported",
      async () => {
        await page.reload();
        return (await page.getByText("4 users, 3 rooms, 120 events and 2 media files").count()) === 1;
      },
      { timeoutMs: 15_000, intervalMs: 300 },
    );
    expect(problems).toEqual([]);
  });
});
