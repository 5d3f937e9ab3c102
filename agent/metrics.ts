// Usage samples: host CPU, memory, disks and network (systeminformation), per
// container stats for containers labelled berth.workload=<id> in the agent's host
// namespace (Docker Engine API,
// computed as `docker stats` does), and each workload's storage (storage.ts).
// Samples queue while disconnected (the newest 120 are kept) and go out batched
// in one `usage` message per interval.
import Docker from "dockerode";
import si from "systeminformation";
import {
  containerUsageSchema,
  usageSampleSchema,
  type AgentMessage,
  type ContainerUsage,
  type UsageSample,
  type WorkloadStorage,
} from "../protocol/messages.ts";
import { inHostNamespace, WORKLOAD_LABEL } from "./homeserver/names.ts";
import { errorMessage, type Logger } from "./log.ts";

export const MAX_BATCH = 120;
/** A usage message stays under this many bytes (the Worker side caps WebSocket messages); extra samples go in more messages. */
export const MAX_USAGE_MESSAGE_BYTES = 512 * 1024;
const MAX_DISKS = 64;
const IGNORED_FS_TYPES = new Set(["tmpfs", "devtmpfs", "squashfs", "overlay", "ramfs", "efivarfs"]);
const VIRTUAL_INTERFACE = /^(lo|veth|docker|br-|virbr|cni|flannel|cali|tun|tap)/;

export type HostUsage = UsageSample["host"];

// ---------- host ----------

export async function collectHostUsage(): Promise<HostUsage> {
  const [load, mem, disks, nets] = await Promise.all([si.currentLoad(), si.mem(), si.fsSize(), si.networkStats("*")]);
  const seen = new Set<string>();
  const diskList: HostUsage["disks"] = [];
  for (const d of disks) {
    if (IGNORED_FS_TYPES.has(d.type) || !(d.size > 0) || seen.has(d.mount)) continue;
    seen.add(d.mount);
    diskList.push({ mount: d.mount.slice(0, 4096), usedBytes: nonneg(d.used), sizeBytes: nonneg(d.size) });
    if (diskList.length >= MAX_DISKS) break;
  }
  let rx = 0;
  let tx = 0;
  for (const n of nets) {
    if (VIRTUAL_INTERFACE.test(n.iface)) continue; // container traffic is counted per container
    rx += nonneg(n.rx_bytes);
    tx += nonneg(n.tx_bytes);
  }
  return {
    cpuLoadPercent: nonneg(load.currentLoad),
    // "active" is used memory without buffers and page cache.
    memoryUsedBytes: nonneg(mem.active),
    memoryAvailableBytes: nonneg(mem.available),
    disks: diskList,
    networkRxBytes: rx,
    networkTxBytes: tx,
  };
}

// ---------- containers ----------

/** The parts of a Docker stats response used here (all optional: engines and cgroup versions differ). */
export interface DockerStats {
  cpu_stats?: { cpu_usage?: { total_usage?: number; percpu_usage?: number[] }; system_cpu_usage?: number; online_cpus?: number };
  precpu_stats?: { cpu_usage?: { total_usage?: number }; system_cpu_usage?: number };
  memory_stats?: { usage?: number; limit?: number; stats?: Record<string, number | undefined> };
  networks?: Record<string, { rx_bytes?: number; tx_bytes?: number }>;
  blkio_stats?: { io_service_bytes_recursive?: Array<{ op?: string; value?: number }> | null };
  pids_stats?: { current?: number };
}

/** One container's usage from a stats response, computed like the docker CLI does. */
export function containerUsageFromStats(workloadId: string, container: string, stats: DockerStats): ContainerUsage {
  const cpu = stats.cpu_stats;
  const pre = stats.precpu_stats;
  const cpuDelta = (cpu?.cpu_usage?.total_usage ?? 0) - (pre?.cpu_usage?.total_usage ?? 0);
  const systemDelta = (cpu?.system_cpu_usage ?? 0) - (pre?.system_cpu_usage ?? 0);
  const onlineCpus = cpu?.online_cpus || cpu?.cpu_usage?.percpu_usage?.length || 1;
  // Without a previous reading (one-shot stats, a container just started) there is no rate yet.
  const hasPrevious = (pre?.system_cpu_usage ?? 0) > 0;
  const cpuPercent = hasPrevious && cpuDelta > 0 && systemDelta > 0 ? (cpuDelta / systemDelta) * onlineCpus * 100 : 0;

  const mem = stats.memory_stats;
  const usage = mem?.usage ?? 0;
  const memStats = mem?.stats ?? {};
  // cgroup v1: total_inactive_file (older engines: cache); cgroup v2: inactive_file.
  const cache = memStats.total_inactive_file ?? memStats.inactive_file ?? memStats.cache ?? 0;
  const memoryBytes = cache < usage ? usage - cache : usage;

  let rx = 0;
  let tx = 0;
  for (const net of Object.values(stats.networks ?? {})) {
    rx += nonneg(net.rx_bytes);
    tx += nonneg(net.tx_bytes);
  }
  let read = 0;
  let write = 0;
  for (const entry of stats.blkio_stats?.io_service_bytes_recursive ?? []) {
    const op = entry.op?.toLowerCase();
    if (op === "read") read += nonneg(entry.value);
    else if (op === "write") write += nonneg(entry.value);
  }
  return {
    workloadId,
    container: container.slice(0, 256),
    cpuPercent: nonneg(cpuPercent),
    memoryBytes: nonneg(memoryBytes),
    memoryLimitBytes: nonneg(mem?.limit),
    networkRxBytes: rx,
    networkTxBytes: tx,
    blockReadBytes: read,
    blockWriteBytes: write,
    pids: Math.trunc(nonneg(stats.pids_stats?.current)),
  };
}

export interface ContainerStatsOptions {
  socketPath?: string;
  log: Logger;
  /** The agent's host namespace (agent.json): another agent's containers on the same Docker Engine are not counted. */
  hostNamespace?: string;
  /** Containers queried at once. */
  concurrency?: number;
}

/** Stats of this agent's containers labelled berth.workload=<id>; none when Docker is unreachable (logged once). */
export class ContainerStatsCollector {
  private readonly docker: Docker;
  private readonly log: Logger;
  private readonly concurrency: number;
  private readonly socketPath: string;
  private readonly hostNamespace: string | undefined;
  private unreachable = false;

  constructor(options: ContainerStatsOptions) {
    this.socketPath = options.socketPath ?? "/var/run/docker.sock";
    this.docker = new Docker({ socketPath: this.socketPath });
    this.log = options.log;
    this.concurrency = options.concurrency ?? 8;
    this.hostNamespace = options.hostNamespace;
  }

  async collect(): Promise<ContainerUsage[]> {
    let containers: Docker.ContainerInfo[];
    try {
      containers = (await this.docker.listContainers({ filters: { label: [WORKLOAD_LABEL] } })).filter((c) => inHostNamespace(c.Labels, this.hostNamespace));
    } catch (error) {
      if (!this.unreachable) {
        this.log.warn("Docker Engine unreachable: reporting no containers", { socket: this.socketPath, error: errorMessage(error) });
        this.unreachable = true;
      }
      return [];
    }
    if (this.unreachable) {
      this.log.info("Docker Engine reachable again", { socket: this.socketPath });
      this.unreachable = false;
    }
    const out: ContainerUsage[] = [];
    let next = 0;
    const worker = async () => {
      while (next < containers.length) {
        const info = containers[next++]!;
        const workloadId = info.Labels?.[WORKLOAD_LABEL];
        const name = (info.Names?.[0] ?? info.Id).replace(/^\//, "");
        if (!workloadId) continue;
        try {
          const stats = (await this.docker.getContainer(info.Id).stats({ stream: false })) as unknown as DockerStats;
          const usage = containerUsageSchema.safeParse(containerUsageFromStats(workloadId, name, stats));
          if (usage.success) out.push(usage.data);
          else this.log.warn("container stats skipped (invalid workload label?)", { container: name });
        } catch (error) {
          // A container that stopped between list and stats: skip it this round.
          this.log.debug("container stats unavailable", { container: name, error: errorMessage(error) });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, containers.length) }, worker));
    out.sort((a, b) => a.workloadId.localeCompare(b.workloadId) || a.container.localeCompare(b.container));
    return out.slice(0, 1000);
  }
}

// ---------- sampling and batching ----------

export interface UsageReporterOptions {
  /** Takes one sample. */
  collect: () => Promise<UsageSample>;
  send: (message: AgentMessage) => void;
  isReady: () => boolean;
  intervalMs: number;
  log: Logger;
  maxSamples?: number;
  maxMessageBytes?: number;
}

export function sampler(host: () => Promise<HostUsage>, containers: () => Promise<ContainerUsage[]>, storage: () => WorkloadStorage[], now = Date.now) {
  return async (): Promise<UsageSample> => {
    const [h, c] = await Promise.all([host(), containers()]);
    return { at: now(), host: h, containers: c, storage: storage() };
  };
}

export class UsageReporter {
  private readonly o: UsageReporterOptions;
  private readonly max: number;
  private readonly maxBytes: number;
  private readonly buffer: UsageSample[] = [];
  private intervalMs: number;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private loop = 0;
  private failing = false;

  constructor(options: UsageReporterOptions) {
    this.o = options;
    this.max = Math.min(options.maxSamples ?? MAX_BATCH, MAX_BATCH);
    this.maxBytes = options.maxMessageBytes ?? MAX_USAGE_MESSAGE_BYTES;
    this.intervalMs = options.intervalMs;
  }

  get buffered(): number {
    return this.buffer.length;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.schedule();
  }

  stop(): void {
    this.running = false;
    this.loop++;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The control plane's cadence (from welcome) replaces the configured one. */
  setIntervalMs(ms: number): void {
    if (ms === this.intervalMs) return;
    this.intervalMs = ms;
    if (this.running) this.schedule();
  }

  /** One interval's work: take a sample, keep it, send the batch if connected. */
  async tick(): Promise<void> {
    try {
      const sample = usageSampleSchema.parse(await this.o.collect());
      this.push(sample);
      if (this.failing) this.o.log.info("usage sampling works again");
      this.failing = false;
    } catch (error) {
      if (!this.failing) this.o.log.warn("usage sample failed", { error: errorMessage(error) });
      this.failing = true;
    }
    this.flush();
  }

  push(sample: UsageSample): void {
    this.buffer.push(sample);
    if (this.buffer.length > this.max) this.buffer.splice(0, this.buffer.length - this.max);
  }

  /**
   * Sends everything buffered, if connected: one `usage` message, or several when one
   * would pass MAX_USAGE_MESSAGE_BYTES (many containers), oldest samples first.
   */
  flush(): void {
    if (this.buffer.length === 0 || !this.o.isReady()) return;
    const samples = this.buffer.splice(0, this.buffer.length);
    let batch: UsageSample[] = [];
    let bytes = 0;
    for (const sample of samples) {
      const size = Buffer.byteLength(JSON.stringify(sample)) + 1;
      if (batch.length > 0 && bytes + size > this.maxBytes) {
        this.o.send({ type: "usage", samples: batch });
        batch = [];
        bytes = 0;
      }
      batch.push(sample);
      bytes += size;
    }
    if (batch.length > 0) this.o.send({ type: "usage", samples: batch });
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    const loop = ++this.loop;
    this.timer = setTimeout(async () => {
      await this.tick();
      if (this.running && loop === this.loop) this.schedule();
    }, this.intervalMs);
    this.timer.unref?.();
  }
}

function nonneg(value: number | null | undefined): number {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? value : 0;
}
