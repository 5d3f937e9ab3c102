import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { call, logIn, verifiedUser } from "../helpers";
import { enrolledHost, succeeded } from "../fleet/fleet-helpers";
import { anotherHost, hostWithServers, jobFor, migrationsOf } from "../servers/migration-helpers";
import { serverView } from "../servers/server-helpers";
import { expectLabelled, page } from "./page-checks";

// The operator console's drain and move actions: each asks for confirmation on a page of its own,
// runs the same service as /api/admin, and the host's page shows how the drain and the moves stand.

beforeEach(async () => {
  // Earlier tests' hosts must not take this test's homeservers.
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const formHeaders = { "content-type": "application/x-www-form-urlencoded", accept: "text/html" };
const submit = (path: string, fields: Record<string, string>, cookie: string, headers: Record<string, string> = {}) =>
  call(path, { method: "POST", rawBody: new URLSearchParams(fields), headers: { ...formHeaders, ...headers }, cookie });

async function hostState(id: string) {
  return (await env.DB.prepare("SELECT state FROM hosts WHERE id = ?").bind(id).first<{ state: string }>())!.state;
}

async function drainsOf(hostId: string) {
  return (await env.DB.prepare("SELECT count(*) AS n FROM host_drains WHERE host_id = ?").bind(hostId).first<{ n: number }>())!.n;
}

async function movesOf(serverId: string) {
  return (await env.DB.prepare("SELECT count(*) AS n FROM server_migrations WHERE server_id = ?").bind(serverId).first<{ n: number }>())!.n;
}

/** One running homeserver on a host with a second host of its region; the paths of the actions on it. */
async function oneServer(region: string) {
  const fleet = await hostWithServers(1, region);
  const sourceId = fleet.source.host.hostId;
  const serverId = fleet.servers[0]!.id;
  const move = { server: serverId, target: fleet.target.host.hostId };
  return {
    ...fleet,
    serverId,
    serverName: (await serverView(fleet.servers[0]!.cookie, serverId)).serverName,
    move,
    hostPage: `/operator/hosts/${sourceId}`,
    drainPath: `/operator/hosts/${sourceId}/drain`,
    movePath: `/operator/hosts/${sourceId}/move`,
    moveQuery: `/operator/hosts/${sourceId}/move?${new URLSearchParams(move)}`,
  };
}

async function expectNothingStarted(fleet: Awaited<ReturnType<typeof oneServer>>) {
  expect(await hostState(fleet.source.host.hostId)).toBe("active");
  expect(await drainsOf(fleet.source.host.hostId)).toBe(0);
  expect(await movesOf(fleet.serverId)).toBe(0);
}

describe("draining and moving from the operator console", () => {
  it("answers a customer as for an address with nothing at it, for the confirmation pages and both actions, starting nothing", async () => {
    const fleet = await oneServer("us-east");
    const customer = await logIn((await verifiedUser()).email);
    const missing = await page("/operator/no-such-page", customer, 404);
    expect(await page(fleet.drainPath, customer, 404)).toBe(missing);
    expect(await page(fleet.moveQuery, customer, 404)).toBe(missing);
    for (const [path, fields] of [
      [fleet.drainPath, { confirm: "drain" }],
      [fleet.movePath, { ...fleet.move, confirm: "move" }],
    ] as const) {
      const response = await submit(path, fields, customer);
      expect(response.status, path).toBe(404);
      expect(await response.text()).toBe(missing);
    }
    await expectNothingStarted(fleet);
  });

  it("refuses both actions posted from another site, starting nothing", async () => {
    const fleet = await oneServer("us-east");
    for (const [path, fields] of [
      [fleet.drainPath, { confirm: "drain" }],
      [fleet.movePath, { ...fleet.move, confirm: "move" }],
    ] as const) {
      const response = await submit(path, fields, fleet.operator, { "sec-fetch-site": "cross-site" });
      expect(response.status, path).toBe(403);
      expect(await response.text()).toContain("Cross-site request refused.");
    }
    await expectNothingStarted(fleet);
  });

  it("starts nothing without the confirmation page's button", async () => {
    const fleet = await oneServer("us-east");
    const drain = await submit(fleet.drainPath, {}, fleet.operator);
    expect(drain.status).toBe(400);
    expect(await drain.text()).toContain("Confirm the drain on this page to start it.");
    const move = await submit(fleet.movePath, fleet.move, fleet.operator);
    expect(move.status).toBe(400);
    expect(await move.text()).toContain("Confirm the move on this page to start it.");
    await expectNothingStarted(fleet);
  });

  it("drains a host after its confirmation page says what will happen, then shows the drain's progress and moves", async () => {
    const fleet = await oneServer("us-central");
    const before = await page(fleet.hostPage, fleet.operator);
    expect(before).toContain("This host was never drained.");
    expect(before).toContain(`href="${fleet.drainPath}"`);

    const confirmation = await page(fleet.drainPath, fleet.operator);
    expectLabelled(confirmation);
    expect(confirmation).toContain("The host stops taking new homeservers");
    expect(confirmation).toContain("one running homeserver moves");
    expect(confirmation).toContain("other hosts of us-central, 2 at a time");
    await expectNothingStarted(fleet);

    const started = await submit(fleet.drainPath, { confirm: "drain" }, fleet.operator);
    expect(started.status).toBe(303);
    expect(started.headers.get("location")).toBe(`${fleet.hostPage}?notice=host_drain_started`);
    expect(await hostState(fleet.source.host.hostId)).toBe("draining");
    await jobFor(fleet.target.agent, "homeserver.provision", fleet.serverId);

    const during = await page(`${fleet.hostPage}?notice=host_drain_started`, fleet.operator);
    expectLabelled(during);
    expect(during).toContain("The drain has started");
    expect(during).toContain("A drain is under way");
    expect(during).toMatch(/<dt>Homeservers<\/dt><dd>1<\/dd><dt>Moved<\/dt><dd>0<\/dd><dt>Failed \(still here\)<\/dt><dd>0<\/dd><dt>Moving<\/dt><dd>1<\/dd>/);
    // Its move names the homeserver as the operator knows it, and links to the host it goes to.
    expect(during).toContain(
      `<td>${fleet.serverName} <span class="hint">${fleet.serverId}</span></td><td></td><td><a href="/operator/hosts/${fleet.target.host.hostId}">${fleet.target.host.name}</a></td><td>provisioning target</td>`,
    );
    // While it runs there is no second drain to start.
    expect(during).not.toContain(`href="${fleet.drainPath}"`);
    const [migration] = await migrationsOf(fleet.operator, `serverId=${fleet.serverId}`);
    expect(migration).toMatchObject({ sourceHostId: fleet.source.host.hostId, targetHostId: fleet.target.host.hostId, drainId: expect.any(String) });
  });

  it("names what a drain leaves on the host, with why", async () => {
    const fleet = await oneServer("us-west");
    const { cookie } = fleet.servers[0]!;
    expect((await call(`/api/servers/${fleet.serverId}/stop`, { method: "POST", cookie })).status).toBe(202);
    fleet.source.agent.send(succeeded((await jobFor(fleet.source.agent, "homeserver.stop", fleet.serverId)).job));
    await vi.waitFor(async () => expect((await serverView(cookie, fleet.serverId)).status).toBe("stopped"));

    expect((await submit(fleet.drainPath, { confirm: "drain" }, fleet.operator)).status).toBe(303);
    const after = await page(fleet.hostPage, fleet.operator);
    expect(after).toContain("The last drain ended");
    expect(after).toContain(`<li>${fleet.serverName} <span class="hint">${fleet.serverId}</span>: it is stopped: only running homeservers are moved</li>`);
  });

  it("moves a homeserver to the host chosen in its row, after a confirmation page naming it and both hosts", async () => {
    const fleet = await oneServer("us-west");
    const hostPage = await page(fleet.hostPage, fleet.operator);
    expectLabelled(hostPage);
    expect(hostPage).toContain(`<option value="${fleet.target.host.hostId}">${fleet.target.host.name} (online)</option>`);
    expect(hostPage).toContain("No homeserver moved into or out of this host.");

    const confirmation = await page(fleet.moveQuery, fleet.operator);
    expect(confirmation).toMatch(new RegExp(`hs-[^ ]+ moves from host ${fleet.source.host.name} to host ${fleet.target.host.name} \\(us-west\\)`));
    expect(await page(`${fleet.hostPage}/move?server=${crypto.randomUUID()}&target=${fleet.move.target}`, fleet.operator, 404)).toContain(
      "No such homeserver on this host.",
    );
    await expectNothingStarted(fleet);

    const started = await submit(fleet.movePath, { ...fleet.move, confirm: "move" }, fleet.operator);
    expect(started.status).toBe(303);
    expect(started.headers.get("location")).toBe(`${fleet.hostPage}?notice=migration_started`);
    await jobFor(fleet.target.agent, "homeserver.provision", fleet.serverId);
    const [migration] = await migrationsOf(fleet.operator, `serverId=${fleet.serverId}`);
    expect(migration).toMatchObject({ targetHostId: fleet.target.host.hostId, drainId: null, phase: "provisioning_target" });

    for (const shown of [await page(fleet.hostPage, fleet.operator), await page(`/operator/hosts/${fleet.target.host.hostId}`, fleet.operator)]) {
      expect(shown).toContain("Moves into or out of this host, newest first");
      expect(shown).toContain(
        `<td>${fleet.serverName} <span class="hint">${fleet.serverId}</span></td>` +
          `<td><a href="${fleet.hostPage}">${fleet.source.host.name}</a></td>` +
          `<td><a href="/operator/hosts/${fleet.target.host.hostId}">${fleet.target.host.name}</a></td><td>provisioning target</td>`,
      );
    }
    const audit = await env.DB.prepare("SELECT action FROM audit_log WHERE target = ? AND action = 'migration.started'").bind(fleet.serverId).all();
    expect(audit.results).toHaveLength(1);
  });

  it("shows a refused move's reason in words on its page, starting nothing", async () => {
    const fleet = await oneServer("us-east");
    const offline = await enrolledHost(fleet.operator, "us-east");
    const elsewhere = await anotherHost(fleet.operator, "us-west");
    for (const [target, reason] of [
      [offline.hostId, "The target host is not connected."],
      [elsewhere.host.hostId, "The homeserver is in us-east; it moves only to a host of that region."],
    ] as const) {
      const refused = await submit(fleet.movePath, { server: fleet.serverId, target, confirm: "move" }, fleet.operator);
      expect(refused.status).toBe(409);
      const html = await refused.text();
      expect(html).toContain(reason);
      expect(html).toContain("Move the homeserver");
    }
    await expectNothingStarted(fleet);
  });
});

describe("cancelling a drain from the operator console", () => {
  async function draining() {
    const fleet = await oneServer("us-central");
    expect((await submit(fleet.drainPath, { confirm: "drain" }, fleet.operator)).status).toBe(303);
    return { ...fleet, cancelPath: `${fleet.drainPath}/cancel` };
  }
  const cancelledAt = async (hostId: string) =>
    (await env.DB.prepare("SELECT cancelled_at FROM host_drains WHERE host_id = ?").bind(hostId).first<{ cancelled_at: number | null }>())!.cancelled_at;

  it("answers a customer as for an address with nothing at it, and refuses a bare POST: the drain goes on", async () => {
    const fleet = await draining();
    const customer = await logIn((await verifiedUser()).email);
    const missing = await page("/operator/no-such-page", customer, 404);
    expect(await page(fleet.cancelPath, customer, 404)).toBe(missing);
    const refused = await submit(fleet.cancelPath, { confirm: "cancel" }, customer);
    expect(refused.status).toBe(404);
    const bare = await submit(fleet.cancelPath, {}, fleet.operator);
    expect(bare.status).toBe(400);
    expect(await bare.text()).toContain("Confirm on this page to cancel the drain.");
    expect(await cancelledAt(fleet.source.host.hostId)).toBeNull();
  });

  it("is offered on the host's page while a drain runs, confirmed on its own page, and leaves the host draining", async () => {
    const fleet = await draining();
    expect(await page(fleet.hostPage, fleet.operator)).toContain(`href="${fleet.cancelPath}"`);
    const confirmation = await page(fleet.cancelPath, fleet.operator);
    expectLabelled(confirmation);
    expect(confirmation).toContain("No more of its homeservers start moving. Moves under way now: 1.");
    expect(confirmation).toContain("The host stays draining");

    const cancelled = await submit(fleet.cancelPath, { confirm: "cancel" }, fleet.operator);
    expect(cancelled.status).toBe(303);
    expect(cancelled.headers.get("location")).toBe(`${fleet.hostPage}?notice=host_drain_cancelled`);
    expect(await cancelledAt(fleet.source.host.hostId)).not.toBeNull();
    const after = await page(`${fleet.hostPage}?notice=host_drain_cancelled`, fleet.operator);
    expect(after).toContain("The drain is cancelled");
    expect(after).toContain("no more moves start; those under way finish or roll back. The host stays draining until you set it active.");
    expect(after).not.toContain(`href="${fleet.cancelPath}"`);
    expect(await hostState(fleet.source.host.hostId)).toBe("draining");
    // Nothing more to cancel.
    await page(fleet.cancelPath, fleet.operator, 404);
  });
});
