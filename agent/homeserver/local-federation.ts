// Development only (`berth-agent run --allow-local-federation`, which `npm run dev` gives its
// agent): the homeservers of one host federate with each other through its proxy. Their names
// (<name>.berth.localhost) resolve nowhere and their certificates come from the proxy's own CA, so
// each Synapse gets
//   - a hosts file of the agent's (root's, mounted read-only as its /etc/hosts) that resolves the
//     name of every homeserver on this host to the host's address on that server's own bridge,
//     where the proxy listens (the firewall lets a bridge reach the proxy's ports there);
//   - that one address excepted from its block list (ip_range_whitelist), nothing else;
//   - the proxy's internal CA root as the only CA its federation trusts (federation_custom_ca_list).
// The proxy's stand-in domains (proxy.standInDomains: customers' domains under .test) are in the
// hosts file too, so a homeserver named after one is found through its well-known as in production.
// Without the flag none of this exists: no hosts file, no exception, no CA (test/agent/homeserver/config.test.ts).
import { X509Certificate } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, type AgentConfig } from "../config.ts";
import { delay, type DockerRuntime } from "../runtime/docker.ts";
import { homeserverNames, type HomeserverNames } from "./names.ts";
import { servedHostOf, type HomeserverRecords } from "./records.ts";

export interface LocalFederationOptions {
  /** The proxy's internal CA root on the host. */
  caRootFile: string;
  /** The customers' domains the proxy stands in for (development only), resolved like the homeservers' names. */
  standInDomains?: string[];
}

/** The CA root's copy in Synapse's data directory (written like homeserver.yaml, read as /data/<this>). */
export const LOCAL_FEDERATION_CA_FILE = "local-federation-ca.pem";

/** How long a provision waits for the proxy to have made its CA (it does when the agent first configures it). */
const CA_ROOT_WAIT_MS = 60_000;

/** The flag's options from agent.json: only with the proxy on its internal CA (never production's ACME) and a known storage directory. */
export function localFederationOptions(config: Pick<AgentConfig, "proxy">): LocalFederationOptions {
  const proxy = config.proxy;
  if (proxy?.tls !== "internal" || !proxy.storageDir) {
    throw new ConfigError(
      '--allow-local-federation is for development: it needs the proxy on its internal CA (proxy.tls "internal") with proxy.storageDir set, where that CA lives',
    );
  }
  return { caRootFile: join(proxy.storageDir, "pki", "authorities", "local", "root.crt"), standInDomains: Object.keys(proxy.standInDomains ?? {}) };
}

/** A hosts file: loopback, and every name given at `hostAddress`. */
export function hostsFileContent(hostAddress: string, serverNames: string[]): string {
  const lines = ["# Written by berth-agent (--allow-local-federation, development only).", "127.0.0.1\tlocalhost", "::1\tlocalhost"];
  for (const name of [...new Set(serverNames)].sort()) lines.push(`${hostAddress}\t${name}`);
  return `${lines.join("\n")}\n`;
}

/** The hosts files of this host's homeservers, kept listing every homeserver the agent has a record of. */
export class LocalFederationHosts {
  readonly options: LocalFederationOptions;
  private readonly dir: string;
  private readonly runtime: DockerRuntime;
  private readonly records: HomeserverRecords;
  private readonly hostNamespace: string | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(stateDir: string, runtime: DockerRuntime, records: HomeserverRecords, options: LocalFederationOptions, hostNamespace?: string) {
    this.dir = join(stateDir, "local-federation");
    this.runtime = runtime;
    this.records = records;
    this.hostNamespace = hostNamespace;
    this.options = options;
  }

  hostsFile(serverId: string): string {
    return join(this.dir, `${serverId}.hosts`);
  }

  /** The host's address on the server's -hs bridge (the network's gateway). */
  async hostAddress(names: HomeserverNames): Promise<string> {
    const gateway = (await this.runtime.inspectNetwork(names.hsNetwork))?.gateways[0];
    if (!gateway) throw new Error(`network ${names.hsNetwork} has no gateway address: local federation cannot reach the proxy`);
    return gateway;
  }

  /**
   * Rewrites every server's hosts file (one refresh at a time). Files are rewritten in place,
   * never replaced: a bind mount keeps the file it was made with, so a running Synapse sees a
   * neighbour provisioned after it.
   */
  refresh(): Promise<void> {
    const run = async () => {
      mkdirSync(this.dir, { recursive: true, mode: 0o755 });
      const records = this.records.ids().flatMap((id) => this.records.read(id) ?? []);
      const servedHosts = records.map(servedHostOf);
      for (const record of records) {
        const network = await this.runtime.inspectNetwork(homeserverNames(record.serverId, this.hostNamespace).hsNetwork);
        const gateway = network?.gateways[0];
        if (!gateway) continue; // no network (yet): refreshed again when it is made
        const file = this.hostsFile(record.serverId);
        const content = hostsFileContent(gateway, [...servedHosts, ...(this.options.standInDomains ?? [])]);
        if (readOrEmpty(file) !== content) writeFileSync(file, content, { mode: 0o644 });
      }
    };
    const next = this.queue.then(run, run);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** After a server is gone: its file removed, the others no longer list it. */
  async forget(serverId: string): Promise<void> {
    rmSync(this.hostsFile(serverId), { force: true });
    await this.refresh();
  }

  /** The proxy's CA root (PEM), once the proxy has written all of it. */
  async caRoot(signal: AbortSignal): Promise<string> {
    const deadline = Date.now() + CA_ROOT_WAIT_MS;
    for (;;) {
      const pem = readOrEmpty(this.options.caRootFile);
      try {
        new X509Certificate(pem); // throws until the whole certificate is there
        return pem;
      } catch {
        if (Date.now() > deadline) throw new Error(`the proxy's CA root ${this.options.caRootFile} is missing or incomplete`);
      }
      await delay(500, signal);
    }
  }
}

function readOrEmpty(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}
