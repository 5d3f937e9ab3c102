// What the agent takes from a Synapse that answers as it likes: a compromised
// Synapse on the host (which no real one can be made to play) answers the rooms
// calls, and the admin client refuses what is not a room list of bounded
// strings, and sends no request for what is no room id.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SynapseAdmin } from "../../../agent/homeserver/synapse-admin.ts";

const room = (fields: Record<string, unknown> = {}) => ({
  room_id: "!AbCdEf:example.org",
  name: "Town square",
  canonical_alias: "#town:example.org",
  joined_members: 3,
  joined_local_members: 2,
  encryption: null,
  public: true,
  join_rules: "public",
  state_events: 9,
  ...fields,
});

describe("Synapse's rooms answers, as the agent reads them", () => {
  let server: Server;
  let base: string;
  let answer: unknown = {};
  const requested: string[] = [];

  beforeAll(async () => {
    server = createServer((request, response) => {
      requested.push(request.url ?? "");
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify(answer));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const admin = () => new SynapseAdmin(base, "token");
  const list = () => admin().rooms({ from: 0, limit: 10, order: "joined_members" });

  it("takes a room list of the fields it knows, cutting what a room's members wrote to 255 characters", async () => {
    answer = { rooms: [room({ name: "n".repeat(5000), topic: "a message", messages: ["hello"] })], total_rooms: 1 };
    const { rooms, total } = await list();
    expect(total).toBe(1);
    expect(rooms[0]!.name).toBe("n".repeat(255));
    expect(JSON.stringify(rooms)).not.toMatch(/message|hello/);
    expect(requested.at(-1)).toBe("/_synapse/admin/v1/rooms?from=0&limit=10&order_by=joined_members");
  });

  it("refuses a list that is not one: odd room ids, unbounded strings, odd counts and algorithms, too many rooms", async () => {
    const refused = [
      { rooms: [room({ room_id: "!a/../../v1/users:example.org" })], total_rooms: 1 },
      { rooms: [room({ room_id: "<script>" })], total_rooms: 1 },
      { rooms: [room({ name: "n".repeat(70_000) })], total_rooms: 1 },
      { rooms: [room({ joined_members: -1 })], total_rooms: 1 },
      { rooms: [room({ state_events: 1.5 })], total_rooms: 1 },
      { rooms: [room({ encryption: "<b>megolm</b>" })], total_rooms: 1 },
      { rooms: [room({ public: "yes" })], total_rooms: 1 },
      { rooms: Array.from({ length: 501 }, () => room()), total_rooms: 501 },
      { rooms: "all of them", total_rooms: 1 },
    ];
    for (const body of refused) {
      answer = body;
      await expect(list()).rejects.toThrow(/answered GET \/v1\/rooms unexpectedly/);
    }
  });

  it("sends nothing for what is no room id, and encodes the ids it sends", async () => {
    const before = requested.length;
    for (const roomId of ["../../v1/users", "!a/b:example.org", "!a:example.org?x=1", "#town:example.org", "!a b:example.org"]) {
      await expect(admin().room(roomId)).rejects.toThrow(/not a Matrix room id/);
      await expect(admin().setRoomBlocked(roomId, true)).rejects.toThrow(/not a Matrix room id/);
      await expect(admin().startRoomDeletion(roomId)).rejects.toThrow(/not a Matrix room id/);
    }
    expect(requested.length).toBe(before);
    answer = room();
    await admin().room("!AbCdEf:example.org");
    expect(requested.at(-1)).toBe("/_synapse/admin/v1/rooms/!AbCdEf%3Aexample.org");
  });
});
