// A server's page in headless Chromium against its own `wrangler dev` (--no-agent): a customer
// subscribes, creates a homeserver by form, and watches it reach "running" without reloading,
// while this file plays the host's agent over a raw WebSocket. The page passes axe-core.
import { randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runningHomeserver } from "../job-results.ts";
import { type DevServer, runCleanups, type RawSocket } from "./agent-helpers.ts";
import { axeSeriousViolations, submit } from "./browser-helpers.ts";
import { dashboardInstance, jobOf, subscribedCustomer } from "./dashboard-helpers.ts";

const artifacts = fileURLToPath(new URL("../../test-results/e2e/", import.meta.url));
// Its own region, so that placement can only choose this file's host.
const REGION = "us-central";

describe("a server's page, live, in a real browser", () => {
  let dev: DevServer;
  let browser: Browser;
  let page: Page;
  let agent: RawSocket;

  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    ({ dev, agent, browser, page } = await dashboardInstance("berth-e2e-dashboard-", REGION));
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await runCleanups();
  });

  it("creates a homeserver by form and follows it to running without reloading", async () => {
    const baseUrl = dev.baseUrl;
    await subscribedCustomer(page, baseUrl);
    // The region with room is offered first.
    const region = page.getByRole("radio", { name: new RegExp(`${REGION} — has room`) });
    expect(await region.isChecked()).toBe(true);
    const name = `dash-${randomUUID().slice(0, 8)}`;
    await page.getByLabel("Name", { exact: true }).fill(name);
    await submit(page, page.getByRole("button", { name: "Create homeserver" }));
    expect(new URL(page.url()).pathname).toMatch(/^\/servers\/[0-9a-f-]{36}$/);
    const status = page.locator("#live-status [data-field=status]");
    expect(await status.innerText()).toBe("provisioning");
    await page.screenshot({ path: `${artifacts}dashboard-server-01-provisioning.png`, fullPage: true });

    // The agent reports progress, then success: the page follows over server-sent events.
    let navigations = 0;
    page.on("framenavigated", (frame) => frame === page.mainFrame() && navigations++);
    const { job } = await jobOf(agent, "homeserver.provision");
    agent.ws.send(JSON.stringify({ type: "job.ack", id: job.id }));
    agent.ws.send(JSON.stringify({ type: "job.progress", id: job.id, progress: 0.5, message: "starting Synapse" }));
    await expect.poll(() => page.locator("#live-status [data-field=step]").innerText(), { timeout: 15_000 }).toBe("Setting up: starting Synapse");
    await page.screenshot({ path: `${artifacts}dashboard-server-02-progress.png`, fullPage: true });
    // A result as the job catalogue declares it: the Worker records anything else as a failure.
    const provisioned = { ...runningHomeserver(String(job.payload.serverId), `${name}.berth.example`), adminUserId: `@admin:${name}.berth.example` };
    agent.ws.send(JSON.stringify({ type: "job.result", id: job.id, ok: true, result: provisioned }));
    await expect.poll(() => status.innerText(), { timeout: 15_000 }).toBe("running");
    // The sections that depend on the state were refreshed in place.
    await expect.poll(() => page.getByRole("button", { name: "Stop" }).count(), { timeout: 15_000 }).toBe(1);
    await expect.poll(() => page.getByRole("button", { name: "Get a one-time link" }).count()).toBe(1);
    expect(navigations).toBe(0);
    await page.screenshot({ path: `${artifacts}dashboard-server-03-running.png`, fullPage: true });

    // Back up now: a plain form post, then the backup's progress shows live and the list has it.
    await submit(page, page.getByRole("button", { name: "Back up now" }));
    expect(await page.getByRole("status").innerText()).toBe("The backup has started.");
    const backup = await jobOf(agent, "homeserver.backup");
    agent.ws.send(JSON.stringify({ type: "job.ack", id: backup.job.id }));
    agent.ws.send(JSON.stringify({ type: "job.progress", id: backup.job.id, progress: 0.25, message: "uploading part 1" }));
    await expect.poll(() => page.locator("#live-status [data-field=step]").innerText(), { timeout: 15_000 }).toBe("Backing up: uploading part 1");
    expect(await page.locator("#live-status progress").getAttribute("value")).toBe("0.25");
    expect(await page.locator("#backups tbody tr").innerText()).toMatch(/manual\s+—\s+pending/);
    await page.screenshot({ path: `${artifacts}dashboard-server-04-backing-up.png`, fullPage: true });

    expect(await axeSeriousViolations(page)).toEqual([]);

    // On a phone-sized screen nothing runs off the side.
    await page.setViewportSize({ width: 360, height: 780 });
    expect(await page.evaluate("document.documentElement.scrollWidth")).toBeLessThanOrEqual(360);
    await page.screenshot({ path: `${artifacts}dashboard-server-05-narrow.png`, fullPage: true });
  }, 120_000);
});
