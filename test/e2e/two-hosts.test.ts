// Two hosts on this machine (`npm run dev -- --hosts 2`, scripts/local-hosts.mjs): each its own
// agent, data root, identity and host namespace, and its own Caddy on its own address at the
// same HTTPS port. Both enroll and connect; a paying customer's homeserver is placed on one of
// them and served through that host's Caddy, with that host's certificate, and only there; its
// containers and data are that host's, and nothing of it is the other's.
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Api, type DevServer, runCleanups, signUpOperator } from "./agent-helpers";
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
import { caddyRoots, HostResolver, startDevWithHosts, waitHostsConnected } from "./local-hosts-helpers";

let dev: DevServer;
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

describe("two hosts on one machine", () => {
  beforeAll(async () => {
    await requireHomeserverHost();
    dev = await startDevWithHosts(2, "berth-e2e-two-hosts-");
    operator = new Api(dev.baseUrl);
    customer = new Api(dev.baseUrl);
    mark("dev server (Worker, Stripe emulator, two Caddies, two agents) answers");
  });

  afterAll(async () => {
    await Promise.all(dispatchers.map((dispatcher) => dispatcher.close().catch(() => undefined)));
    await stopDevWithAgent(dev, "two hosts e2e");
    await runCleanups();
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
