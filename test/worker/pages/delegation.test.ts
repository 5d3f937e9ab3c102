import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { subscriber } from "../billing/stripe-helpers";
import { succeeded } from "../fleet/fleet-helpers";
import { call } from "../helpers";
import { jobOf, onlineHost } from "../servers/server-helpers";
import { expectLabelled, page } from "./page-checks";

// Creating a homeserver named by one's own domain, and its delegation page, without JavaScript: the
// documents to publish, what the latest check found, "check again", and "publish later" with its warning.

beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const form = (path: string, fields: Record<string, string>, cookie: string | null) =>
  call(path, { method: "POST", rawBody: new URLSearchParams(fields), headers: { "content-type": "application/x-www-form-urlencoded" }, cookie });

const countJobs = async (serverId: string, kind: string) =>
  (await env.DB.prepare("SELECT count(*) AS n FROM jobs WHERE server_id = ? AND kind = ?").bind(serverId, kind).first<number>("n"))!;

/** A customer creates a homeserver with their domain through the create form; returns where it sent them. */
async function createdThroughForm() {
  const { agent } = await onlineHost();
  const owner = await subscriber();
  const name = `hs-${crypto.randomUUID().slice(0, 8)}`;
  const serverName = `acme-${crypto.randomUUID().slice(0, 8)}.test`;
  const response = await form("/servers", { name, region: "us-east", serverName }, owner.cookie);
  expect(response.status).toBe(303);
  const location = response.headers.get("location")!;
  const id = /^\/servers\/([^/]+)\/delegation$/.exec(location)![1]!;
  return { agent, owner, name, serverName, id, location };
}

describe("the delegation page", () => {
  it("is where creating with one's own domain leads: both documents, the header the client one needs, and the warning of publishing later", async () => {
    const { owner, name, serverName, location } = await createdThroughForm();
    const html = await page(location, owner.cookie);
    expectLabelled(html);
    expect(html).not.toMatch(/<script/);
    expect(html).toContain(`<h1>Delegation of ${serverName}</h1>`);
    expect(html).toContain(`<code>https://${serverName}/.well-known/matrix/server</code>`);
    expect(html).toContain(`<code>https://${serverName}/.well-known/matrix/client</code>`);
    expect(html).toContain(`{&quot;m.server&quot;:&quot;${name}.berth.example:443&quot;}`);
    expect(html).toContain(`{&quot;m.homeserver&quot;:{&quot;base_url&quot;:&quot;https://${name}.berth.example&quot;}}`);
    expect(html).toContain("Access-Control-Allow-Origin: *");
    expect(html).toContain("cannot federate");
    expect(html).toContain("Set up my homeserver now");
    expect(html).toContain("not right within 7 days of creating it, it is deleted");
  });

  it("shows what the check found, and checks again on request", async () => {
    const { agent, owner, id, location } = await createdThroughForm();
    const { job } = await jobOf(agent, "homeserver.delegation_check");
    const summary = "Delegation is broken: the client well-known lacks the header Access-Control-Allow-Origin: *.";
    agent.send(succeeded(job, { outcome: { result: "fails", evidence: { summary, facts: [{ label: "/.well-known/matrix/client", value: "lacks it" }] } } }));
    await expect.poll(async () => page(location, owner.cookie)).toContain(summary);
    expect(await page(location, owner.cookie)).toContain("<strong>Fails</strong>");

    const again = await form(`/servers/${id}/delegation/check`, {}, owner.cookie);
    expect(again.status).toBe(303);
    expect(again.headers.get("location")).toBe(`/servers/${id}/delegation?notice=delegation_check_started`);
    expect(await countJobs(id, "homeserver.delegation_check")).toBe(2);
  });

  it("sets the homeserver up before its domain delegates only once the box is ticked", async () => {
    const { agent, owner, id } = await createdThroughForm();
    const unticked = await form(`/servers/${id}/delegation/publish-later`, {}, owner.cookie);
    expect(unticked.status).toBe(400);
    expect(await unticked.text()).toContain("tick the box");
    expect(await countJobs(id, "homeserver.provision")).toBe(0);

    const ticked = await form(`/servers/${id}/delegation/publish-later`, { confirm: "yes" }, owner.cookie);
    expect(ticked.status).toBe(303);
    expect(ticked.headers.get("location")).toBe(`/servers/${id}?notice=server_provisioning`);
    await jobOf(agent, "homeserver.provision");
    const overview = await page(`/servers/${id}`, owner.cookie);
    expect(overview).toContain(`href="/servers/${id}/delegation"`);
  });

  it("refuses our own domain in the create form, with the reason and the fields kept", async () => {
    await onlineHost();
    const { cookie } = await subscriber();
    const name = `hs-${crypto.randomUUID().slice(0, 8)}`;
    const response = await form("/servers", { name, region: "us-east", serverName: "x.berth.example" }, cookie);
    expect(response.status).toBe(400);
    const html = await response.text();
    expect(html).toContain("must be your own domain, not berth.example or a name under it");
    expect(html).toContain('value="x.berth.example"');
    expectLabelled(html);
  });

  it("is its owner's only: another customer sees no server and checks nothing", async () => {
    const { id } = await createdThroughForm();
    const stranger = (await subscriber()).cookie;
    const theirs = await page(`/servers/${id}/delegation`, stranger, 404);
    expect(theirs).toBe(await page(`/servers/${crypto.randomUUID()}/delegation`, stranger, 404));
    expect((await form(`/servers/${id}/delegation/check`, {}, stranger)).status).toBe(404);
    expect((await form(`/servers/${id}/delegation/publish-later`, { confirm: "yes" }, stranger)).status).toBe(404);
    expect((await form(`/servers/${id}/delegation/check`, {}, null)).status).toBe(303);
    expect(await countJobs(id, "homeserver.delegation_check")).toBe(1);
    expect(await countJobs(id, "homeserver.provision")).toBe(0);
  });
});
