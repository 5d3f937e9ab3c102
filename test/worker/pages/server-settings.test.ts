import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { call } from "../helpers";
import { succeeded } from "../fleet/fleet-helpers";
import { administeredServer, jobCount, nextJob, type AdministeredServer } from "../servers/administration-helpers";
import { expectLabelled, page } from "./page-checks";

// A homeserver's settings page, without JavaScript: what it shows, and its form by plain POST.

const formHeaders = { "content-type": "application/x-www-form-urlencoded" };
const settingsPage = (server: { id: string }) => `/servers/${server.id}/settings`;
const submit = (server: { id: string }, fields: Record<string, string>, cookie: string) =>
  call(settingsPage(server), { method: "POST", rawBody: new URLSearchParams(fields), headers: formHeaders, cookie });

const DEFAULT_FORM = { registration: "closed", federation: "on", allowList: "", messageRetentionDays: "", mediaRetentionDays: "", maxUploadMiB: "50" };

describe("the settings page", () => {
  let server: AdministeredServer;

  beforeAll(async () => {
    server = await administeredServer();
  });

  it("asks for a log-in, and shows another customer's server as no server at all, changing nothing", async () => {
    const response = await call(settingsPage(server));
    expect(response.status).toBe(303);
    expect(response.headers.get("location")).toBe("/login");
    const stranger = (await administeredServer()).owner.cookie;
    const theirs = await page(settingsPage(server), stranger, 404);
    const nothing = await page(settingsPage({ id: crypto.randomUUID() }), stranger, 404);
    expect(theirs).toContain("No such server");
    expect(theirs).toBe(nothing);
    const posted = await submit(server, { ...DEFAULT_FORM, registration: "token" }, stranger);
    expect(posted.status).toBe(404);
    expect(await posted.text()).toBe(nothing);
    expect(await jobCount(server.id, "homeserver.settings.apply")).toBe(0);
  });

  it("shows the settings the homeserver runs with in labelled fields, the plan's ceiling, and a way back to the server", async () => {
    const html = await page(settingsPage(server), server.owner.cookie);
    expectLabelled(html);
    expect(html).toContain(`<h1>Settings of ${server.serverName}</h1>`);
    expect(html).toContain(`href="/servers/${server.id}"`);
    expect(html).toMatch(/name="registration" value="closed" checked/);
    expect(html).toMatch(/name="federation" value="on" checked/);
    expect(html).toMatch(/<input id="field-maxUploadMiB" name="maxUploadMiB" type="number" value="50" min="1" max="100"/);
    expect(html).toContain("Up to 100 MiB on the Starter plan.");
    expect(html).not.toContain("Your last change");
  });

  it("refuses bad input with the reason, keeping what was typed, and sends no job", async () => {
    const refused = await submit(server, { ...DEFAULT_FORM, federation: "allow_list", allowList: "friends.example.org\n*.evil.example" }, server.owner.cookie);
    expect(refused.status).toBe(400);
    const html = await refused.text();
    expect(html).toContain("a server name: a DNS name such as example.org");
    expect(html).toContain("friends.example.org\n*.evil.example</textarea>");
    expect(html).toMatch(/name="federation" value="allow_list" checked/);

    const tooBig = await submit(server, { ...DEFAULT_FORM, maxUploadMiB: "500" }, server.owner.cookie);
    expect(tooBig.status).toBe(400);
    expect(await tooBig.text()).toContain("The Starter plan allows uploads of up to 100 MiB");
    const notANumber = await submit(server, { ...DEFAULT_FORM, messageRetentionDays: "a week" }, server.owner.cookie);
    expect(notANumber.status).toBe(400);
    expect(await jobCount(server.id, "homeserver.settings.apply")).toBe(0);
  });

  it("applies a change and says so; the page then shows the new settings", async () => {
    const request = submit(
      server,
      {
        registration: "token",
        federation: "allow_list",
        allowList: "friends.example.org\r\nother.example:8448",
        messageRetentionDays: "30",
        mediaRetentionDays: "",
        maxUploadMiB: "80",
      },
      server.owner.cookie,
    );
    const job = await nextJob(server, "homeserver.settings.apply");
    expect(job.payload.settings).toEqual({
      registration: "token",
      federation: { mode: "allow_list", servers: ["friends.example.org", "other.example:8448"] },
      messageRetentionDays: 30,
      mediaRetentionDays: null,
      maxUploadMiB: 80,
    });
    server.agent.send(succeeded(job));
    const response = await request;
    expect(response.status).toBe(303);
    expect(response.headers.get("location")).toBe(`${settingsPage(server)}?notice=settings_applied`);
    const html = await page(response.headers.get("location")!, server.owner.cookie);
    expect(html).toContain("Your homeserver runs with the new settings.");
    expect(html).toMatch(/name="registration" value="token" checked/);
    expect(html).toContain("friends.example.org\nother.example:8448</textarea>");
    expect(html).toMatch(/id="field-messageRetentionDays"[^>]*value="30"/);
  });

  it("shows a change under way, then a failed one, in plain words", async () => {
    const request = submit(server, { ...DEFAULT_FORM, registration: "token" }, server.owner.cookie);
    const job = await nextJob(server, "homeserver.settings.apply");
    const response = await request;
    expect(response.status).toBe(303);
    expect(response.headers.get("location")).toBe(`${settingsPage(server)}?notice=settings_applying`);
    expect(await page(settingsPage(server), server.owner.cookie)).toContain("Your change is being applied: your homeserver restarts with it");

    server.agent.send({
      type: "job.result",
      id: job.id,
      ok: false,
      error: "applying the settings failed: container keeps exiting; rolled back to the previous settings, which are running again (data intact)",
    });
    let html: string;
    do html = await page(settingsPage(server), server.owner.cookie);
    while (html.includes("Your change is being applied"));
    expect(html).toContain("Your last change was not applied: Your homeserver did not start with the new settings, so the previous settings were put back");
    expect(html).not.toContain("container keeps exiting");
    // The form still shows what runs: the change was not applied.
    expect(html).toMatch(/id="field-maxUploadMiB"[^>]*value="80"/);
    const row = await env.DB.prepare("SELECT settings FROM servers WHERE id = ?").bind(server.id).first<{ settings: string }>();
    expect(JSON.parse(row!.settings)).toMatchObject({ maxUploadMiB: 80, messageRetentionDays: 30 });
  });
});
