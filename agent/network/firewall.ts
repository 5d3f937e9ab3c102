// Isolation of each homeserver's containers with iptables (Debian's `iptables`,
// which Docker itself uses). Per server, two chains hold its rules:
//
//   BERTH-F-<chainid>  jumped to from DOCKER-USER (Docker's hook at the top of
//                      FORWARD) for packets entering or leaving its bridges;
//   BERTH-I-<chainid>  jumped to from INPUT for packets from its bridges to
//                      the host itself.
//
// What they allow: traffic within each of the server's own networks
// (Synapse ↔ PostgreSQL), answers to connections (the proxy on the host
// connecting to Synapse, Synapse's own outgoing connections), DNS to the
// resolvers Docker's embedded DNS forwards to, Synapse's connections to the
// public Internet (federation), and TCP to the host's public proxy ports (same-
// host federation). Dropped: everything in or out of the internal database
// network, new connections into the Synapse network, private / link-local /
// CGNAT / documentation / multicast ranges and every Docker subnet, other
// Docker bridges (other customers, the default bridge), and anything else
// addressed to the host (its gateway addresses, 0.0.0.0 listeners, the agent,
// the proxy's admin port). Docker's socket is never mounted into a container
// (a unix socket: no rule can guard it; the handlers assert it instead).
//
// (<chainid> is the server's short id, after its agent's host namespace if it has one.)
// Every rule and jump carries the comment berth:<shortid> (berth:<namespace>:<shortid>), so one server's set
// can be listed and removed. Chains are rewritten atomically (iptables-restore
// --noflush); reapplying is harmless. IPv6 is not enabled on these networks,
// so there is no IPv6 path to guard.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { BLOCKED_IPV4, ipv4Covered } from "../homeserver/config.ts";
import { DB_BRIDGE_PREFIX, HS_BRIDGE_PREFIX } from "../homeserver/names.ts";
import { silentLogger, type Logger } from "../log.ts";

export interface FirewallTarget {
  /** What the server's chains are named after (HomeserverNames.chainId). */
  chainId: string;
  /** Comment on every rule: HomeserverNames.firewallTag. */
  tag: string;
  hsBridge: string;
  dbBridge: string;
  /** Subnets of the Docker networks on the host (dropped too, wherever Docker's pools are). */
  dockerSubnets?: string[];
}

/** What the homeserver handlers need; `null` firewall = none (development only). */
export interface HomeserverFirewall {
  ensure(target: FirewallTarget): Promise<void>;
  remove(target: Pick<FirewallTarget, "chainId" | "tag">): Promise<void>;
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export type RunCommand = (command: string, args: string[], input?: string) => Promise<CommandResult>;

export interface IptablesFirewallOptions {
  /** Default "iptables" / "iptables-restore" (from PATH). */
  iptables?: string;
  iptablesRestore?: string;
  /** Resolvers Docker's embedded DNS forwards to (default: the IPv4 nameservers of /etc/resolv.conf). */
  nameservers?: string[];
  /** TCP ports of the host that customers may reach: the proxy's public ports. Default 443 and 8448. */
  hostTcpPorts?: number[];
  run?: RunCommand;
  log?: Logger;
}

export const DOCKER_USER_CHAIN = "DOCKER-USER";
export const INPUT_CHAIN = "INPUT";
export const DEFAULT_HOST_TCP_PORTS = [443, 8448];

const BRIDGE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;
const CHAIN_ID = /^[a-z0-9]{1,16}$/;

export function chainNames(chainId: string): { forward: string; input: string } {
  return { forward: `BERTH-F-${chainId}`, input: `BERTH-I-${chainId}` };
}

export interface RuleSet {
  forward: string[][];
  input: string[][];
  /** Jumps into the two chains: [built-in chain, rule arguments]. */
  jumps: Array<[string, string[]]>;
}

/** The nameservers of a resolv.conf (IPv4, not loopback: Docker does not forward to those). */
export function resolvConfNameservers(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const match = /^\s*nameserver\s+(\d{1,3}(?:\.\d{1,3}){3})\s*$/.exec(line);
    if (match && !match[1]!.startsWith("127.")) out.push(match[1]!);
  }
  return out;
}

function hostNameservers(): string[] {
  try {
    return resolvConfNameservers(readFileSync("/etc/resolv.conf", "utf8"));
  } catch {
    return [];
  }
}

/** The rules of one server (pure; see the file's header for what they mean). */
export function firewallRules(target: FirewallTarget, options: { nameservers?: string[]; hostTcpPorts?: number[] } = {}): RuleSet {
  if (!CHAIN_ID.test(target.chainId)) throw new Error(`invalid chain id ${target.chainId}`);
  for (const bridge of [target.hsBridge, target.dbBridge]) {
    if (!BRIDGE_NAME.test(bridge)) throw new Error(`invalid bridge name ${bridge}`);
  }
  const { forward: F, input: I } = chainNames(target.chainId);
  const H = target.hsBridge;
  const D = target.dbBridge;
  const tag = ["-m", "comment", "--comment", target.tag];
  const rule = (match: string[], verdict: string) => [...match, ...tag, "-j", verdict];

  const forward: string[][] = [
    // within the server's own networks: Synapse ↔ PostgreSQL
    rule(["-i", D, "-o", D], "RETURN"),
    rule(["-i", H, "-o", H], "RETURN"),
    // the database network: nothing in or out
    rule(["-i", D], "DROP"),
    rule(["-o", D], "DROP"),
    // into the Synapse network: answers only (the proxy connects from the host, not through FORWARD)
    rule(["-o", H, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"], "RETURN"),
    rule(["-o", H], "DROP"),
    // out of it: answers, DNS to the resolvers, then anything but the blocked ranges and other bridges
    rule(["-i", H, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"], "RETURN"),
  ];
  const nameservers = [...new Set(options.nameservers ?? [])];
  for (const ns of nameservers) {
    if (!ipv4Covered(`${ns}/32`, BLOCKED_IPV4)) continue; // a public resolver is allowed anyway
    forward.push(rule(["-i", H, "-d", `${ns}/32`, "-p", "udp", "--dport", "53"], "RETURN"));
    forward.push(rule(["-i", H, "-d", `${ns}/32`, "-p", "tcp", "--dport", "53"], "RETURN"));
  }
  for (const other of [`${HS_BRIDGE_PREFIX}+`, `${DB_BRIDGE_PREFIX}+`, "docker0", "br-+"]) {
    forward.push(rule(["-i", H, "-o", other], "DROP"));
  }
  const ranges = [...BLOCKED_IPV4];
  for (const subnet of target.dockerSubnets ?? []) {
    if (!subnet.includes(":") && !ranges.includes(subnet) && !ipv4Covered(subnet, BLOCKED_IPV4)) ranges.push(subnet);
  }
  for (const range of ranges) forward.push(rule(["-i", H, "-d", range], "DROP"));

  const ports = options.hostTcpPorts ?? DEFAULT_HOST_TCP_PORTS;
  const input: string[][] = [rule(["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"], "RETURN")];
  if (ports.length) {
    input.push(rule(["-i", H, "-p", "tcp", "-m", "multiport", "--dports", ports.join(","), "-m", "addrtype", "--dst-type", "LOCAL"], "RETURN"));
  }
  input.push(rule([], "DROP"));

  const jumps: Array<[string, string[]]> = [
    [DOCKER_USER_CHAIN, rule(["-i", H], F)],
    [DOCKER_USER_CHAIN, rule(["-o", H], F)],
    [DOCKER_USER_CHAIN, rule(["-i", D], F)],
    [DOCKER_USER_CHAIN, rule(["-o", D], F)],
    [INPUT_CHAIN, rule(["-i", H], I)],
    [INPUT_CHAIN, rule(["-i", D], I)],
  ];
  return { forward, input, jumps };
}

const defaultRun: RunCommand = (command, args, input) =>
  new Promise((resolve, reject) => {
    const child = execFile(command, args, { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as NodeJS.ErrnoException & { code?: unknown }).code === "number" ? Number((error as { code: number }).code) : -1) : 0;
      if (error && code === -1 && (error as NodeJS.ErrnoException).code === "ENOENT") {
        reject(new Error(`${command} is not installed (apt-get install iptables)`));
        return;
      }
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
    if (input !== undefined) child.stdin?.end(input);
  });

/** Quotes one iptables-restore argument (the comment is the only thing that could need it). */
function restoreArg(arg: string): string {
  return /^[A-Za-z0-9_.:,/+!-]+$/.test(arg) ? arg : JSON.stringify(arg);
}

export class IptablesFirewall implements HomeserverFirewall {
  private readonly iptables: string;
  private readonly restore: string;
  private readonly nameservers: string[] | undefined;
  private readonly hostTcpPorts: number[] | undefined;
  private readonly run: RunCommand;
  private readonly log: Logger;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: IptablesFirewallOptions = {}) {
    this.iptables = options.iptables ?? "iptables";
    this.restore = options.iptablesRestore ?? "iptables-restore";
    this.nameservers = options.nameservers;
    this.hostTcpPorts = options.hostTcpPorts;
    this.run = options.run ?? defaultRun;
    this.log = options.log ?? silentLogger;
  }

  /** One change at a time (jobs run concurrently; the check-then-insert of jumps must not interleave). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async ipt(args: string[]): Promise<CommandResult> {
    return this.run(this.iptables, ["-w", ...args]);
  }

  private async must(args: string[]): Promise<string> {
    const result = await this.ipt(args);
    if (result.code !== 0) throw new Error(`iptables ${args.join(" ")} failed: ${result.stderr.trim() || `exit code ${result.code}`}`);
    return result.stdout;
  }

  /** Installs or refreshes the server's rules (atomically replacing its chains). */
  ensure(target: FirewallTarget): Promise<void> {
    return this.serial(async () => {
      const rules = firewallRules(target, { nameservers: this.nameservers ?? hostNameservers(), hostTcpPorts: this.hostTcpPorts });
      const { forward: F, input: I } = chainNames(target.chainId);
      const lines = ["*filter", `:${F} - [0:0]`, `:${I} - [0:0]`];
      for (const rule of rules.forward) lines.push(["-A", F, ...rule].map(restoreArg).join(" "));
      for (const rule of rules.input) lines.push(["-A", I, ...rule].map(restoreArg).join(" "));
      // The chains must exist before a jump to them is checked; iptables -C on a
      // missing target chain fails, which reads as "missing" and is right.
      const missing: Array<[string, string[]]> = [];
      for (const [chain, rule] of rules.jumps) {
        if ((await this.ipt(["-C", chain, ...rule])).code !== 0) missing.push([chain, rule]);
      }
      for (const [chain, rule] of missing) lines.push(["-I", chain, "1", ...rule].map(restoreArg).join(" "));
      lines.push("COMMIT", "");
      const result = await this.run(this.restore, ["-w", "--noflush"], lines.join("\n"));
      if (result.code !== 0) throw new Error(`iptables-restore failed for ${target.tag}: ${result.stderr.trim() || `exit code ${result.code}`}`);
      this.log.debug("firewall rules in place", { tag: target.tag, rules: rules.forward.length + rules.input.length, newJumps: missing.length });
    });
  }

  /** Removes the server's jumps and chains; what is already gone is fine. */
  remove(target: Pick<FirewallTarget, "chainId" | "tag">): Promise<void> {
    return this.serial(async () => {
      const { forward: F, input: I } = chainNames(target.chainId);
      for (const chain of [DOCKER_USER_CHAIN, INPUT_CHAIN]) {
        for (const line of (await this.must(["-S", chain])).split("\n")) {
          if (!line.startsWith(`-A ${chain} `) || !hasTag(line, target.tag)) continue;
          const args = splitRule(line.slice(`-A ${chain} `.length));
          await this.must(["-D", chain, ...args]);
        }
      }
      for (const chain of [F, I]) {
        if ((await this.ipt(["-S", chain])).code !== 0) continue;
        await this.must(["-F", chain]);
        await this.must(["-X", chain]);
      }
    });
  }

  /** The filter table's rules tagged `tag` (all berth rules without a tag argument), as `iptables -S` prints them. */
  async list(tag?: string): Promise<string[]> {
    const out = await this.must(["-S"]);
    return out.split("\n").filter((line) => (tag ? hasTag(line, tag) : /berth:/.test(line)));
  }
}

function hasTag(line: string, tag: string): boolean {
  return line.includes(`--comment ${tag} `) || line.includes(`--comment "${tag}" `) || line.endsWith(`--comment ${tag}`);
}

/** Splits an `iptables -S` rule into arguments (double quotes group). */
export function splitRule(text: string): string[] {
  const args: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (const match of text.matchAll(re)) args.push(match[1] !== undefined ? match[1].replace(/\\(.)/g, "$1") : match[2]!);
  return args;
}
