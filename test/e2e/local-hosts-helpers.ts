// Helpers for the e2e tests of several hosts on this machine: `npm run dev -- --hosts N`
// (scripts/local-hosts.mjs), each host its own agent (host namespace h<i>, data root, identity)
// and its own Caddy on 127.0.0.<i+1> at the same HTTPS port. For the tests that move
// homeservers between hosts:
//
//   const dev = await startDevWithHosts(2, "berth-e2e-mine-");     // or { enrollByHand: true }
//   dev.host(i)              → { index, name, hostNamespace "h<i>", address "127.0.0.<i+1>",
//                               configDir, dataRoot, caddyDir, httpsPort, httpPort }
//   await hostIdOf(dev, i)   → the control plane's id of host i (from its agent.json, once enrolled)
//   await waitHostsConnected(api, dev)  → every host online (an operator's Api: signUpOperator)
//   await enrollLocalHost(dev, i, token) → with enrollByHand: `berth-agent enroll` with an
//                               operator's join token; dev.mjs then starts that host's agent
//   const resolver = new HostResolver(dev)     → which host serves a homeserver name: the one
//                               whose Caddy has its route (resolver.hostOf(name)), or pin(name, i)
//   const dispatcher = caddyDispatcher(await caddyRoots(dev), { resolver })   (homeserver-helpers)
//   const fetchHs = fetchThrough(dispatcher)  → HTTPS to https://<name>.berth.localhost:<port>
//                               through the right Caddy, trusting only the hosts' CAs
//   await clientVersions(dev, resolver, server.homeserverUrl)  → one GET of /_matrix/client/versions that way
//   await stopDevWithAgent(dev, label)  → stops dev.mjs, destroys every host's homeservers
//
// Names, ports and directories are this run's own: ports from test/ports.ts (locked against
// every other test process), state in a new temporary directory, server names random. The
// namespaces h1 … hN are shared with any other `--hosts` run on the machine, so assertions
// about a namespace's containers are about this run's servers, never "all of h1's".
import { join } from "node:path";
import { type LocalHost, localAgentConfig, routedServerNames } from "../../scripts/local-hosts.mjs";
import { reservePort, reservePorts } from "../ports.ts";
import { type Api, DevServer, REPO_ROOT, runNode, tempRoot, waitFor } from "./agent-helpers";
import { caddyDispatcher, fetchThrough, type NameResolver } from "./homeserver-helpers";

const AGENT_MAIN = join(REPO_ROOT, "agent", "main.ts");

export type { LocalHost };

/**
 * `npm run dev -- --hosts <count>` with every host's agent and Caddy, its state in a new temporary
 * directory, answering (the agents enroll and connect a few seconds later: waitHostsConnected).
 */
export async function startDevWithHosts(count: number, tempPrefix: string, { enrollByHand = false } = {}): Promise<DevServer> {
  const root = tempRoot(tempPrefix);
  const httpsPort = await reservePorts(count + 1);
  const dev = new DevServer(await reservePort(), join(root, "state"), join(root, "dev.log"), { httpsPort, hosts: count, enrollByHand });
  await dev.start();
  return dev;
}

/** The control plane's id of host `index`, once it has enrolled. */
export function hostIdOf(dev: DevServer, index: number, timeoutMs = 60_000): Promise<string> {
  return waitFor(`host ${index} to be enrolled`, () => localAgentConfig(dev.host(index).configDir)?.hostId, { timeoutMs, intervalMs: 200 });
}

/** Waits until every local host is enrolled and connected; returns their ids, host 1's first. */
export async function waitHostsConnected(api: Api, dev: DevServer, timeoutMs = 90_000): Promise<string[]> {
  const ids: string[] = [];
  for (let index = 1; index <= dev.hosts; index++) {
    const id = await hostIdOf(dev, index, timeoutMs);
    await api.waitHost(id, "connected", (host) => host.connection.connected, timeoutMs);
    ids.push(id);
  }
  return ids;
}

/**
 * Enrolls host `index` by hand (dev started with enrollByHand), as an operator would on a new
 * machine: `berth-agent enroll` with the join token, into the host's config directory and data
 * root. dev.mjs notices its agent.json and starts its agent. Returns the host's id.
 */
export async function enrollLocalHost(dev: DevServer, index: number, token: string): Promise<string> {
  const host = dev.host(index);
  const args = [AGENT_MAIN, "enroll", "--url", `http://localhost:${dev.port}`, "--config", host.configDir, "--data-root", host.dataRoot, "--name", host.name];
  const result = await runNode(args, { ...process.env, BERTH_AGENT_JOIN_TOKEN: token, FORCE_COLOR: "0" });
  if (result.code !== 0) throw new Error(`berth-agent enroll of host ${index} exited ${result.code}: ${result.stderr}${result.stdout}`);
  return hostIdOf(dev, index);
}

/** The internal CA roots of every host's Caddy (each host has its own CA), host 1's first. */
export async function caddyRoots(dev: DevServer): Promise<string[]> {
  const roots: string[] = [];
  for (let index = 1; index <= dev.hosts; index++) roots.push(await dev.caddyRoot(index));
  return roots;
}

/**
 * The local stand-in for DNS: which host serves a homeserver name. A name pinned to a host goes
 * there; any other goes to the one host whose Caddy routes it (suspended names included), and is
 * an error when none or several do (mid-migration both may: pin the one the test means).
 */
export class HostResolver implements NameResolver {
  private readonly pins = new Map<string, number>();

  constructor(private readonly dev: DevServer) {}

  pin(serverName: string, index: number): void {
    this.dev.host(index); // throws for a host that does not exist
    this.pins.set(serverName, index);
  }

  unpin(serverName: string): void {
    this.pins.delete(serverName);
  }

  /** The hosts whose Caddy routes `serverName`. */
  hostsRouting(serverName: string): number[] {
    return Array.from({ length: this.dev.hosts }, (_, i) => i + 1).filter((index) => routedServerNames(this.dev.host(index).configDir).includes(serverName));
  }

  hostOf(serverName: string): number {
    const pinned = this.pins.get(serverName);
    if (pinned !== undefined) return pinned;
    const routing = this.hostsRouting(serverName);
    if (routing.length !== 1) {
      throw new Error(`${serverName} is routed by ${routing.length ? `hosts ${routing.join(" and ")}` : "no host"}: pin it to the host meant`);
    }
    return routing[0]!;
  }

  address(hostname: string): string {
    const host = this.dev.host(this.hostOf(hostname));
    return host.address ?? "127.0.0.1";
  }
}

/**
 * GET /_matrix/client/versions of a homeserver through the Caddy of the host `resolver` sends its
 * name to, trusting only the hosts' CAs: its status, and the versions it lists.
 */
export async function clientVersions(dev: DevServer, resolver: NameResolver, homeserverUrl: string): Promise<{ status: number; versions: string[] }> {
  const dispatcher = caddyDispatcher(await caddyRoots(dev), { resolver });
  try {
    const response = await fetchThrough(dispatcher)(`${homeserverUrl}/_matrix/client/versions`, { signal: AbortSignal.timeout(30_000) });
    const body = (await response.json().catch(() => ({}))) as { versions?: string[] };
    return { status: response.status, versions: body.versions ?? [] };
  } finally {
    await dispatcher.close();
  }
}
