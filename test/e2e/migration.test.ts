// Moving a homeserver between two hosts, end to end: `npm run dev -- --hosts 2`, two real agents
// on this machine. A paying customer's homeserver lands on one host; alice and bob talk in an
// end-to-end encrypted DM (matrix-js-sdk with Rust crypto). An operator moves it to the other host.
// The move succeeds and the owner sees it moved, with its downtime. The name is then served by
// the other host only, with the same signing key; both people's clients resume there and still
// decrypt what was said before the move, and what is said after it; both can log in again; the
// first host keeps no container of the homeserver.
import { randomBytes, randomUUID } from "node:crypto";
import type { MatrixClient } from "matrix-js-sdk";
import { MatrixEvent, Preset } from "matrix-js-sdk";
import type { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Api, type DevServer, Fatal, runCleanups, signUpOperator, waitFor } from "./agent-helpers";
import { createLoggedInUser } from "./federation-helpers";
import {
  caddyDispatcher,
  createHomeserver,
  type FetchFn,
  fetchThrough,
  homeserverDiagnostics,
  type Login,
  matrixRequest,
  passwordLogin,
  payingCustomer,
  requireHomeserverHost,
  run,
  type ServerView,
  skipAfterFirstFailure,
  startCryptoClient,
  stopClient,
  stopDevWithAgent,
  Timeline,
  untilRunning,
  waitForMessage,
} from "./homeserver-helpers";
import { caddyRoots, HostResolver, startDevWithHosts, waitHostsConnected } from "./local-hosts-helpers";

const password = (label: string) => `berth-e2e-${label}-${randomBytes(12).toString("hex")}`;
const BEFORE_MOVE = `said before the move ${randomUUID()}`;
const AFTER_MOVE = `said after the move ${randomUUID()}`;
const REPLY_AFTER_MOVE = `answered after the move ${randomUUID()}`;

let dev: DevServer;
let operator: Api;
let customer: Api;
let hostIds: string[] = [];
let server: ServerView | undefined;
let source: number;
let target: number;
let alice: MatrixClient | undefined;
let bob: MatrixClient | undefined;
let aliceLogin: Login;
let bobLogin: Login;
let alicePassword: string;
let bobPassword: string;
let roomId: string;
let beforeMoveEventId: string;
let signingKey: unknown;
/** Which host serves the name: the one whose Caddy routes it (the local stand-in for DNS). */
let resolver: HostResolver;
const dispatchers: Agent[] = [];
/** The dispatcher the clients reach the homeserver through; replaced once the name has moved (connections are kept per origin; each is closed after the story, a close waiting for the long polls it carries). */
let current: Agent;
/** What the clients fetch with: always through the current dispatcher, as apps follow DNS. */
const fetchHs: FetchFn = ((input: string | URL, init?: RequestInit) => fetchThrough(current)(input, init)) as FetchFn;
const timeline = new Timeline();
const mark = (what: string) => timeline.mark(what);

interface MigrationView {
  id: string;
  serverId: string;
  sourceHostId: string;
  targetHostId: string;
  phase: string;
  error: string | null;
  downtimeMs: number | null;
}

/** The names of Docker's containers of `serverId`, with the namespace each carries. */
async function containersOf(serverId: string): Promise<string[]> {
  const result = await run("docker", ["ps", "-a", "--filter", `label=berth.workload=${serverId}`, "--format", '{{.Names}} {{.Label "berth.host-namespace"}}']);
  return result.stdout.toString("utf8").trim().split("\n").filter(Boolean).sort();
}

async function newDispatcher(): Promise<Agent> {
  const dispatcher = caddyDispatcher(await caddyRoots(dev), { resolver });
  dispatchers.push(dispatcher);
  return dispatcher;
}

async function serverSigningKey(): Promise<{ server_name: string; verify_keys: Record<string, { key: string }> }> {
  return (await matrixRequest(fetchHs, "GET", `${server!.homeserverUrl}/_matrix/key/v2/server`)).body;
}

afterAll(runCleanups);

describe("moving a homeserver between two hosts", () => {
  beforeAll(async () => {
    await requireHomeserverHost();
    dev = await startDevWithHosts(2, "berth-e2e-migration-");
    resolver = new HostResolver(dev);
    operator = new Api(dev.baseUrl);
    customer = new Api(dev.baseUrl);
    mark("dev server (Worker, Stripe emulator, two Caddies, two agents) answers");
  });

  afterAll(async () => {
    await Promise.all([stopClient(alice), stopClient(bob)]);
    await Promise.all(dispatchers.map((dispatcher) => dispatcher.close().catch(() => undefined)));
    await stopDevWithAgent(dev, "migration e2e");
    console.log(`[migration e2e] timings:\n${timeline}`);
  });

  skipAfterFirstFailure(() => homeserverDiagnostics(timeline, dev, customer, server));

  it("a paying customer's homeserver runs on one of the two hosts", { timeout: 300_000 }, async () => {
    await signUpOperator(operator, dev);
    hostIds = await waitHostsConnected(operator, dev);
    mark("both hosts connected");
    await payingCustomer(customer, dev.baseUrl, `migration-${randomUUID()}@example.com`, password("account"));
    server = await createHomeserver(customer, `e2e-move-${randomBytes(4).toString("hex")}`);
    server = await untilRunning(customer, server.id, mark);
    const routing = resolver.hostsRouting(server.serverName);
    expect(routing).toHaveLength(1);
    source = routing[0]!;
    target = source === 1 ? 2 : 1;
    expect(await containersOf(server.id)).toEqual(
      ["postgres", "synapse"].map((role) => `berth-h${source}-${server!.id.replaceAll("-", "").slice(0, 12)}-${role} h${source}`),
    );
    mark(`server running on host ${source}`);
  });

  it("alice and bob talk in an encrypted DM; the server's signing key is recorded", { timeout: 240_000 }, async () => {
    current = await newDispatcher();
    alicePassword = password("alice");
    bobPassword = password("bob");
    aliceLogin = await createLoggedInUser(customer, fetchHs, server!, "alice", alicePassword);
    bobLogin = await createLoggedInUser(customer, fetchHs, server!, "bob", bobPassword);
    alice = await startCryptoClient(fetchHs, server!.homeserverUrl, aliceLogin);
    bob = await startCryptoClient(fetchHs, server!.homeserverUrl, bobLogin);
    await waitFor(
      "alice to see bob's device",
      async () => (await alice!.getCrypto()!.getUserDeviceInfo([bobLogin.userId], true)).get(bobLogin.userId)?.has(bobLogin.deviceId),
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    ({ room_id: roomId } = await alice.createRoom({ is_direct: true, invite: [bobLogin.userId], preset: Preset.TrustedPrivateChat }));
    await bob.joinRoom(roomId);
    await waitFor("alice to see bob in the DM", async () => alice!.getRoom(roomId)?.getMember(bobLogin.userId)?.membership === "join", {
      timeoutMs: 30_000,
      intervalMs: 200,
    });
    ({ event_id: beforeMoveEventId } = await alice.sendTextMessage(roomId, BEFORE_MOVE));
    const received = await waitForMessage(bob, roomId, BEFORE_MOVE);
    expect(received.getWireType()).toBe("m.room.encrypted");

    const key = await serverSigningKey();
    expect(key.server_name).toBe(server!.serverName);
    expect(Object.keys(key.verify_keys).length).toBeGreaterThan(0);
    signingKey = key.verify_keys;
    mark("encrypted DM: alice wrote, bob decrypted; signing key recorded");
  });

  it("an operator moves it to the other host; the owner sees it moved, with its downtime", { timeout: 360_000 }, async () => {
    const started = await operator.expect<MigrationView>(202, "POST", `/api/admin/servers/${server!.id}/migrate`, { targetHostId: hostIds[target - 1] });
    expect(started).toMatchObject({ serverId: server!.id, sourceHostId: hostIds[source - 1], targetHostId: hostIds[target - 1] });
    expect((await customer.expect<{ status: string }>(200, "GET", `/api/servers/${server!.id}`)).status).toBe("moving");
    mark("move started");
    const finished = await waitFor(
      "the move to succeed",
      async () => {
        const { migrations } = await operator.expect<{ migrations: MigrationView[] }>(200, "GET", `/api/admin/migrations?serverId=${server!.id}`);
        const migration = migrations.find((candidate) => candidate.id === started.id);
        if (migration?.phase === "failed") throw new Fatal(`the move failed: ${migration.error}`);
        return migration?.phase === "succeeded" ? migration : undefined;
      },
      { timeoutMs: 300_000, intervalMs: 1_000 },
    );
    expect(finished.downtimeMs).toBeGreaterThan(0);
    mark(`move succeeded (downtime ${finished.downtimeMs} ms)`);

    const owned = await customer.expect<{ status: string; move: unknown; lastMove: { outcome: string; downtimeMs: number } }>(
      200,
      "GET",
      `/api/servers/${server!.id}`,
    );
    expect(owned).toMatchObject({ status: "running", move: null, lastMove: { outcome: "moved", downtimeMs: finished.downtimeMs } });
  });

  it("the other host alone serves the name, with the same signing key; the first keeps no container of it", { timeout: 120_000 }, async () => {
    await waitFor("only the target host to route the name", () => resolver.hostsRouting(server!.serverName).join() === String(target), {
      timeoutMs: 60_000,
      intervalMs: 250,
    });
    mark(`only host ${target} routes the name`);
    current = await newDispatcher();
    expect((await serverSigningKey()).verify_keys).toEqual(signingKey);
    expect(await containersOf(server!.id)).toEqual(
      ["postgres", "synapse"].map((role) => `berth-h${target}-${server!.id.replaceAll("-", "").slice(0, 12)}-${role} h${target}`),
    );
    mark(`served by host ${target} only, same signing key`);
  });

  it("both clients resume on the moved homeserver: what was said before decrypts, and so does what is said after", { timeout: 240_000 }, async () => {
    alice!.retryImmediately();
    bob!.retryImmediately();
    const stored = new MatrixEvent(await bob!.fetchRoomEvent(roomId, beforeMoveEventId));
    expect(stored.getWireType()).toBe("m.room.encrypted");
    await bob!.decryptEventIfNeeded(stored);
    expect(stored.getContent().body).toBe(BEFORE_MOVE);

    await alice!.sendTextMessage(roomId, AFTER_MOVE);
    expect((await waitForMessage(bob!, roomId, AFTER_MOVE, 120_000)).getWireType()).toBe("m.room.encrypted");
    await bob!.sendTextMessage(roomId, REPLY_AFTER_MOVE);
    expect((await waitForMessage(alice!, roomId, REPLY_AFTER_MOVE, 120_000)).getWireType()).toBe("m.room.encrypted");

    for (const [login, secret] of [
      [aliceLogin, alicePassword],
      [bobLogin, bobPassword],
    ] as const) {
      const again = await passwordLogin(fetchHs, server!.homeserverUrl, login.userId, secret);
      expect(again.userId).toBe(login.userId);
    }
    mark("pre-move message decrypted on the target; new messages both ways decrypted; both log in again");
  });
});
