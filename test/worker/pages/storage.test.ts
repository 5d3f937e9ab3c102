import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { call, logIn, verifiedUser } from "../helpers";
import { runningServer } from "../servers/server-helpers";
import { quotaReporter } from "../servers/storage-helpers";
import { expectLabelled, page } from "./page-checks";

// The server page's storage: used against the quota, and a banner from 80 % saying what a full quota does and what to do.

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  // Each test brings its own host: an earlier test's idle one would take the next server.
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const banner = (html: string) => html.match(/<div class="alert [a-z]+" id="storage-banner"[^>]*>.*?<\/div>/s)?.[0];

describe("the server page's storage", () => {
  it("shows used against the quota, with no banner below 80 %", async () => {
    const { agent, owner, id } = await runningServer();
    const before = await page(`/servers/${id}`, owner.cookie);
    expect(before).not.toContain('id="storage-line"');
    expect(banner(before)).toBeUndefined();

    await quotaReporter(agent, id)(0.5);
    const html = await page(`/servers/${id}`, owner.cookie);
    expect(html).toMatch(/<p id="storage-line">Storage: 537 MB used of 1.1 GB \(50 %\), as of [^<]+ UTC\.<\/p>/);
    // The storage chart's bound is the quota the host enforces.
    expect(html).toContain("Quota 1.1 GB");
    expect(banner(html)).toBeUndefined();
  });

  it("at 80 % warns, and at 95 % says it is almost full, what happens when full and what to do", async () => {
    const { agent, owner, id } = await runningServer();
    const report = quotaReporter(agent, id);

    await report(0.85);
    const filling = banner(await page(`/servers/${id}`, owner.cookie))!;
    expect(filling).toMatch(/^<div class="alert warn" id="storage-banner" role="status">/);
    expect(filling).toContain("<strong>Storage filling up:</strong>");
    expect(filling).toContain("(85 %)");

    await report(0.96);
    const html = await page(`/servers/${id}`, owner.cookie);
    const full = banner(html)!;
    expect(full).toMatch(/^<div class="alert error" id="storage-banner" role="alert">/);
    expect(full).toContain("<strong>Storage almost full:</strong>");
    expect(full).toContain("uses 1.0 GB of its 1.1 GB (96 %)");
    expect(full).toContain("uploads (images, files) are refused; messages keep working for a while");
    expect(full).toContain(`purge old rooms on the <a href="/servers/${id}/rooms">Rooms</a> page`);
    expect(full).toContain('<a href="/billing">upgrade to a plan with more storage</a>');
    expectLabelled(html);

    // Media deleted: the banner goes with it.
    await report(0.6);
    expect(banner(await page(`/servers/${id}`, owner.cookie))).toBeUndefined();
  });

  it("is shown to nobody but the owner", async () => {
    const { agent, id } = await runningServer();
    await quotaReporter(agent, id)(0.96);
    const stranger = await logIn((await verifiedUser()).email);
    const response = await call(`/servers/${id}`, { cookie: stranger, headers: { accept: "text/html" } });
    expect(response.status).toBe(404);
    expect(await response.text()).not.toContain("storage-banner");
  });
});
