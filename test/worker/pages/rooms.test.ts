import { beforeAll, describe, expect, it, vi } from "vitest";
import { call } from "../helpers";
import { subscriber } from "../billing/stripe-helpers";
import { administeredServer, answered, auditEntries, jobCount, nextJob, type AdministeredServer } from "../servers/administration-helpers";
import { expectLabelled } from "./page-checks";

// A homeserver's rooms page without JavaScript: the list (metadata only), block and unblock by
// plain POST, and a purge behind its confirmation page, with its progress on a page of its own.

const formHeaders = { "content-type": "application/x-www-form-urlencoded", accept: "text/html" };
const submit = (path: string, fields: Record<string, string>, cookie: string) =>
  call(path, { method: "POST", rawBody: new URLSearchParams(fields), headers: formHeaders, cookie });
const open = (path: string, cookie: string | null) => call(path, { cookie, headers: { accept: "text/html" } });

async function html(response: Response, status = 200): Promise<string> {
  const text = await response.text();
  expect(response.status, text).toBe(status);
  expect(response.headers.get("content-type")).toMatch(/^text\/html/);
  return text;
}

function room(roomId: string, fields: Record<string, unknown> = {}) {
  return {
    roomId,
    public: false,
    name: null,
    canonicalAlias: null,
    members: 7,
    localMembers: 3,
    encryption: "m.megolm.v1.aes-sha2",
    stateEvents: 41,
    createdAt: Date.UTC(2026, 2, 4),
    blocked: false,
    ...fields,
  };
}

describe("the rooms page", () => {
  let server: AdministeredServer;
  let town: string;
  let secret: string;
  const roomsPage = () => `/servers/${server.id}/rooms`;
  const purgePage = (roomId: string) => `${roomsPage()}/${encodeURIComponent(roomId)}/purge`;

  beforeAll(async () => {
    server = await administeredServer();
    town = `!Town:${server.serverName}`;
    secret = `!Secret:${server.serverName}`;
  });

  it("asks for a log-in, and shows a stranger the page of a server that does not exist", async () => {
    for (const path of [roomsPage(), purgePage(town), `${roomsPage()}/jobs/${crypto.randomUUID()}`]) {
      const anonymous = await open(path, null);
      expect(anonymous.status).toBe(303);
      expect(anonymous.headers.get("location")).toBe("/login");
    }
    const stranger = (await subscriber()).cookie;
    const theirs = await html(await open(roomsPage(), stranger), 404);
    const nothing = await html(await open(`/servers/${crypto.randomUUID()}/rooms`, stranger), 404);
    expect(theirs).toContain("No such server");
    expect(theirs.replace(server.id, "")).toBe(nothing.replace(/\/servers\/[0-9a-f-]+/g, ""));
    await html(await open(purgePage(town), stranger), 404);
    await html(await submit(`${roomsPage()}/${encodeURIComponent(town)}/block`, {}, stranger), 404);
    expect(await jobCount(server.id, "homeserver.rooms.block")).toBe(0);
  });

  it("lists the rooms in a table: a public room's name and address, a private room's neither; a search form; paging", async () => {
    const { response, job } = await answered(server, open(`${roomsPage()}?search=town&order=local_members`, server.owner.cookie), "homeserver.rooms.list", {
      fields: {
        rooms: [
          room(town, { public: true, name: "Town square", canonicalAlias: `#town:${server.serverName}`, encryption: null }),
          room(secret, { blocked: true }),
        ],
        total: 30,
        nextFrom: 2,
      },
    });
    expect(job.payload).toEqual({ serverId: server.id, search: "town", order: "local_members", from: 0, limit: 25 });
    const page = await html(response);
    expectLabelled(page);
    expect(page).toContain("<caption>Rooms 1–2 of 30, largest first by members on this homeserver</caption>");
    expect(page).toContain('<th scope="col">Encrypted</th>');
    expect(page).toContain("Town square");
    expect(page).toContain(`#town:${server.serverName}`);
    expect(page).toContain("Private room");
    expect(page).toContain("Yes (m.megolm.v1.aes-sha2)");
    expect(page).toContain("7 (3 here)");
    expect(page).toContain("Mar 4, 2026");
    expect(page).toContain(`action="${roomsPage()}/${encodeURIComponent(town)}/block"`);
    expect(page).toContain(`action="${roomsPage()}/${encodeURIComponent(secret)}/unblock"`);
    expect(page).toContain(`href="${purgePage(secret)}"`);
    expect(page).toContain('value="town"');
    expect(page).toMatch(/<option value="local_members" selected="">/);
    expect(page).toContain(`href="${roomsPage()}?order=local_members&amp;from=2&amp;limit=25&amp;search=town">Next rooms</a>`);
    expect(page).not.toContain("Previous rooms");
    expect(page).toContain(`href="/servers/${server.id}"`);
    expect(page).toContain("Never a message");
  });

  it("says so when the homeserver cannot answer, and refuses a bad query with the reason", async () => {
    const { response } = await answered(server, open(roomsPage(), server.owner.cookie), "homeserver.rooms.list", { error: "synapse down" });
    expect(await html(response, 502)).toContain("could not finish listing its rooms");
    expect(await html(await open(`${roomsPage()}?order=name`, server.owner.cookie), 400)).toContain("order:");
  });

  it("blocks and unblocks a room by plain POST, and says so on the list", async () => {
    const blocked = await answered(server, submit(`${roomsPage()}/${encodeURIComponent(town)}/block`, {}, server.owner.cookie), "homeserver.rooms.block");
    expect(blocked.job.payload).toEqual({ serverId: server.id, roomId: town, blocked: true });
    expect(blocked.response.status).toBe(303);
    const location = blocked.response.headers.get("location")!;
    expect(location).toBe(`${roomsPage()}?${new URLSearchParams({ done: "blocked", room: town })}`);
    const list = await answered(server, open(location, server.owner.cookie), "homeserver.rooms.list");
    expect(await html(list.response)).toContain(`${town} is blocked: nobody on your homeserver can join it`);
    expect(await auditEntries(server.id, "homeserver_room.block")).toHaveLength(1);

    const unblocked = await answered(server, submit(`${roomsPage()}/${encodeURIComponent(town)}/unblock`, {}, server.owner.cookie), "homeserver.rooms.block");
    expect(unblocked.job.payload.blocked).toBe(false);
    expect(unblocked.response.headers.get("location")).toContain("done=unblocked");

    const missing = await answered(server, submit(`${roomsPage()}/${encodeURIComponent(secret)}/block`, {}, server.owner.cookie), "homeserver.rooms.block", {
      fields: { outcome: "room_not_found", roomId: secret },
    });
    expect(await html(missing.response, 404)).toContain("is not a room this homeserver knows");
    expect(await html(await submit(`${roomsPage()}/not-a-room/block`, {}, server.owner.cookie), 400)).toContain("a Matrix room id");
  });

  it("purges only through its confirmation page, which says what is deleted, then shows the result in plain words", async () => {
    const confirm = await html(await open(purgePage(secret), server.owner.cookie));
    expectLabelled(confirm);
    expect(confirm).toContain(secret);
    expect(confirm).toContain("every event of the room");
    expect(confirm).toContain("media store");
    expect(confirm).toContain("local members are removed");
    expect(confirm).toContain("cannot be undone");
    expect(confirm).toContain(`action="${purgePage(secret)}"`);
    expect(await html(await open(purgePage("#alias:example.org"), server.owner.cookie), 400)).toContain("a Matrix room id");

    const refused = await html(await submit(purgePage(secret), { confirm: "yes" }, server.owner.cookie), 400);
    expect(refused).toContain('role="alert"');
    expect(refused).toContain("To purge it");
    expect(await jobCount(server.id, "homeserver.rooms.purge")).toBe(0);

    const { response, job } = await answered(server, submit(purgePage(secret), { confirm: secret }, server.owner.cookie), "homeserver.rooms.purge", {
      fields: { membersRemoved: 3, membersNotRemoved: 0 },
    });
    expect(job.payload).toEqual({ serverId: server.id, roomId: secret });
    const done = await html(response);
    expect(done).toContain(`${secret} is purged. 3 local members were removed from it. Deleted: every event of the room`);
    expect(await auditEntries(server.id, "homeserver_room.purge")).toHaveLength(1);
  });

  it("shows a purge the host has not finished on its own page, with its progress, then its result", async () => {
    const slow = await administeredServer();
    const roomId = `!Slow:${slow.serverName}`;
    const path = `/servers/${slow.id}/rooms/${encodeURIComponent(roomId)}/purge`;
    const response = await submit(path, { confirm: roomId }, slow.owner.cookie);
    expect(response.status).toBe(303);
    const location = response.headers.get("location")!;
    expect(location).toMatch(new RegExp(`^/servers/${slow.id}/rooms/jobs/[0-9a-f-]+$`));

    const job = await nextJob(slow, "homeserver.rooms.purge");
    slow.agent.send({ type: "job.progress", id: job.id, progress: 0.35, message: "1 of 2 local members removed" });
    await vi.waitFor(async () => {
      const page = await html(await open(location, slow.owner.cookie));
      expect(page).toContain("Still under way on your homeserver: 35% done (1 of 2 local members removed).");
      expect(page).toContain(`href="${location}"`);
    });
    slow.agent.send({ type: "job.result", id: job.id, ok: true, result: { outcome: "purged", roomId, membersRemoved: 2, membersNotRemoved: 0 } });
    await vi.waitFor(async () => {
      expect(await html(await open(location, slow.owner.cookie))).toContain(`${roomId} is purged. 2 local members were removed from it.`);
    });
    // Another server's owner cannot read it.
    await html(await open(location, server.owner.cookie), 404);
  });
});
