import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { bytes, sha256 } from "../backups/backup-helpers";
import { succeeded } from "../fleet/fleet-helpers";
import { call } from "../helpers";
import { importing, importOf, importRow, sendPart, startImport, waitingServer, type ImportView } from "../imports/import-helpers";
import { runningServer } from "../servers/server-helpers";
import { expectLabelled, page } from "./page-checks";

// "Import a homeserver" in the dashboard: the page of a waiting homeserver on its owner's domain
// offers the upload (the dashboard script sends the parts), shows how far the latest import got and
// why it failed, and cancels it without JavaScript.

beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const cancelForm = (serverId: string, cookie: string | null, headers: Record<string, string> = {}) =>
  call(`/servers/${serverId}/import/cancel`, {
    method: "POST",
    rawBody: new URLSearchParams({}),
    headers: { "content-type": "application/x-www-form-urlencoded", accept: "text/html", ...headers },
    cookie,
  });

describe("the import page", () => {
  it("is linked from the delegation page of a waiting homeserver, and offers the upload to the dashboard script", async () => {
    const { owner, view: server, serverName } = await waitingServer();
    expect(await page(`/servers/${server.id}/delegation`, owner.cookie)).toContain(`<a href="/servers/${server.id}/import">Import it from an archive</a>`);

    const html = await page(`/servers/${server.id}/import`, owner.cookie);
    expectLabelled(html);
    expect(html).toContain("<h1>Import a homeserver</h1>");
    expect(html).toContain(`The archive&#39;s server name must be ${serverName}.`);
    expect(html).toMatch(new RegExp(`<form id="import-upload" hidden="" data-api="/api/servers/${server.id}/import"`));
    expect(html).toContain('<input id="field-archive" name="archive" type="file" required=""/>');
    expect(html).toContain("<noscript>");
    expect(html).toContain('<script src="/assets/dashboard.js" defer=""></script>');
    expect(html).not.toContain("The latest import");
  });

  it("shows how many parts arrived, so the same file resumes, and cancels without JavaScript", async () => {
    const { owner, view: server } = await waitingServer();
    const archive = bytes(8 * 1024 * 1024 + 100, 5);
    expect((await startImport(owner.cookie, server.id, archive.length)).status).toBe(201);
    const first = archive.subarray(0, 8 * 1024 * 1024);
    expect((await sendPart(owner.cookie, server.id, 1, first)).status).toBe(200);

    const view = (await (await importOf(owner.cookie, server.id)).json()) as ImportView & { receivedParts: unknown };
    expect(view.missingParts).toEqual([2]);
    expect(view.receivedParts).toEqual([{ partNumber: 1, sha256: await sha256(first) }]);
    const html = await page(`/servers/${server.id}/import`, owner.cookie);
    expect(html).toContain("1 of 2 parts of 8.4 MB received. Choose the same file again to resume");
    expect(html).toContain("Cancel this import");

    const cancelled = await cancelForm(server.id, owner.cookie);
    expect(cancelled.status).toBe(303);
    expect(cancelled.headers.get("location")).toBe(`/servers/${server.id}/import?notice=import_cancelled`);
    const after = await page(`/servers/${server.id}/import?notice=import_cancelled`, owner.cookie);
    expect(after).toContain("The import is cancelled, and its archive deleted.");
    expect(after).toContain("Cancelled; nothing of it was kept.");
    expect(await env.BACKUPS.head((await importRow(view.id))!.r2_key)).toBeNull();
  });

  it("shows why an import failed, and takes a new upload", async () => {
    const { agent, owner, view: server, serverName, job } = await importing();
    agent.send({ type: "job.result", id: job.id, ok: false, error: `the archive is of other.example, not ${serverName}` });
    await vi.waitFor(async () =>
      expect(await page(`/servers/${server.id}/import`, owner.cookie)).toContain(
        `The import failed: the archive is of other.example, not ${serverName}. Nothing of it was kept; you may upload again.`,
      ),
    );
    expect(await page(`/servers/${server.id}/import`, owner.cookie)).toContain('<form id="import-upload"');
  });

  it("shows what was imported, once the homeserver runs from it, and offers no more uploads", async () => {
    const { agent, owner, view: server, job } = await importing();
    expect(await page(`/servers/${server.id}/import`, owner.cookie)).toContain("Your homeserver is being made from it: 0 % done.");
    agent.send(succeeded(job));
    await vi.waitFor(async () => expect(await page(`/servers/${server.id}/import`, owner.cookie)).toContain("3 users, 2 rooms, 40 events and 1 media files"));
    const html = await page(`/servers/${server.id}/import`, owner.cookie);
    expect(html).not.toContain('<form id="import-upload"');
    expect(html).not.toContain("Only a new homeserver on your own domain");
  });

  it("asks a logged-out caller to log in, and refuses a cancel sent from another site or not as a form, keeping the upload", async () => {
    const { owner, view: server } = await waitingServer();
    expect((await startImport(owner.cookie, server.id, 100)).status).toBe(201);
    for (const response of [await call(`/servers/${server.id}/import`, { headers: { accept: "text/html" } }), await cancelForm(server.id, null)]) {
      expect(response.status).toBe(303);
      expect(response.headers.get("location")).toBe("/login");
    }
    const crossSite = await cancelForm(server.id, owner.cookie, { origin: "https://evil.example", "sec-fetch-site": "cross-site" });
    expect(crossSite.status).toBe(403);
    expect(await crossSite.text()).toContain("Cross-site request refused.");
    const notAForm = await call(`/servers/${server.id}/import/cancel`, {
      method: "POST",
      rawBody: "{}",
      headers: { "content-type": "application/json", accept: "text/html" },
      cookie: owner.cookie,
    });
    expect(notAForm.status).toBe(415);
    expect(((await (await importOf(owner.cookie, server.id)).json()) as ImportView).status).toBe("uploading");
  });

  it("is its owner's alone, and offers nothing for a homeserver that is already set up", async () => {
    const { owner, view: server } = await waitingServer();
    expect((await startImport(owner.cookie, server.id, 100)).status).toBe(201);
    const stranger = await waitingServer();
    const foreign = await page(`/servers/${server.id}/import`, stranger.owner.cookie, 404);
    expect(foreign).not.toContain("Import a homeserver");
    expect((await cancelForm(server.id, stranger.owner.cookie)).status).toBe(404);
    expect(((await (await importOf(owner.cookie, server.id)).json()) as ImportView).status).toBe("uploading");

    const running = await runningServer();
    const html = await page(`/servers/${running.id}/import`, running.owner.cookie);
    expect(html).toContain("Only a new homeserver on your own domain can be made from an archive");
    expect(html).not.toContain('<form id="import-upload"');
  });
});
