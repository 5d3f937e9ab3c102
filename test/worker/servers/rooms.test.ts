import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { subscriber } from "../billing/stripe-helpers";
import { advance, call, expectError, MINUTE, post, runCron, type CallOptions } from "../helpers";
import { administeredServer, answered, auditEntries, auditText, jobCount, nextJob, userIdOf, type AdministeredServer } from "./administration-helpers";

const ROOM_KINDS = ["homeserver.rooms.list", "homeserver.rooms.block", "homeserver.rooms.purge"];

const roomsOf = (server: { id: string }) => `/api/servers/${server.id}/rooms`;
const roomPath = (server: { id: string }, roomId: string, action: string) => `${roomsOf(server)}/${encodeURIComponent(roomId)}/${action}`;

const roomIdOn = (server: AdministeredServer, opaque = "AbCdEfGhIjKlMnOpQr") => `!${opaque}:${server.serverName}`;

/** A room as the agent reports it. */
function reportedRoom(roomId: string, fields: Record<string, unknown> = {}) {
  return {
    roomId,
    public: false,
    name: null,
    canonicalAlias: null,
    members: 3,
    localMembers: 2,
    encryption: "m.megolm.v1.aes-sha2",
    stateEvents: 12,
    createdAt: Date.UTC(2026, 0, 2),
    blocked: false,
    ...fields,
  };
}

async function roomJobCount(serverId: string): Promise<number> {
  let total = 0;
  for (const kind of ROOM_KINDS) total += await jobCount(serverId, kind);
  return total;
}

describe("a homeserver's rooms: who may reach them", () => {
  let server: AdministeredServer;
  let stranger: string;

  beforeAll(async () => {
    server = await administeredServer();
    stranger = (await subscriber()).cookie;
  });

  /** Every owner-only route, as [method, path, body]. */
  const routes = (id: string, roomId: string): [string, string, unknown][] => [
    ["GET", `/api/servers/${id}/rooms`, undefined],
    ["POST", `/api/servers/${id}/rooms/${encodeURIComponent(roomId)}/block`, undefined],
    ["POST", `/api/servers/${id}/rooms/${encodeURIComponent(roomId)}/unblock`, undefined],
    ["POST", `/api/servers/${id}/rooms/${encodeURIComponent(roomId)}/purge`, { confirm: roomId }],
  ];
  const send = (method: string, path: string, body: unknown, cookie: string | null) =>
    call(path, { method, cookie, ...(body === undefined ? {} : { body }) } satisfies CallOptions);

  it("are the owner's only: another customer gets the same 404 as an id of nothing, and no job is sent", async () => {
    const missing = crypto.randomUUID();
    for (const [method, path, body] of routes(server.id, roomIdOn(server))) {
      const theirs = await send(method, path, body, stranger);
      const nothing = await send(method, path.replace(server.id, missing), body, stranger);
      expect([method, path, theirs.status]).toEqual([method, path, 404]);
      expect(await theirs.json()).toEqual(await nothing.json());
    }
    // Even without the confirmation, a stranger learns nothing but 404.
    await expectError(await post(roomPath(server, roomIdOn(server), "purge"), undefined, { cookie: stranger }), 404, "not_found");
    expect(await roomJobCount(server.id)).toBe(0);
  });

  it("need a session: an unauthenticated caller gets 401", async () => {
    for (const [method, path, body] of routes(server.id, roomIdOn(server))) {
      await expectError(await send(method, path, body, null), 401, "unauthorized");
    }
  });

  it("refuse what is no room id with 400, without sending a job", async () => {
    const junk = [
      "AbCdEf:example.org",
      "#town:example.org",
      "@alice:example.org",
      "!",
      "!a/../../v1/users",
      "!a b:example.org",
      "!a:example.org/x",
      "!a:exa_mple.org",
      `!${"a".repeat(256)}`,
      "!a:example.org?x",
      "!<script>:example.org",
    ];
    for (const roomId of junk) {
      for (const action of ["block", "unblock"]) {
        await expectError(await post(roomPath(server, roomId, action), undefined, { cookie: server.owner.cookie }), 400, "validation_failed");
      }
      await expectError(await post(roomPath(server, roomId, "purge"), { confirm: roomId }, { cookie: server.owner.cookie }), 400, "validation_failed");
    }
    expect(await roomJobCount(server.id)).toBe(0);
  });

  it("refuse bad list queries with 400", async () => {
    for (const query of ["limit=0", "limit=101", "from=-1", "from=x", `search=${"s".repeat(256)}`, "order=name", "order=", "other=1"]) {
      await expectError(await call(`${roomsOf(server)}?${query}`, { cookie: server.owner.cookie }), 400, "validation_failed");
    }
    expect(await jobCount(server.id, "homeserver.rooms.list")).toBe(0);
  });

  it("refuse a purge without the room's id as confirmation, saying what it would delete; nothing is sent", async () => {
    const roomId = roomIdOn(server);
    for (const body of [undefined, {}, { confirm: "yes" }, { confirm: roomIdOn(server, "Other") }, { confirm: roomId.toUpperCase() }]) {
      const response = await post(roomPath(server, roomId, "purge"), body, { cookie: server.owner.cookie });
      const text = await response.clone().text();
      await expectError(response, 400, "confirmation_required");
      expect(text).toContain(roomId);
      expect(text).toMatch(/every event of the room/);
      expect(text).toMatch(/local members are removed/);
      expect(text).toMatch(/media/);
      expect(text).toMatch(/cannot be undone/);
    }
    await expectError(await post(roomPath(server, roomId, "purge"), { confirm: roomId, also: 1 }, { cookie: server.owner.cookie }), 400, "validation_failed");
    expect(await jobCount(server.id, "homeserver.rooms.purge")).toBe(0);
    expect(await auditEntries(server.id, "homeserver_room.purge")).toEqual([]);
  });

  it("need an account that billing lets run homeservers (403) and a running homeserver (409)", async () => {
    const unpaid = await administeredServer();
    await env.DB.prepare("UPDATE entitlements SET state = 'suspended' WHERE user_id = ?")
      .bind(await userIdOf(unpaid.owner.email))
      .run();
    await expectError(await call(roomsOf(unpaid), { cookie: unpaid.owner.cookie }), 403, "not_entitled");
    await expectError(await post(roomPath(unpaid, roomIdOn(unpaid), "block"), undefined, { cookie: unpaid.owner.cookie }), 403, "not_entitled");
    const stopped = await administeredServer();
    await env.DB.prepare("UPDATE servers SET status = 'stopped' WHERE id = ?").bind(stopped.id).run();
    await expectError(await call(roomsOf(stopped), { cookie: stopped.owner.cookie }), 409, "invalid_state");
    const roomId = roomIdOn(stopped);
    await expectError(await post(roomPath(stopped, roomId, "purge"), { confirm: roomId }, { cookie: stopped.owner.cookie }), 409, "invalid_state");
    expect((await roomJobCount(unpaid.id)) + (await roomJobCount(stopped.id))).toBe(0);
  });
});

describe("a homeserver's rooms: what the owner does", () => {
  let server: AdministeredServer;

  beforeAll(async () => {
    server = await administeredServer();
  });

  it("lists them, searched, ordered and paged, as the host reports them", async () => {
    const town = reportedRoom(roomIdOn(server, "Town"), { public: true, name: "Town square", canonicalAlias: `#town:${server.serverName}`, encryption: null });
    const secret = reportedRoom("!48FXGcmc1-3R0EUJsXlYxUhN4uzVDr4WjpfeJK1AVas", { blocked: true, createdAt: null });
    const { response, job } = await answered(
      server,
      call(`${roomsOf(server)}?search=town&order=local_members&from=10&limit=5`, { cookie: server.owner.cookie }),
      "homeserver.rooms.list",
      { fields: { rooms: [town, secret], total: 12, nextFrom: null } },
    );
    expect(job.payload).toEqual({ serverId: server.id, search: "town", order: "local_members", from: 10, limit: 5 });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      rooms: [
        { ...town, createdAt: "2026-01-02T00:00:00.000Z" },
        { ...secret, createdAt: null },
      ],
      total: 12,
      nextFrom: null,
    });

    const plain = await answered(server, call(`${roomsOf(server)}?search=%20%20`, { cookie: server.owner.cookie }), "homeserver.rooms.list");
    expect(plain.job.payload).toEqual({ serverId: server.id, order: "members", from: 0, limit: 25 });
  });

  it("takes from the host only what the catalogue allows: no private room's name, no content, nothing unbounded", async () => {
    const roomId = roomIdOn(server, "Private");
    const injections: Record<string, unknown>[] = [
      { rooms: [reportedRoom(roomId, { name: "Secret plans" })] },
      { rooms: [reportedRoom(roomId, { canonicalAlias: "#secret:example.org" })] },
      { rooms: [reportedRoom(roomId, { public: true, name: "x".repeat(256) })] },
      { rooms: [reportedRoom("!<img src=x onerror=alert(1)>:example.org")] },
      { rooms: [reportedRoom(roomId, { encryption: "e".repeat(65) })] },
      { rooms: Array.from({ length: 101 }, (_, i) => reportedRoom(roomIdOn(server, `R${i}`))) },
    ];
    for (const fields of injections) {
      const { response } = await answered(server, call(roomsOf(server), { cookie: server.owner.cookie }), "homeserver.rooms.list", { fields });
      await expectError(response, 502, "homeserver_error");
    }
    // Fields the catalogue does not know are dropped before they are stored.
    const { response, job } = await answered(server, call(roomsOf(server), { cookie: server.owner.cookie }), "homeserver.rooms.list", {
      fields: { rooms: [{ ...reportedRoom(roomId), lastMessage: "the launch code is 0000" }], total: 1, nextFrom: null, messages: ["hello"] },
    });
    expect(response.status).toBe(200);
    const text = await response.text();
    const stored = await env.DB.prepare("SELECT result FROM jobs WHERE id = ?").bind(job.id).first<{ result: string }>();
    for (const said of [text, stored!.result]) {
      expect(said).not.toContain("launch code");
      expect(said).not.toContain("hello");
    }
  });

  it("blocks and unblocks a room, auditing who did it to which room", async () => {
    const roomId = roomIdOn(server, "Spam");
    const owner = `user:${await userIdOf(server.owner.email)}`;
    for (const [action, blocked] of [
      ["block", true],
      ["unblock", false],
    ] as const) {
      const { response, job } = await answered(
        server,
        post(roomPath(server, roomId, action), undefined, { cookie: server.owner.cookie }),
        "homeserver.rooms.block",
      );
      expect(job.payload).toEqual({ serverId: server.id, roomId, blocked });
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ roomId, blocked });
      expect(await auditEntries(server.id, `homeserver_room.${action}`)).toEqual([
        { actor: owner, action: `homeserver_room.${action}`, target: server.id, detail: { roomId, jobId: job.id } },
      ]);
    }
  });

  it("purges a room once confirmed, saying what was deleted, and audits it", async () => {
    const roomId = "!48FXGcmc1-3R0EUJsXlYxUhN4uzVDr4WjpfeJK1AVas";
    const { response, job } = await answered(
      server,
      post(roomPath(server, roomId, "purge"), { confirm: roomId }, { cookie: server.owner.cookie }),
      "homeserver.rooms.purge",
      { fields: { membersRemoved: 4, membersNotRemoved: 1 } },
    );
    expect(job.payload).toEqual({ serverId: server.id, roomId });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { deleted: string[] };
    expect(body).toEqual({ roomId, purged: true, membersRemoved: 4, membersNotRemoved: 1, deleted: expect.any(Array) });
    expect(body.deleted.join(" ")).toMatch(/every event of the room/);
    expect(await auditEntries(server.id, "homeserver_room.purge")).toEqual([
      { actor: `user:${await userIdOf(server.owner.email)}`, action: "homeserver_room.purge", target: server.id, detail: { roomId, jobId: job.id } },
    ]);
  });

  it("answers a room the homeserver does not know with 404 room_not_found", async () => {
    const roomId = roomIdOn(server, "Gone");
    for (const [action, kind, body] of [
      ["block", "homeserver.rooms.block", undefined],
      ["unblock", "homeserver.rooms.block", undefined],
      ["purge", "homeserver.rooms.purge", { confirm: roomId }],
    ] as const) {
      const { response } = await answered(server, post(roomPath(server, roomId, action), body, { cookie: server.owner.cookie }), kind, {
        fields: { outcome: "room_not_found", roomId },
      });
      await expectError(response, 404, "room_not_found");
    }
  });

  it("answers a failure on the host in our words (502), and a host that did not finish in time with 503", async () => {
    const { response } = await answered(server, call(roomsOf(server), { cookie: server.owner.cookie }), "homeserver.rooms.list", {
      error: "Synapse's admin API refused GET /v1/rooms: 500 M_UNKNOWN at /var/lib/berth",
    });
    const text = await response.clone().text();
    await expectError(response, 502, "homeserver_error");
    expect(text).not.toContain("/var/lib");
    expect(text).not.toContain("M_UNKNOWN");

    const request = post(roomPath(server, roomIdOn(server), "block"), undefined, { cookie: server.owner.cookie });
    await nextJob(server, "homeserver.rooms.block");
    // The job's deadline passes while the request waits; the cron fails it.
    advance(6 * MINUTE);
    await runCron();
    vi.useRealTimers();
    await expectError(await request, 503, "homeserver_unavailable");
  });

  it("never audits a list, nor a room's name", async () => {
    await answered(server, call(roomsOf(server), { cookie: server.owner.cookie }), "homeserver.rooms.list", {
      fields: { rooms: [reportedRoom(roomIdOn(server, "Quiet"), { public: true, name: "Quiet corner" })], total: 1, nextFrom: null },
    });
    const text = await auditText(server.id);
    expect(text).not.toContain("Quiet");
    expect(text).not.toContain("homeserver_room.list");
  });
});

describe("a purge that takes longer than the request waits", () => {
  it("answers 202 with the job; the job route gives the purge's answer once it is done", async () => {
    const server = await administeredServer();
    const roomId = roomIdOn(server);
    const response = await post(roomPath(server, roomId, "purge"), { confirm: roomId }, { cookie: server.owner.cookie });
    expect(response.status).toBe(202);
    const { job } = (await response.json()) as { job: { id: string; kind: string; status: string; poll: string } };
    expect(job).toMatchObject({ kind: "homeserver.rooms.purge", status: "pending", poll: `/api/servers/${server.id}/jobs/${job.id}` });
    expect(await (await call(job.poll, { cookie: server.owner.cookie })).json()).toMatchObject({ job: { status: "pending", result: null } });

    const delivered = await nextJob(server, "homeserver.rooms.purge");
    expect(delivered.id).toBe(job.id);
    server.agent.send({ type: "job.progress", id: job.id, progress: 0.3, message: "1 of 2 local members removed" });
    server.agent.send({ type: "job.result", id: job.id, ok: true, result: { outcome: "purged", roomId, membersRemoved: 2, membersNotRemoved: 0 } });
    await vi.waitFor(async () => {
      const polled = (await (await call(job.poll, { cookie: server.owner.cookie })).json()) as { job: { status: string; result: unknown } };
      expect(polled.job).toMatchObject({ status: "succeeded", result: { roomId, purged: true, membersRemoved: 2 } });
    });
  });
});
