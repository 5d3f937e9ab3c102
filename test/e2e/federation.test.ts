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
//
// A third customer names their homeserver after their own domain, acme.test: Caddy stands in for
// that domain (npm run dev -- --stand-in-domain), proxying it to a server of this test that
// publishes what the customer would. The homeserver waits until the dashboard's well-knowns are
// published, a matrix-js-sdk client that starts from acme.test finds it and logs in, and B
// federates with it through its server well-known.
import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import type { Agent } from "undici";
import { AutoDiscovery, EventType, Preset, type MatrixClient } from "matrix-js-sdk";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { destroyDevHomeservers } from "../../scripts/dev-reset.mjs";
import { reserveFixedPorts, reservePort } from "../ports.ts";
import { Api, DevServer, runCleanups, tempRoot, waitFor } from "./agent-helpers";
import { createLoggedInUser, type DelegationView, forgetBackoff, joinAcross, sendAcross, standInSite } from "./federation-helpers";
import {
  administered,
  caddyDispatcher,
  createHomeserver,
  dockerLogsTail,
  fetchThrough,
  payingCustomer,
  requireHomeserverHost,
  sdkPasswordLogin,
  startCryptoClient,
  stopClient,
  untilRunning,
  type FetchFn,
  type Login,
  type ServerView,
} from "./homeserver-helpers";

const HTTPS_PORT = 443;
/** The customer's own domain, which Caddy stands in for. */
const ACME = "acme.test";

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
/** The customer whose homeserver is named after their own domain, acme.test. */
let c: { api: Api; server: ServerView; login: Login; client: MatrixClient | undefined };
const carolPassword = secret("carol");
let publicRoomId: string;
/** What acme.test publishes: nothing until the customer publishes the dashboard's documents. */
let acmeSite: Awaited<ReturnType<typeof standInSite>> | undefined;
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
    acmeSite = await standInSite();
    dev = new DevServer(await reservePort(), join(root, "state"), join(root, "dev.log"), {
      httpsPort: HTTPS_PORT,
      standInDomains: { [ACME]: { host: "127.0.0.1", port: acmeSite.port } },
    });
    await dev.start();
    mark("dev server (Worker, Stripe emulator, Caddy on 443, agent) answers");
  }, 20 * 60_000);

  afterAll(async () => {
    await stopClient(a?.client);
    await stopClient(b?.client);
    await stopClient(c?.client);
    await dispatcher?.close().catch(() => undefined);
    await dev?.stop();
    acmeSite?.close();
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
    dispatcher = caddyDispatcher(await dev.caddyRoot(), { standInDomains: [ACME] });
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

  describe("a homeserver named after its owner's domain (acme.test, which Caddy stands in for)", () => {
    const delegationOf = (api: Api, id: string) => api.expect<DelegationView>(200, "GET", `/api/servers/${id}/delegation`);

    it("waits, made of nothing, while acme.test publishes nothing; once it publishes the dashboard's documents, it is made", { timeout: 360_000 }, async () => {
      const api = new Api(dev.baseUrl);
      await payingCustomer(api, dev.baseUrl, `federation-c-${randomUUID()}@example.com`, secret("account"));
      const created = await api.expect<ServerView>(201, "POST", "/api/servers", {
        name: `fed-c-${randomBytes(3).toString("hex")}`,
        region: "us-east",
        serverName: ACME,
      });
      expect(created).toMatchObject({ serverName: ACME, status: "awaiting_delegation" });
      // The host's first check, asked for at creation, finds nothing published.
      const first = await waitFor(
        "the first delegation check's verdict",
        async () => {
          const view = await delegationOf(api, created.id);
          return view.check && !view.checking ? view : undefined;
        },
        { timeoutMs: 90_000, intervalMs: 500 },
      );
      expect(first).toMatchObject({ status: "awaiting_delegation", check: { result: "fails", summary: expect.stringContaining("answers HTTP 404") } });
      mark("C: waiting, its first check failed (nothing published on acme.test)");

      // The customer publishes exactly what the dashboard shows, and asks for a check.
      acmeSite!.publish(first);
      await api.expect(202, "POST", `/api/servers/${created.id}/delegation/check`);
      const server = await untilRunning(api, created.id);
      expect(server.serverName).toBe(ACME);
      expect((await delegationOf(api, created.id)).check).toMatchObject({ result: "holds" });
      const login = await createLoggedInUser(api, fetchHs, server, "carol", carolPassword);
      expect(login.userId).toBe(`@carol:${ACME}`);
      c = { api, server, login, client: undefined };
      mark("C: delegation holds, made and running; carol is @carol:acme.test");
    });

    it("a matrix-js-sdk client that starts from acme.test finds the homeserver through the client well-known and logs in", { timeout: 120_000 }, async () => {
      AutoDiscovery.setFetchFn(fetchHs);
      const discovered = await AutoDiscovery.findClientConfig(ACME);
      expect(discovered["m.homeserver"]).toMatchObject({ state: AutoDiscovery.SUCCESS, base_url: c.server.homeserverUrl });
      // Logged in by her full user id, as a client that knows only that does.
      const login = await sdkPasswordLogin(fetchHs, discovered["m.homeserver"].base_url!, c.login.userId, carolPassword);
      expect(login.userId).toBe(c.login.userId);
      c.login = login;
      mark("C: found from acme.test by matrix-js-sdk, logged in");
    });

    it("federates through the server well-known: bob, on B, joins carol's public room on acme.test; messages flow both ways", {
      timeout: 180_000,
    }, async () => {
      c.client = await startCryptoClient(fetchHs, c.server.homeserverUrl, c.login);
      const alias = `acme-${randomBytes(3).toString("hex")}`;
      const { room_id } = await c.client.createRoom({ preset: Preset.PublicChat, room_alias_name: alias, name: "acme" });
      // B finds acme.test's server through https://acme.test/.well-known/matrix/server, then asks it.
      expect(await joinAcross(b.client!, `#${alias}:${ACME}`, ACME)).toEqual({ joined: true, roomId: room_id });
      await waitFor("carol to see bob join", () => c.client!.getRoom(room_id)?.getMember(b.login.userId)?.membership === "join", {
        timeoutMs: 60_000,
        intervalMs: 200,
      });
      expect(await sendAcross(c.client, b.client!, room_id, secret("c-to-b"))).toMatchObject({ delivered: true });
      expect(await sendAcross(b.client!, c.client, room_id, secret("b-to-c"))).toMatchObject({ delivered: true });
      mark("C (acme.test) and B federate through acme.test's server well-known");
    });
  });

  describe("the owner's federation setting, enforced", () => {
    /** A's owner changes A's federation setting; it is in force once the host restarted Synapse with it. */
    let bobAdminOfB: Promise<unknown> | undefined;
    /** A's federation setting changed, which restarts A; B then forgets any backoff that restart left it with (bob, made a Synapse admin of B for it, asks). */
    const federationOfA = async (federation: unknown) => {
      const { settings } = await administered<{ settings: { federation: unknown } }>(a.api, "PATCH", `/api/servers/${a.server.id}/settings`, { federation });
      expect(settings.federation).toEqual(federation);
      bobAdminOfB ??= administered(b.api, "POST", `/api/servers/${b.server.id}/users/${encodeURIComponent(b.login.userId)}/admin`);
      await bobAdminOfB;
      await forgetBackoff(fetchHs, b.server, b.login, a.server.serverName);
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
