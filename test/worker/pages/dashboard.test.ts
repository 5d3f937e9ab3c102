import { env } from "cloudflare:workers";
import { Encrypter } from "age-encryption";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { call, logIn, verifiedUser } from "../helpers";
import { subscriber } from "../billing/stripe-helpers";
import { jobOf, onlineHost, runningServer, serverView } from "../servers/server-helpers";
import { expectLabelled, page } from "./page-checks";
import { backupsOf, uploadBackup } from "../backups/backup-helpers";
import { succeeded } from "../fleet/fleet-helpers";
import { JOB_KINDS } from "../../../protocol/jobs";
import { STEP_TEXT } from "../../../worker/pages/servers";
import { ADMINISTRATION_JOB_PREFIXES } from "../../../worker/servers/servers";

// The dashboard's pages without JavaScript: what they show, and every form by plain POST.

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  // Each test brings its own host; others' hosts would change which regions have room.
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const formHeaders = { "content-type": "application/x-www-form-urlencoded" };
const submit = (path: string, fields: Record<string, string>, cookie: string) =>
  call(path, { method: "POST", rawBody: new URLSearchParams(fields), headers: formHeaders, cookie });

/** Every input, select and textarea with an id has a label pointing at it (radios sit inside theirs). */
describe("the servers page", () => {
  it("asks for a log-in", async () => {
    const response = await call("/servers");
    expect(response.status).toBe(303);
    expect(response.headers.get("location")).toBe("/login");
    expect((await call("/servers/anything")).headers.get("location")).toBe("/login");
  });

  it("lists no server yet, offers the create form, and marks which regions have room for the plan", async () => {
    await onlineHost("us-west");
    const owner = await subscriber();
    const html = await page("/servers", owner.cookie);
    expect(html).toContain("You have no homeserver yet.");
    expectLabelled(html);
    expect(html).toContain('<script src="/assets/dashboard.js" defer="">');
    expect(html).toMatch(/value="us-west"[^>]*checked[^>]*\/> us-west <span class="hint">— has room/);
    expect(html).toMatch(/us-east <span class="hint">— full right now/);
  });

  it("refuses a bad name with the reason and keeps what was typed", async () => {
    await onlineHost();
    const owner = await subscriber();
    const response = await submit("/servers", { name: "-bad", region: "us-east" }, owner.cookie);
    expect(response.status).toBe(400);
    const html = await response.text();
    expect(html).toContain("must not start or end with a hyphen");
    expect(html).toContain('value="-bad"');
    expect(await (await submit("/servers", { name: "admin", region: "us-east" }, owner.cookie)).text()).toContain("is reserved");
  });

  it("needs a subscription, and says so", async () => {
    const cookie = await logIn((await verifiedUser()).email);
    const response = await submit("/servers", { name: `hs-${crypto.randomUUID().slice(0, 8)}`, region: "us-east" }, cookie);
    expect(response.status).toBe(403);
    expect(await response.text()).toContain("choose a plan on the billing page first");
  });

  it("creates a homeserver and goes to its page, which shows it provisioning and how to connect", async () => {
    const { agent } = await onlineHost();
    const owner = await subscriber();
    const name = `hs-${crypto.randomUUID().slice(0, 8)}`;
    const response = await submit("/servers", { name, region: "us-east" }, owner.cookie);
    expect(response.status).toBe(303);
    const location = response.headers.get("location")!;
    const id = location.split("/").at(-1)!;
    expect(location).toBe(`/servers/${id}`);
    await jobOf(agent, "homeserver.provision");

    const html = await page(location, owner.cookie);
    const { homeserverUrl, serverName } = await serverView(owner.cookie, id);
    expect(html).toContain('<span class="badge warn">provisioning</span>');
    expect(html).toContain(`data-events="/api/servers/${id}/events"`);
    expect(html).toContain(`<code>${homeserverUrl}</code>`);
    expect(html).toContain(`href="https://app.element.io/#/login?hs_url=${encodeURIComponent(homeserverUrl)}"`);
    expect(html).toContain(`href="https://mobile.element.io/element?account_provider=${encodeURIComponent(serverName)}"`);
    expect(html).toContain("Available once the homeserver is running.");
    expectLabelled(html);
    expect(await page("/servers", owner.cookie)).toContain(`<a href="/servers/${id}">${name}.`);
  });

  it("shows a stranger's server as not found", async () => {
    const { id } = await runningServer();
    const stranger = await logIn((await verifiedUser()).email);
    expect(await page(`/servers/${id}`, stranger, 404)).toContain("No such server.");
  });
});

describe("a server's page", () => {
  it("stops and starts by form", async () => {
    const { agent, owner, id } = await runningServer();
    expect(await page(`/servers/${id}`, owner.cookie)).toContain(`action="/servers/${id}/stop"`);
    const stop = await submit(`/servers/${id}/stop`, {}, owner.cookie);
    expect(stop.status).toBe(303);
    expect(stop.headers.get("location")).toBe(`/servers/${id}?notice=server_stopping`);
    expect(await page(stop.headers.get("location")!, owner.cookie)).toContain("The homeserver is stopping.");
    const { job } = await jobOf(agent, "homeserver.stop");
    expect(job.payload).toEqual({ serverId: id });

    // Stopping again is refused with the reason, on the page.
    const again = await submit(`/servers/${id}/stop`, {}, owner.cookie);
    expect(again.status).toBe(409);
    expect(await again.text()).toContain("The server is stopping; it can stop only when running.");

    agent.send(succeeded(job));
    await vi.waitFor(async () => expect((await serverView(owner.cookie, id)).status).toBe("stopped"));
    expect(await page(`/servers/${id}`, owner.cookie)).toContain(`action="/servers/${id}/start"`);
    const start = await submit(`/servers/${id}/start`, {}, owner.cookie);
    expect(start.headers.get("location")).toBe(`/servers/${id}?notice=server_starting`);
    expect((await jobOf(agent, "homeserver.start")).job.payload).toEqual({ serverId: id });
  });

  it("gives the one-time admin password link in the page, and its form sets the password", async () => {
    const { agent, owner, id } = await runningServer();
    const response = await submit(`/servers/${id}/admin-password-link`, {}, owner.cookie);
    expect(response.status).toBe(200);
    const link = (await response.text()).match(/href="(http[^"]+\/admin-password\?token=[^"]+)"/)![1]!;
    const path = new URL(link).pathname + new URL(link).search;
    const form = await page(path, owner.cookie);
    expectLabelled(form);
    const token = new URL(link).searchParams.get("token")!;
    expect(form).toContain(`value="${token}"`);

    const set = await submit(`/servers/${id}/admin-password`, { token, password: "a long admin passphrase" }, owner.cookie);
    expect(set.headers.get("location")).toBe(`/servers/${id}?notice=admin_password_set`);
    expect((await jobOf(agent, "homeserver.set_admin_password")).job.payload.passwordHash).toMatch(/^\$2[aby]\$12\$/);
    const reused = await submit(`/servers/${id}/admin-password`, { token, password: "a long admin passphrase" }, owner.cookie);
    expect(reused.status).toBe(400);
    expect(await reused.text()).toContain("already used");
  });

  it("deletes only when the name is typed, saying a final backup comes first and when data is destroyed", async () => {
    const { agent, owner, id } = await runningServer();
    const { name } = await serverView(owner.cookie, id);
    const html = await page(`/servers/${id}`, owner.cookie);
    expect(html).toContain("We first take a final backup.");
    expect(html).toContain("destroyed right away");
    expect(html).toContain("kept 30 days");

    const wrong = await submit(`/servers/${id}/delete`, { confirmName: "not-it" }, owner.cookie);
    expect(wrong.status).toBe(400);
    expect(await wrong.text()).toContain(`Type the server&#39;s name, ${name}, to delete it.`);
    expect((await serverView(owner.cookie, id)).status).toBe("running");

    const right = await submit(`/servers/${id}/delete`, { confirmName: name }, owner.cookie);
    expect(right.headers.get("location")).toBe(`/servers/${id}?notice=server_deleting`);
    expect(await serverView(owner.cookie, id)).toMatchObject({ status: "deleting", statusReason: "taking a final backup" });
    expect((await jobOf(agent, "homeserver.backup")).job.payload.serverId).toBe(id);
  });

  it("backs up now, lists the backup, and restores it only once the replacement is confirmed", async () => {
    const { agent, host, owner, id } = await runningServer();
    const now = await submit(`/servers/${id}/backups`, {}, owner.cookie);
    expect(now.headers.get("location")).toBe(`/servers/${id}?notice=backup_started`);
    const { job } = await jobOf(agent, "homeserver.backup");
    expect(await page(`/servers/${id}`, owner.cookie)).toMatch(/<td>manual<\/td><td>—<\/td><td>pending<\/td>/);

    const encrypter = new Encrypter();
    encrypter.addRecipient(job.payload.recipient);
    expect((await uploadBackup(host, job.payload.uploadBase, [await encrypter.encrypt("a backup")])).status).toBe(200);
    agent.send(succeeded(job));
    const [backup] = await backupsOf(owner.cookie, id);
    const html = await page(`/servers/${id}`, owner.cookie);
    expect(html).toMatch(/<td>manual<\/td><td>\d+ B<\/td><td>succeeded<\/td><td>[A-Z][a-z]+ \d+, \d{4}/);
    expect(html).toContain(`<option value="${backup!.id}">`);
    expect(html).toContain("Restoring replaces everything on");

    const unconfirmed = await submit(`/servers/${id}/restore`, { backupId: backup!.id }, owner.cookie);
    expect(unconfirmed.status).toBe(400);
    expect(await unconfirmed.text()).toContain("tick the box to confirm");
    expect((await serverView(owner.cookie, id)).status).toBe("running");

    const restore = await submit(`/servers/${id}/restore`, { backupId: backup!.id, confirm: "yes" }, owner.cookie);
    expect(restore.headers.get("location")).toBe(`/servers/${id}?notice=restore_started`);
    expect((await serverView(owner.cookie, id)).status).toBe("restoring");
    expect((await jobOf(agent, "homeserver.restore")).job.payload.backupId).toBe(backup!.id);
  });

  it("draws the usage as SVG with the plan's limits and a text summary, for each period", async () => {
    const { owner, id, host } = await runningServer();
    const now = Date.now();
    // The first sample came before the agent had measured the disk.
    for (const [minutesAgo, cpu, storage] of [
      [30, 12, null],
      [20, 40, 50_000_000],
      [10, 20, 70_000_000],
    ] as const) {
      await env.DB.prepare(
        `INSERT INTO workload_usage (workload_id, host_id, resolution, at, cpu_percent, memory_bytes, memory_limit_bytes,
          network_rx_bytes, network_tx_bytes, block_read_bytes, block_write_bytes, pids, storage_bytes)
          VALUES (?, ?, 'raw', ?, ?, 300000000, 1073741824, 5000, 7000, 10, 20, 12, ?)`,
      )
        .bind(id, host.hostId, now - minutesAgo * 60_000, cpu, storage)
        .run();
    }
    const html = await page(`/servers/${id}`, owner.cookie);
    for (const title of ["CPU", "Memory", "Storage (", "Network", "Storage I/O"]) expect(html).toContain(`<strong>${title}`);
    expect(html.match(/<polyline [^>]*points="[\d., ]+"/g)).toHaveLength(7);
    expect(html).toContain("CPU: latest 20 %, average 24 %, peak 40 %");
    expect(html).toContain("Memory: latest 300 MB");
    expect(html).toContain("Stored: latest 70 MB, average 60 MB, peak 70 MB");
    expect(html).toContain("Plan limit 1024 MiB");
    expect(html).toContain("Plan limit 1 CPU (100 %)");
    expect(html).toMatch(/Plan includes \d+ GiB/);
    expect(html).toContain('stroke-dasharray="6 4"');
    expect(html).toContain('aria-current="page">24 hours');

    const month = await page(`/servers/${id}?range=30d`, owner.cookie);
    expect(month).toContain('aria-current="page">30 days');
    // The 30-day chart reads five-minute averages, which the roll-up has not made yet.
    expect(month).toContain("No data for this period yet");
  });
});

describe("the dashboard script", () => {
  it("is served same-origin and checks names with the server's own rules", async () => {
    const response = await call("/assets/dashboard.js");
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/javascript/);
    const script = await response.text();
    expect(script).toContain("const NAME_MIN = 3, NAME_MAX = 40");
    expect(script).toContain('"postmaster"');
    expect(script).toContain("must not start or end with a hyphen");
    expect(script).toContain("new EventSource(");
    expect(script).toContain('"x-part-sha256": digest');
    // Kept small: the import's upload (hashing, parts, resuming) is its largest part.
    expect(new TextEncoder().encode(script).length).toBeLessThan(10 * 1024);
  });
});

describe("the step under way", () => {
  it("is named in words for every kind of job a server's page can show, never by the job's kind", () => {
    // What latestLifecycleJob leaves in; a legal export's job names no server, so no page shows it.
    const shown = JOB_KINDS.filter(
      (kind) => kind.startsWith("homeserver.") && !ADMINISTRATION_JOB_PREFIXES.some((prefix) => kind.startsWith(prefix)) && kind !== "homeserver.legal_export",
    );
    expect(shown.filter((kind) => !STEP_TEXT[kind])).toEqual([]);
  });
});
