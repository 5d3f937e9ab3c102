import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { bytes } from "../backups/backup-helpers";
import { exportsOf, readyExport, strongPassphrase } from "../exports/export-helpers";
import { call } from "../helpers";
import { jobOf, runningServer } from "../servers/server-helpers";
import { expectLabelled, page } from "./page-checks";

// "Download your homeserver" without JavaScript: the passphrase form with its rule, the exports with
// their progress, and the download link with its expiry.

beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const exportPage = (id: string) => `/servers/${id}/export`;
const submit = (id: string, cookie: string | null, passphrase: string) =>
  call(exportPage(id), {
    method: "POST",
    rawBody: new URLSearchParams({ passphrase }),
    headers: { "content-type": "application/x-www-form-urlencoded", accept: "text/html" },
    cookie,
  });

describe("the export page", () => {
  it("asks for a log-in, and shows another customer's server as no server at all, exporting nothing", async () => {
    const server = await runningServer();
    const anonymous = await call(exportPage(server.id), { headers: { accept: "text/html" } });
    expect(anonymous.status).toBe(303);
    expect(anonymous.headers.get("location")).toBe("/login");
    const stranger = (await runningServer()).owner.cookie;
    expect(await page(exportPage(server.id), stranger, 404)).toBe(await page(exportPage(crypto.randomUUID()), stranger, 404));
    expect((await submit(server.id, stranger, strongPassphrase())).status).toBe(404);
    expect((await submit(server.id, null, strongPassphrase())).status).toBe(303);
    expect(await exportsOf(server.owner.cookie, server.id)).toEqual([]);
  });

  it("explains the passphrase rule, and refuses a weak one without putting it back into the page", async () => {
    const server = await runningServer();
    const empty = await page(exportPage(server.id), server.owner.cookie);
    expectLabelled(empty);
    expect(empty).not.toMatch(/<script/);
    expect(empty).toContain('aria-current="page">Export</a>');
    expect(empty).toContain("At least 12 characters");
    const weak = await submit(server.id, server.owner.cookie, "aaaaaaaaaaaaaaaa");
    expect(weak.status).toBe(400);
    const html = await weak.text();
    expect(html).toContain("Choose a stronger passphrase");
    expect(html).not.toContain("aaaaaaaaaaaaaaaa");
    expect(await exportsOf(server.owner.cookie, server.id)).toEqual([]);
  });

  it("starts an export, shows it being made, and once ready its download link and until when", async () => {
    const server = await runningServer();
    const passphrase = strongPassphrase();
    const started = await submit(server.id, server.owner.cookie, passphrase);
    expect(started.status).toBe(303);
    expect(started.headers.get("location")).toBe(`${exportPage(server.id)}?notice=export_started`);
    await jobOf(server.agent, "homeserver.full_export");
    const waiting = await page(`${exportPage(server.id)}?notice=export_started`, server.owner.cookie);
    expect(waiting).toContain("The export has started");
    expect(waiting).toContain("Waiting for the host");
    expect(waiting).toContain("0 % done");
    expect(waiting).not.toContain(passphrase);

    const ready = await readyExport(bytes(2048, 1));
    const html = await page(exportPage(ready.server.id), ready.server.owner.cookie);
    expectLabelled(html);
    expect(html).toContain(`href="/api/servers/${ready.server.id}/exports/${ready.exportId}/download"`);
    expect(html).toContain("Download (2.0 KB)");
    expect(html).toMatch(/until \w{3} \d+, \d{4}/);
  });
});
