// Two hosts on this machine (`npm run dev -- --hosts 2`, scripts/local-hosts.mjs): each its own
// agent, data root, identity and host namespace, and its own Caddy on its own address at the
// same HTTPS port. Both enroll and connect; a paying customer's homeserver is placed on one of
// them and served through that host's Caddy, with that host's certificate, and only there; its
// containers and data are that host's, and nothing of it is the other's. Then, with
// --enroll-by-hand, the hosts wait for an operator: one enrolled with a join token connects, the
// other keeps waiting.
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Api, type DevServer, runCleanups, signUpOperator, waitFor } from "./agent-helpers";
import {
  caddyDispatcher,
  createHomeserver,
  fetchThrough,
  homeserverDiagnostics,
  payingCustomer,
  requireHomeserverHost,
  run,
  skipAfterFirstFailure,
  stopDevWithAgent,
  Timeline,
  untilRunning,
  type ServerView,
} from "./homeserver-helpers";
import { caddyRoots, enrollLocalHost, HostResolver, startDevWithHosts, waitHostsConnected } from "./local-hosts-helpers";

let dev: DevServer;
/** Started beside `dev` (with --enroll-by-hand), for the second story. */
let byHand: DevServer;
let operator: Api;
let customer: Api;
let hostIds: string[] = [];
let server: ServerView | undefined;
const dispatchers: Agent[] = [];
const timeline = new Timeline();
const mark = (what: string) => timeline.mark(what);

/** The names of Docker's containers of `serverId`, with the namespace each carries. */
async function containersOf(serverId: string): Promise<string[]> {
  const result = await run("docker", ["ps", "-a", "--filter", `label=berth.workload=${serverId}`, "--format", '{{.Names}} {{.Label "berth.host-namespace"}}']);
  return result.stdout.toString("utf8").trim().split("\n").filter(Boolean).sort();
}

afterAll(runCleanups);

describe("two hosts on one machine", () => {
  beforeAll(async () => {
    await requireHomeserverHost();
    [dev, byHand] = await Promise.all([
      startDevWithHosts(2, "berth-e2e-two-hosts-"),
      startDevWithHosts(2, "berth-e2e-two-hosts-by-hand-", { enrollByHand: true }),
    ]);
    operator = new Api(dev.baseUrl);
    customer = new Api(dev.baseUrl);
    mark("two dev servers (Worker, Stripe emulator, two Caddies, two agents each) answer");
  });

  afterAll(async () => {
    await Promise.all(dispatchers.map((dispatcher) => dispatcher.close().catch(() => undefined)));
    await stopDevWithAgent(dev, "two hosts e2e");
    console.log(`[two hosts e2e] timings:\n${timeline}`);
  });

  skipAfterFirstFailure(() => homeserverDiagnostics(timeline, dev, customer, server));

  it("both hosts enroll and connect, each with its own namespace, data root and identity", { timeout: 150_000 }, async () => {
    await signUpOperator(operator, dev);
    hostIds = await waitHostsConnected(operator, dev);
    mark("both hosts connected");
    expect(new Set(hostIds).size).toBe(2);
    const hosts = await Promise.all(hostIds.map((id) => operator.host(id)));
    expect(hosts.map((host) => [host.name, host.status])).toEqual([
      ["dev-host-1", "online"],
      ["dev-host-2", "online"],
    ]);
    expect([dev.host(1), dev.host(2)].map((host) => [host.hostNamespace, host.address, host.httpsPort, host.httpPort])).toEqual([
      ["h1", "127.0.0.2", dev.httpsPort, dev.httpsPort! + 1],
      ["h2", "127.0.0.3", dev.httpsPort, dev.httpsPort! + 2],
    ]);
    expect(dev.host(1).dataRoot).not.toBe(dev.host(2).dataRoot);
  });

  it("a homeserver is placed on one host, and served through that host's Caddy only", { timeout: 240_000 }, async () => {
    await payingCustomer(customer, dev.baseUrl, `two-hosts-${randomUUID()}@example.com`, `account ${randomUUID()}`);
    const name = `e2e-${randomBytes(4).toString("hex")}`;
    server = await createHomeserver(customer, name);
    mark(`server ${server.id} created`);
    server = await untilRunning(customer, server.id, mark);
    mark(`server running (Synapse ${server.synapseVersion})`);
    expect(server.homeserverUrl).toBe(`https://${name}.berth.localhost:${dev.httpsPort}`);

    const resolver = new HostResolver(dev);
    const [serving] = resolver.hostsRouting(server.serverName);
    expect(resolver.hostsRouting(server.serverName)).toEqual([serving]);
    const other = serving === 1 ? 2 : 1;
    const shortId = server.id.replaceAll("-", "").slice(0, 12);
    expect(await containersOf(server.id)).toEqual([`berth-h${serving}-${shortId}-postgres h${serving}`, `berth-h${serving}-${shortId}-synapse h${serving}`]);
    expect(existsSync(join(dev.host(serving!).dataRoot, "homeservers", server.id))).toBe(true);
    expect(existsSync(join(dev.host(other).dataRoot, "homeservers", server.id))).toBe(false);

    const roots = await caddyRoots(dev);
    expect(roots[0]).not.toBe(roots[1]);
    const dispatcher = caddyDispatcher(roots, { resolver });
    dispatchers.push(dispatcher);
    const versions = await fetchThrough(dispatcher)(`${server.homeserverUrl}/_matrix/client/versions`, { signal: AbortSignal.timeout(30_000) });
    expect(versions.status).toBe(200);
    expect(((await versions.json()) as { versions: string[] }).versions.length).toBeGreaterThan(0);
    // Its certificate is from the serving host's CA: trusting only the other's, the handshake fails.
    const servingOnly = caddyDispatcher(roots[serving! - 1]!, { resolver });
    const otherOnly = caddyDispatcher(roots[other - 1]!, { resolver });
    dispatchers.push(servingOnly, otherOnly);
    expect((await fetchThrough(servingOnly)(`${server.homeserverUrl}/_matrix/client/versions`)).status).toBe(200);
    await expect(fetchThrough(otherOnly)(`${server.homeserverUrl}/_matrix/client/versions`)).rejects.toThrow();

    // The other host's Caddy does not serve the name: no certificate for it, or no route.
    const pinned = new HostResolver(dev);
    pinned.pin(server.serverName, other);
    const throughOther = caddyDispatcher(roots, { resolver: pinned });
    dispatchers.push(throughOther);
    const answer = await fetchThrough(throughOther)(`${server.homeserverUrl}/_matrix/client/versions`, { signal: AbortSignal.timeout(30_000) }).then(
      (response) => response.status,
      () => "refused",
    );
    expect([404, "refused"]).toContain(answer);
    mark(`served through host ${serving}'s Caddy only`);
  });
});

describe("two hosts on one machine, enrolled by hand", () => {
  afterAll(() => stopDevWithAgent(byHand, "two hosts by hand e2e"));

  it("each host waits for an operator's join token; the one enrolled connects, the other keeps waiting", { timeout: 150_000 }, async () => {
    const operatorByHand = new Api(byHand.baseUrl);
    await signUpOperator(operatorByHand, byHand);
    const waiting = (index: number) => `host ${index} (dev-host-${index}) waits to be enrolled by hand: `;
    await waitFor("both hosts to wait for enrollment", () => [1, 2].every((index) => byHand.log().includes(waiting(index))), {
      timeoutMs: 60_000,
      intervalMs: 250,
    });
    expect(byHand.log()).toContain(`${waiting(2)}BERTH_AGENT_JOIN_TOKEN=<join token> node agent/main.ts enroll --url http://localhost:${byHand.port}`);
    expect((await operatorByHand.expect<{ hosts: unknown[] }>(200, "GET", "/api/admin/hosts")).hosts).toEqual([]);

    const { token } = await operatorByHand.expect<{ token: string }>(201, "POST", "/api/admin/join-tokens", { region: "us-east" });
    const hostId = await enrollLocalHost(byHand, 2, token);
    await operatorByHand.waitHost(hostId, "connected", (host) => host.connection.connected, 90_000);
    const { hosts } = await operatorByHand.expect<{ hosts: Array<{ id: string; name: string; region: string }> }>(200, "GET", "/api/admin/hosts");
    expect(hosts.map((host) => [host.id, host.name, host.region])).toEqual([[hostId, "dev-host-2", "us-east"]]);
    expect(existsSync(join(byHand.host(1).configDir, "agent.json"))).toBe(false);
    expect(byHand.log()).toContain("host 2 (dev-host-2) running");
    expect(byHand.log()).not.toContain("host 1 (dev-host-1) running");
  });
});
