// The isolation check: what Docker reports for a homeserver's two containers, held against the
// contract containers.ts creates them with, and a network probe from the homeserver's own network
// towards other customers' containers and the host's private services, which must all fail to connect.
import { createServer, type AddressInfo } from "node:net";
import type Docker from "dockerode";
import type { HostCheckOutcome } from "../../protocol/checks.ts";
import { assertNoDockerSocket } from "../homeserver/containers.ts";
import type { HomeserverNames, Role } from "../homeserver/names.ts";
import type { DockerRuntime } from "../runtime/docker.ts";

export const SYNAPSE_PORT = 8008;
export const POSTGRES_PORT = 5432;
/** Seconds each probe connection waits: the firewall drops, so a blocked target times out. */
const PROBE_CONNECT_SECONDS = 3;
const PROBE_MEMORY = 64 * 1024 * 1024;

export interface ProbeTarget {
  /** What it is, in the evidence: "the Caddy admin API on the gateway", "another homeserver's Synapse". */
  what: string;
  host: string;
  port: number;
}

export interface IsolationCheckInput {
  runtime: DockerRuntime;
  /** The homeserver's names on this host (homeserverNames(serverId, hostNamespace)). */
  names: HomeserverNames;
  /** The probe's image: the homeserver's own Synapse image (already on the host, has Python). */
  probeImage: string;
  /** The other homeservers on this host: their Synapse and PostgreSQL addresses are probed. */
  neighbours: HomeserverNames[];
  /** The host's private services by port (the Caddy admin API's, the agent's own): probed on every gateway the homeserver's networks and Docker's default bridge have. */
  hostPorts: Array<{ what: string; port: number }>;
  /** Labels on the probe container (tests mark their run with one). */
  labels?: Record<string, string>;
  signal?: AbortSignal;
}

type Fact = HostCheckOutcome["evidence"]["facts"][number];

const CONTAINER_NAMES: Record<Role, string> = { synapse: "the synapse container", postgres: "the postgres container" };

/** What in `info` departs from the hardening containers.ts gives every homeserver container; empty when nothing does. */
export function containerDeviations(role: Role, info: Docker.ContainerInspectInfo, names: HomeserverNames): string[] {
  const it = CONTAINER_NAMES[role];
  const host = info.HostConfig;
  const deviations: string[] = [];
  const user = info.Config.User ?? "";
  const uid = user.split(":")[0] ?? "";
  if (uid === "" || uid === "0" || uid === "root") deviations.push(`${it} runs as root`);
  if (host.Privileged) deviations.push(`${it} is privileged`);
  for (const cap of host.CapAdd ?? []) deviations.push(`${it} has the ${cap.replace(/^CAP_/i, "").toUpperCase()} capability`);
  if (!((host.CapDrop ?? []) as string[]).some((cap) => cap.replace(/^CAP_/i, "").toUpperCase() === "ALL"))
    deviations.push(`${it} does not drop all capabilities`);
  if (!((host.SecurityOpt ?? []) as string[]).some((opt) => /^no-new-privileges(:true|=true)?$/.test(opt)))
    deviations.push(`${it} may gain new privileges (no-new-privileges is not set)`);
  if (!host.ReadonlyRootfs) deviations.push(`${it} has a writable root filesystem`);
  if (!host.Memory) deviations.push(`${it} has no memory limit`);
  if (!host.NanoCpus && !host.CpuQuota) deviations.push(`${it} has no CPU limit`);
  if (!host.PidsLimit || host.PidsLimit < 0) deviations.push(`${it} has no process limit`);
  if (host.NetworkMode === "host") deviations.push(`${it} shares the host's network`);
  if (host.PidMode === "host") deviations.push(`${it} shares the host's processes`);
  if (host.IpcMode === "host") deviations.push(`${it} shares the host's IPC`);
  const own = role === "synapse" ? [names.hsNetwork, names.dbNetwork] : [names.dbNetwork];
  for (const network of Object.keys(info.NetworkSettings.Networks ?? {}))
    if (!own.includes(network)) deviations.push(`${it} is on the network ${network}, not one of its own`);
  try {
    assertNoDockerSocket(info);
  } catch {
    deviations.push(`${it} has the container runtime's socket mounted`);
  }
  return deviations;
}

/**
 * A Python program (the Synapse image has Python) trying TCP connections to the [host, port] pairs of
 * its first argument (JSON), all at once; it prints, as one JSON line, each one's "connected",
 * "refused", "timeout" (a DROP rule) or "error:<errno>".
 */
export function tcpProbeScript(timeoutSeconds: number): string {
  return [
    "import concurrent.futures, json, socket, sys",
    "def probe(t):",
    "    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)",
    `    s.settimeout(${timeoutSeconds})`,
    "    try:",
    "        s.connect((t[0], t[1]))",
    "        return 'connected'",
    "    except socket.timeout:",
    "        return 'timeout'",
    "    except ConnectionRefusedError:",
    "        return 'refused'",
    "    except OSError as e:",
    "        return 'error:%s' % e.errno",
    "    finally:",
    "        s.close()",
    "with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:",
    "    print(json.dumps(list(pool.map(probe, json.loads(sys.argv[1])))))",
  ].join("\n");
}

/**
 * Runs the probe in a short-lived container on the homeserver's Synapse network, as the Synapse
 * container's user and hardened like it, removed afterwards: one result per target, in order.
 */
export async function probeFromNetwork(input: IsolationCheckInput, user: string, targets: ProbeTarget[]): Promise<string[]> {
  const run = await input.runtime.runToCompletion(
    {
      name: `${input.names.synapse}-probe`,
      Image: input.probeImage,
      User: user,
      Entrypoint: ["python", "-c", tcpProbeScript(PROBE_CONNECT_SECONDS), JSON.stringify(targets.map((t) => [t.host, t.port]))],
      Cmd: [],
      Labels: { ...input.labels },
      HostConfig: {
        ReadonlyRootfs: true,
        CapDrop: ["ALL"],
        SecurityOpt: ["no-new-privileges"],
        Privileged: false,
        PidsLimit: 32,
        Memory: PROBE_MEMORY,
        MemorySwap: PROBE_MEMORY,
        NanoCpus: 250_000_000,
        RestartPolicy: { Name: "no", MaximumRetryCount: 0 },
        NetworkMode: input.names.hsNetwork,
      },
    },
    input.signal ?? new AbortController().signal,
  );
  const line = run.output
    .split("\n")
    .map((l) => l.trim())
    .findLast((l) => l.startsWith("["));
  if (run.exitCode !== 0 || !line) throw new Error(`the probe exited ${run.exitCode}: ${run.output.trim().slice(-300)}`);
  const results = JSON.parse(line) as unknown;
  if (!Array.isArray(results) || results.length !== targets.length) throw new Error("the probe answered for other targets than it was given");
  return results.map(String);
}

/** Every address the probe tries: the neighbours' Synapse and PostgreSQL, and the host's private ports on each gateway. */
export async function probeTargets(input: IsolationCheckInput): Promise<ProbeTarget[]> {
  const targets: ProbeTarget[] = [];
  for (const neighbour of input.neighbours) {
    const ipOn = async (container: string, network: string) =>
      (await input.runtime.inspectContainer(container))?.NetworkSettings.Networks?.[network]?.IPAddress;
    const synapse = await ipOn(neighbour.synapse, neighbour.hsNetwork);
    const postgres = await ipOn(neighbour.postgres, neighbour.dbNetwork);
    if (synapse) targets.push({ what: `another homeserver's Synapse (${neighbour.shortId})`, host: synapse, port: SYNAPSE_PORT });
    if (postgres) targets.push({ what: `another homeserver's PostgreSQL (${neighbour.shortId})`, host: postgres, port: POSTGRES_PORT });
  }
  const gateways = new Set<string>();
  for (const network of [input.names.hsNetwork, input.names.dbNetwork, "bridge"])
    for (const gateway of (await input.runtime.inspectNetwork(network))?.gateways ?? []) gateways.add(gateway);
  for (const gateway of gateways)
    for (const service of input.hostPorts) targets.push({ what: `${service.what} on the host (${gateway})`, host: gateway, port: service.port });
  return targets;
}

function described(targets: ProbeTarget[], results: string[]): string {
  return targets.map((t, i) => `${t.host}:${t.port} ${results[i] === "connected" ? "CONNECTED" : `no (${results[i]})`}`).join("; ");
}

/**
 * Runs `fn` with a TCP service of the host's own listening on `address` (a gateway of the
 * homeserver's network, so nothing outside the host can reach it), for as long as the check runs:
 * a private service the probe must not reach either, on every host, whatever else the host runs.
 */
export async function withHostListener<T>(address: string, fn: (port: number) => Promise<T>): Promise<T> {
  const server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, address, resolve);
  });
  try {
    return await fn((server.address() as AddressInfo).port);
  } finally {
    server.close();
  }
}

/**
 * Whether the homeserver's containers are as containers.ts creates them (own networks only, non-root,
 * no capabilities, no-new-privileges, read-only root, limits, nothing of the host's shared) and no
 * connection from its network reaches another homeserver or the host's private services. Fails naming
 * each deviation and each target reached; could not check when a container is missing or the probe
 * could not run.
 */
export async function checkIsolation(input: IsolationCheckInput): Promise<HostCheckOutcome> {
  const facts: Fact[] = [];
  const deviations: string[] = [];
  const synapseInfo = await input.runtime.inspectContainer(input.names.synapse);
  const postgresInfo = await input.runtime.inspectContainer(input.names.postgres);
  if (!synapseInfo || !postgresInfo) {
    const missing = [synapseInfo ? undefined : input.names.synapse, postgresInfo ? undefined : input.names.postgres].filter(Boolean).join(" and ");
    return {
      checkId: "isolation",
      result: "could_not_check",
      evidence: { summary: `The homeserver's containers are not on this host (${missing}).`, facts: [] },
    };
  }
  for (const [role, info] of [
    ["synapse", synapseInfo],
    ["postgres", postgresInfo],
  ] as const) {
    const found = containerDeviations(role, info, input.names);
    deviations.push(...found);
    facts.push({
      label: `${role === "synapse" ? "Synapse" : "PostgreSQL"} container`,
      value: (found.length === 0
        ? `as contracted: user ${info.Config.User}, no capabilities, no-new-privileges, read-only root, limits, own networks only`
        : found.join("; ")
      ).slice(0, 500),
    });
  }

  const targets = await probeTargets(input);
  let results: string[] | undefined;
  try {
    results = await probeFromNetwork(input, synapseInfo.Config.User || "65534:65534", targets);
  } catch (error) {
    facts.push({ label: "Network probe", value: `could not run: ${(error as Error).message}`.slice(0, 500) });
  }
  const reached = results ? targets.filter((_, i) => results[i] === "connected") : [];
  if (results) {
    const neighbours = targets.flatMap((t, i) => (t.what.startsWith("another homeserver") ? [i] : []));
    const host = targets.flatMap((t, i) => (t.what.startsWith("another homeserver") ? [] : [i]));
    const pick = (indices: number[]) =>
      described(
        indices.map((i) => targets[i]!),
        indices.map((i) => results[i]!),
      );
    facts.push({ label: "Probe: other homeservers", value: (neighbours.length ? pick(neighbours) : "none on this host").slice(0, 500) });
    facts.push({ label: "Probe: host's private services", value: pick(host).slice(0, 500) || "none configured" });
  }

  const problems = [...deviations, ...reached.map((t) => `the homeserver's network reaches ${t.what} at ${t.host}:${t.port}`)];
  if (problems.length > 0)
    return { checkId: "isolation", result: "fails", evidence: { summary: `Isolation fails: ${problems.join("; ")}.`.slice(0, 500), facts } };
  if (!results)
    return {
      checkId: "isolation",
      result: "could_not_check",
      evidence: { summary: "The containers are as contracted, but the network probe could not run.", facts },
    };
  return {
    checkId: "isolation",
    result: "holds",
    evidence: {
      summary: `The homeserver's containers are as contracted, and none of the ${targets.length} connections tried from its network reached another homeserver or the host's private services.`,
      facts,
    },
  };
}
