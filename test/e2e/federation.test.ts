// Federation, end to end on this machine: two customers each run a Berth homeserver on the
// local agent (scripts/dev.mjs with its agent and Caddy, as homeserver.test.ts), and the two
// servers federate through Caddy as two hosts' would through theirs: a user on B joins a public
// room on A, messages flow both ways, and an end-to-end encrypted DM between the two servers
// decrypts on both sides (matrix-js-sdk with its Rust crypto).
//
// Matrix servers find each other's .well-known on port 443, so this dev server's Caddy serves
// HTTPS there (444 for HTTP), both locked against other test processes on the machine (root
// binds them; CI runs as root). The agent runs with the development flag
// --allow-local-federation, which makes federation on one host possible at all (the names
// resolve to the host, its address on each bridge is let through, Caddy's CA is trusted:
// agent/homeserver/local-federation.ts); without it nothing of this is in a homeserver's config.
import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import type { Agent } from "undici";
import { EventType, Preset, type MatrixClient } from "matrix-js-sdk";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { destroyDevHomeservers } from "../../scripts/dev-reset.mjs";
import { reserveFixedPorts, reservePort } from "../ports.ts";
import { Api, DevServer, runCleanups, tempRoot, waitFor } from "./agent-helpers";
import { createLoggedInUser, joinAcross, sendAcross } from "./federation-helpers";
import {
  administered,
  caddyDispatcher,
  createHomeserver,
  dockerLogsTail,
  fetchThrough,
  payingCustomer,
  requireHomeserverHost,
  startCryptoClient,
  stopClient,
  untilRunning,
  type FetchFn,
  type Login,
  type ServerView,
} from "./homeserver-helpers";

const HTTPS_PORT = 443;

const secret = (label: string) => `berth-federation-${label}-${randomBytes(12).toString("hex")}`;

/** One customer's homeserver and its user. */
interface Side {
  label: "A" | "B";
  api: Api;
  server: ServerView;
  login: Login;
  client: MatrixClient | undefined;
}

let root: string;
let dev: DevServer;
let releasePorts: (() => void) | undefined;
let dispatcher: Agent | undefined;
let fetchHs: FetchFn;
let a: Side;
let b: Side;
let publicRoomId: string;
/** Once a step fails, the later ones (which build on it) are skipped. */
let broken = false;
const timings: string[] = [];
const started = Date.now();

function mark(what: string): void {
  timings.push(`${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s  ${what}`);
}

const synapseOf = (server: ServerView) => `berth-${server.id.replaceAll("-", "").slice(0, 12)}-synapse`;

async function diagnostics(): Promise<string> {
  const parts: string[] = [`--- timings ---\n${timings.join("\n")}`];
  for (const side of [a, b]) {
    if (side?.server) parts.push(`--- docker logs --tail 60 ${synapseOf(side.server)} (${side.label}) ---\n${await dockerLogsTail(synapseOf(side.server))}`);
  }
  if (dev) parts.push(`--- tail of the dev log (${dev.logFile}) ---\n${dev.logTail(60)}`);
  return parts.join("\n");
}

/** A paying customer with a running homeserver. */
async function customerWithHomeserver(label: "A" | "B"): Promise<{ api: Api; server: ServerView }> {
  const api = new Api(dev.baseUrl);
  await payingCustomer(api, dev.baseUrl, `federation-${label.toLowerCase()}-${randomUUID()}@example.com`, secret("account"));
  const created = await createHomeserver(api, `fed-${label.toLowerCase()}-${randomBytes(3).toString("hex")}`);
  const server = await untilRunning(api, created.id);
  mark(`${label}: ${server.serverName} running`);
  return { api, server };
}

describe("two Berth homeservers on one host federate", () => {
  beforeAll(async () => {
    await requireHomeserverHost();
    releasePorts = await reserveFixedPorts([HTTPS_PORT, HTTPS_PORT + 1]);
    root = tempRoot("berth-e2e-federation-");
    dev = new DevServer(await reservePort(), join(root, "state"), join(root, "dev.log"), { httpsPort: HTTPS_PORT });
    await dev.start();
    mark("dev server (Worker, Stripe emulator, Caddy on 443, agent) answers");
  }, 20 * 60_000);

  afterAll(async () => {
    await stopClient(a?.client);
    await stopClient(b?.client);
    await dispatcher?.close().catch(() => undefined);
    await dev?.stop();
    if (dev) await destroyDevHomeservers(dev.persistTo).catch((error) => console.warn(`[federation e2e] cleanup failed: ${String(error)}`));
    releasePorts?.();
    await runCleanups();
    console.log(`[federation e2e] timings:\n${timings.join("\n")}`);
  }, 180_000);

  beforeEach((context) => {
    if (broken) context.skip();
    context.onTestFailed(async () => {
      broken = true;
      console.error(await diagnostics());
    });
  });

  it("two customers each create a homeserver on the host, and each makes a user", { timeout: 360_000 }, async () => {
    const [first, second] = await Promise.all([customerWithHomeserver("A"), customerWithHomeserver("B")]);
    dispatcher = caddyDispatcher(await dev.caddyRoot());
    fetchHs = fetchThrough(dispatcher);
    expect(first.server.homeserverUrl).toBe(`https://${first.server.serverName}`);
    const [alice, bob] = await Promise.all([
      createLoggedInUser(first.api, fetchHs, first.server, "alice", secret("alice")),
      createLoggedInUser(second.api, fetchHs, second.server, "bob", secret("bob")),
    ]);
    expect(alice.userId).toBe(`@alice:${first.server.serverName}`);
    expect(bob.userId).toBe(`@bob:${second.server.serverName}`);
    a = { label: "A", ...first, login: alice, client: undefined };
    b = { label: "B", ...second, login: bob, client: undefined };
    mark("alice on A and bob on B logged in");
  });

  it("bob, on B, joins a public room on A; messages flow both ways", { timeout: 180_000 }, async () => {
    [a.client, b.client] = await Promise.all([
      startCryptoClient(fetchHs, a.server.homeserverUrl, a.login),
      startCryptoClient(fetchHs, b.server.homeserverUrl, b.login),
    ]);
    const alias = `lobby-${randomBytes(3).toString("hex")}`;
    const { room_id } = await a.client.createRoom({ preset: Preset.PublicChat, room_alias_name: alias, name: "lobby" });
    publicRoomId = room_id;

    // B resolves the alias on A and joins through A: both are federation requests from B to A.
    const joined = await joinAcross(b.client, `#${alias}:${a.server.serverName}`, a.server.serverName);
    expect(joined).toEqual({ joined: true, roomId: publicRoomId });
    await waitFor("alice to see bob join", () => a.client!.getRoom(publicRoomId)?.getMember(b.login.userId)?.membership === "join", {
      timeoutMs: 60_000,
      intervalMs: 200,
    });
    mark("bob joined A's room over federation");

    const toB = await sendAcross(a.client, b.client, publicRoomId, secret("a-to-b"));
    expect(toB).toMatchObject({ delivered: true, encrypted: false });
    const toA = await sendAcross(b.client, a.client, publicRoomId, secret("b-to-a"));
    expect(toA).toMatchObject({ delivered: true, encrypted: false });
    // What alice received came from bob's server: the event's sender is B's user.
    expect(
      a.client
        .getRoom(publicRoomId)
        ?.findEventById((toA as { eventId: string }).eventId)
        ?.getSender(),
    ).toBe(b.login.userId);
    mark("messages both ways in the public room");
  });

  it("an end-to-end encrypted DM between the two servers decrypts on both sides", { timeout: 180_000 }, async () => {
    const alice = a.client!;
    const bob = b.client!;
    // Device lists cross federation: each server asks the other for its user's keys.
    await waitFor(
      "alice to see bob's device (B's keys, fetched by A)",
      async () => (await alice.getCrypto()!.getUserDeviceInfo([b.login.userId], true)).get(b.login.userId)?.has(b.login.deviceId),
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    await waitFor(
      "bob to see alice's device (A's keys, fetched by B)",
      async () => (await bob.getCrypto()!.getUserDeviceInfo([a.login.userId], true)).get(a.login.userId)?.has(a.login.deviceId),
      { timeoutMs: 60_000, intervalMs: 500 },
    );

    // A DM as Element makes one: A's server encrypts it by default (an invite-only room).
    const { room_id: dmRoomId } = await alice.createRoom({ is_direct: true, invite: [b.login.userId], preset: Preset.TrustedPrivateChat });
    expect(await alice.getStateEvent(dmRoomId, EventType.RoomEncryption, "")).toMatchObject({ algorithm: "m.megolm.v1.aes-sha2" });
    await waitFor("bob to be invited over federation", () => bob.getRoom(dmRoomId)?.getMyMembership() === "invite", {
      timeoutMs: 60_000,
      intervalMs: 200,
    });
    expect(await joinAcross(bob, dmRoomId, a.server.serverName)).toEqual({ joined: true, roomId: dmRoomId });
    for (const [client, other] of [
      [alice, b.login.userId],
      [bob, a.login.userId],
    ] as const) {
      await waitFor(
        `${client.getUserId()} to see the DM encrypted, with ${other} in it`,
        async () => client.getRoom(dmRoomId)?.getMember(other)?.membership === "join" && (await client.getCrypto()!.isEncryptionEnabledInRoom(dmRoomId)),
        { timeoutMs: 60_000, intervalMs: 200 },
      );
    }
    mark("encrypted DM joined across the servers");

    const aliceToBob = secret("dm-a-to-b");
    const toB = await sendAcross(alice, bob, dmRoomId, aliceToBob);
    expect(toB).toMatchObject({ delivered: true, encrypted: true });
    const bobToAlice = secret("dm-b-to-a");
    const toA = await sendAcross(bob, alice, dmRoomId, bobToAlice);
    expect(toA).toMatchObject({ delivered: true, encrypted: true });
    // On the wire, and so on both servers, the events are Megolm ciphertext.
    for (const [client, eventId, plaintext] of [
      [bob, (toB as { eventId: string }).eventId, aliceToBob],
      [alice, (toA as { eventId: string }).eventId, bobToAlice],
    ] as const) {
      const event = client.getRoom(dmRoomId)!.findEventById(eventId)!;
      expect(event.getWireType()).toBe("m.room.encrypted");
      expect(event.getWireContent().algorithm).toBe("m.megolm.v1.aes-sha2");
      expect(JSON.stringify(event.event)).not.toContain(plaintext);
    }
    mark("encrypted messages both ways, decrypted on both servers");
  });

  describe("the owner's federation setting, enforced", () => {
    /** A's owner changes A's federation setting; it is in force once the host restarted Synapse with it. */
    const federationOfA = async (federation: unknown) => {
      const { settings } = await administered<{ settings: { federation: unknown } }>(a.api, "PATCH", `/api/servers/${a.server.id}/settings`, { federation });
      expect(settings.federation).toEqual(federation);
    };
    /** A public room alice makes on A: anyone may join it, so only federation can keep bob out. */
    const publicRoomOnA = async () => (await a.client!.createRoom({ preset: Preset.PublicChat, name: `open-${randomBytes(3).toString("hex")}` })).room_id;
    let openRoomId: string;

    it("an allow-list without B: bob cannot join A's public room, and A no longer sends him the lobby", { timeout: 300_000 }, async () => {
      await federationOfA({ mode: "allow_list", servers: ["elsewhere.example.org"] });
      mark("A: federation only with elsewhere.example.org");
      openRoomId = await publicRoomOnA();
      // A refuses B's request to join (make_join) with its reason, which B passes on.
      expect(await joinAcross(b.client!, openRoomId, a.server.serverName)).toMatchObject({
        joined: false,
        error: expect.stringContaining("Federation denied"),
      });
      const kept = await sendAcross(a.client!, b.client!, publicRoomId, secret("not-for-b"), { timeoutMs: 20_000 });
      expect(kept).toMatchObject({ delivered: false });
      mark("B refused by A's allow-list, both ways");
    });

    it("the allow-list with B on it: bob joins that room", { timeout: 300_000 }, async () => {
      await federationOfA({ mode: "allow_list", servers: [b.server.serverName] });
      mark("A: federation only with B");
      expect(await joinAcross(b.client!, openRoomId, a.server.serverName)).toEqual({ joined: true, roomId: openRoomId });
      await waitFor("alice to see bob join the open room", () => a.client!.getRoom(openRoomId)?.getMember(b.login.userId)?.membership === "join", {
        timeoutMs: 60_000,
        intervalMs: 200,
      });
      mark("B, on A's allow-list, joined");
    });

    it("federation off: bob cannot join a new public room on A, and A sends him nothing", { timeout: 300_000 }, async () => {
      await federationOfA({ mode: "off" });
      mark("A: federation off");
      const roomId = await publicRoomOnA();
      expect(await joinAcross(b.client!, roomId, a.server.serverName)).toMatchObject({ joined: false, error: expect.stringContaining("Federation denied") });
      const kept = await sendAcross(a.client!, b.client!, openRoomId, secret("off"), { timeoutMs: 20_000 });
      expect(kept).toMatchObject({ delivered: false });
      mark("A with federation off: B refused, nothing sent");
    });
  });
});
