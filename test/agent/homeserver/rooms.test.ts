// A homeserver's rooms, run by the agent against a real Synapse with the host's
// service account: listed with their metadata and never their content (a
// private room's name neither shown nor searchable), blocked so that a local
// user cannot join, and purged: gone from the list and from the database, with
// progress reported. One homeserver goes through all of it, in order.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerWithSharedSecret, requestJson } from "../../../agent/homeserver/synapse-api.ts";
import { TestRun, dockerUsable, ensureImages } from "./helpers.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`homeserver rooms tests skipped: ${unusable}`);

interface ListedRoom {
  roomId: string;
  public: boolean;
  name: string | null;
  canonicalAlias: string | null;
  members: number;
  localMembers: number;
  encryption: string | null;
  stateEvents: number;
  createdAt: number | null;
  blocked: boolean;
}
interface RoomPage {
  rooms: ListedRoom[];
  total: number;
  nextFrom: number | null;
}

const SECRET_MESSAGE = "the launch code is 0000, tell nobody";
const PRIVATE_NAME = "Secret plans";

describe.skipIf(unusable)("a homeserver's rooms (real Synapse)", () => {
  let run: TestRun;
  let spec: ReturnType<TestRun["spec"]>;
  const results: unknown[] = [];
  let alice: string;
  let bob: string;
  let town: string;
  let secret: string;
  let startedAt: number;

  const job = async <T>(kind: keyof TestRun["handlers"], payload: Record<string, unknown>): Promise<T> => {
    const result = (await run.run(kind, { serverId: spec.serverId, ...payload })) as T;
    results.push(result);
    return result;
  };
  const list = (query: { from?: number; limit?: number; search?: string; order?: string } = {}) =>
    job<RoomPage>("homeserver.rooms.list", { from: 0, limit: 100, order: "members", ...query });
  const client = async (token: string, method: string, path: string, body?: unknown) =>
    requestJson(`${await run.synapseBase(spec.serverId)}/_matrix/client/v3${path}`, { method, token, ...(body === undefined ? {} : { body }) });
  const sql = (query: string) => run.sql(spec.serverId, query);
  const createRoom = async (token: string, body: Record<string, unknown>) => {
    const answer = await client(token, "POST", "/createRoom", body);
    expect(answer.status).toBe(200);
    return (answer.body as { room_id: string }).room_id;
  };
  const say = async (token: string, roomId: string, text: string) => {
    const txn = randomBytes(8).toString("hex");
    const answer = await client(token, "PUT", `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${txn}`, { msgtype: "m.text", body: text });
    expect(answer.status).toBe(200);
  };
  const join = async (token: string, roomId: string) => (await client(token, "POST", `/join/${encodeURIComponent(roomId)}`, {})).status;

  beforeAll(async () => {
    await ensureImages();
    run = new TestRun();
    spec = run.spec("rooms");
    await run.run("homeserver.provision", spec);
    const base = await run.synapseBase(spec.serverId);
    // Only a server admin may publish a room in the directory (Synapse's default rules).
    const alicePassword = `alice-${randomBytes(8).toString("hex")}`;
    await registerWithSharedSecret(base, run.registrationSecret(spec.serverId), {
      localpart: "alice",
      password: alicePassword,
      admin: true,
      serverName: spec.serverName,
    });
    alice = (await run.login(spec.serverId, "alice", alicePassword)).token!;
    bob = (await run.login(spec.serverId, "bob", await run.registerUser(spec.serverId, spec.serverName, "bob"))).token!;
    startedAt = Date.now();
    town = await createRoom(alice, { preset: "public_chat", visibility: "public", name: "Town square", room_alias_name: "town" });
    secret = await createRoom(alice, { preset: "private_chat", name: PRIVATE_NAME, room_alias_name: "secret" });
    await say(alice, town, SECRET_MESSAGE);
    await say(alice, secret, SECRET_MESSAGE);
  }, 600_000);

  afterAll(async () => {
    await run?.cleanup();
  }, 180_000);

  it("rooms.list shows each room's metadata: a public room's name and alias, a private room's neither, and no content", async () => {
    const page = await list();
    expect(page.total).toBe(2);
    expect(page.nextFrom).toBeNull();
    const byId = new Map(page.rooms.map((room) => [room.roomId, room]));
    expect(byId.get(town)).toEqual({
      roomId: town,
      public: true,
      name: "Town square",
      canonicalAlias: `#town:${spec.serverName}`,
      members: 1,
      localMembers: 1,
      encryption: null,
      stateEvents: expect.any(Number),
      createdAt: expect.any(Number),
      blocked: false,
    });
    // Private rooms are encrypted by the generated configuration.
    expect(byId.get(secret)).toEqual({
      roomId: secret,
      public: false,
      name: null,
      canonicalAlias: null,
      members: 1,
      localMembers: 1,
      encryption: "m.megolm.v1.aes-sha2",
      stateEvents: expect.any(Number),
      createdAt: expect.any(Number),
      blocked: false,
    });
    for (const room of page.rooms) {
      expect(room.stateEvents).toBeGreaterThanOrEqual(5);
      expect(room.createdAt).toBeGreaterThanOrEqual(startedAt - 5_000);
      expect(room.createdAt).toBeLessThanOrEqual(Date.now());
    }
    const said = JSON.stringify(results) + (await run.everythingSaid(spec.serverId));
    expect(JSON.stringify(results)).not.toContain(PRIVATE_NAME);
    expect(JSON.stringify(results)).not.toContain("#secret");
    expect(said).not.toContain(SECRET_MESSAGE);
  });

  it("rooms.list orders, pages, and searches public rooms' names and aliases and any room's id, never a private room's name", async () => {
    const more = await createRoom(bob, { preset: "private_chat" });
    expect((await list({ order: "members" })).total).toBe(3);

    const paged: string[] = [];
    let from: number | null = 0;
    while (from !== null) {
      const page: RoomPage = await list({ from, limit: 1, order: "state_events" });
      expect(page.rooms.length).toBe(1);
      paged.push(page.rooms[0]!.roomId);
      from = page.nextFrom;
    }
    expect(new Set(paged)).toEqual(new Set([town, secret, more]));
    const all = await list({ order: "state_events" });
    expect(paged).toEqual(all.rooms.map((room) => room.roomId));
    expect(all.rooms.map((room) => room.stateEvents)).toEqual([...all.rooms.map((room) => room.stateEvents)].sort((a, b) => b - a));

    expect((await list({ search: "town" })).rooms.map((room) => room.roomId)).toEqual([town]);
    expect((await list({ search: "Square" })).rooms.map((room) => room.roomId)).toEqual([town]);
    expect(await list({ search: "secret" })).toEqual({ rooms: [], total: 0, nextFrom: null });
    expect(await list({ search: "plans" })).toEqual({ rooms: [], total: 0, nextFrom: null });
    expect(await list({ search: secret })).toEqual({ rooms: [expect.objectContaining({ roomId: secret, name: null })], total: 1, nextFrom: null });
    expect(await list({ search: `!nothing:${spec.serverName}` })).toEqual({ rooms: [], total: 0, nextFrom: null });
    expect(JSON.stringify(results)).not.toContain(PRIVATE_NAME);
  });

  it("rooms.block makes joining fail for a local user until unblocked; a room the server does not know is reported so", async () => {
    expect(await job("homeserver.rooms.block", { roomId: town, blocked: true })).toEqual({ outcome: "done", roomId: town, blocked: true });
    expect((await list({ search: town })).rooms[0]).toMatchObject({ blocked: true });
    expect(await join(bob, town)).toBe(403);

    expect(await job("homeserver.rooms.block", { roomId: town, blocked: false })).toEqual({ outcome: "done", roomId: town, blocked: false });
    expect((await list({ search: town })).rooms[0]).toMatchObject({ blocked: false });
    expect(await join(bob, town)).toBe(200);
    expect((await list({ search: town })).rooms[0]).toMatchObject({ members: 2, localMembers: 2 });

    const unknown = `!${randomBytes(9).toString("hex")}:${spec.serverName}`;
    expect(await job("homeserver.rooms.block", { roomId: unknown, blocked: true })).toEqual({ outcome: "room_not_found", roomId: unknown });
    expect(await sql(`SELECT count(*) FROM blocked_rooms WHERE room_id = '${unknown}';`)).toBe("0");
  });

  it("refuses what is no room id before Synapse sees it", async () => {
    for (const roomId of [
      "../../v1/users",
      `!a/../../x:${spec.serverName}`,
      "#town:example.org",
      "!",
      `!a b:${spec.serverName}`,
      `!a:${spec.serverName}?x=1`,
    ]) {
      await expect(job("homeserver.rooms.block", { roomId, blocked: true })).rejects.toThrow(/invalid payload/);
      await expect(job("homeserver.rooms.purge", { roomId })).rejects.toThrow(/invalid payload/);
    }
  });

  it("rooms.purge removes its local members and every event of the room, reporting progress; it is then gone", async () => {
    expect(Number(await sql(`SELECT count(*) FROM events WHERE room_id = '${secret}';`))).toBeGreaterThan(5);
    const progressBefore = run.progress.length;
    const started = Date.now();
    expect(await job("homeserver.rooms.purge", { roomId: secret })).toEqual({ outcome: "purged", roomId: secret, membersRemoved: 1, membersNotRemoved: 0 });
    console.info(`rooms.purge: a room of ${1} member purged in ${Date.now() - started} ms`);
    const progress = run.progress.slice(progressBefore);
    expect(progress[0]).toEqual({ progress: 0.05, message: "the deletion is scheduled" });
    for (const step of progress) expect(step.progress).toBeLessThanOrEqual(1);

    for (const table of ["events", "event_json", "current_state_events", "room_memberships", "room_aliases", "rooms"]) {
      expect([table, await sql(`SELECT count(*) FROM ${table} WHERE room_id = '${secret}';`)]).toEqual([table, "0"]);
    }
    expect((await list()).rooms.map((room) => room.roomId)).not.toContain(secret);
    expect(await list({ search: secret })).toEqual({ rooms: [], total: 0, nextFrom: null });
    expect((await client(alice, "GET", "/joined_rooms")).body).toEqual({ joined_rooms: [town] });

    expect(await job("homeserver.rooms.purge", { roomId: secret })).toEqual({ outcome: "room_not_found", roomId: secret });
    expect(await run.everythingSaid(spec.serverId, [results])).not.toContain(SECRET_MESSAGE);
  });

  it("needs Synapse running: a stopped server's rooms job fails saying so", async () => {
    await run.run("homeserver.stop", { serverId: spec.serverId });
    await expect(list()).rejects.toThrow(/is not running: start it first/);
    await run.run("homeserver.start", { serverId: spec.serverId });
    expect((await list({ search: "town" })).total).toBe(1);
  });
});
