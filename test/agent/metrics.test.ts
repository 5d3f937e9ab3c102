import { createServer } from "node:http";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { hostUsageSchema, usageMessage, type AgentMessage, type UsageSample } from "../../protocol/messages.ts";
import { ContainerStatsCollector, UsageReporter, collectHostUsage, containerUsageFromStats, type DockerStats } from "../../agent/metrics.ts";
import { captureLog, onCleanup, runCleanups, sleep, tempDir, waitFor } from "./helpers.ts";

afterEach(runCleanups);

const MiB = 1024 * 1024;

/** A stats response as Docker Engine 2x sends it on a cgroup v2 host. */
const CGROUP_V2: DockerStats = {
  cpu_stats: { cpu_usage: { total_usage: 5_400_000_000 }, system_cpu_usage: 900_000_000_000, online_cpus: 2 },
  precpu_stats: { cpu_usage: { total_usage: 5_200_000_000 }, system_cpu_usage: 898_000_000_000 },
  memory_stats: { usage: 100 * MiB, limit: 512 * MiB, stats: { anon: 60 * MiB, file: 40 * MiB, inactive_file: 30 * MiB, active_file: 10 * MiB } },
  networks: { eth0: { rx_bytes: 1000, tx_bytes: 2000 }, eth1: { rx_bytes: 1, tx_bytes: 2 } },
  blkio_stats: {
    io_service_bytes_recursive: [
      { op: "read", value: 4096 },
      { op: "write", value: 8192 },
      { op: "read", value: 4 },
    ],
  },
  pids_stats: { current: 17 },
};

/** cgroup v1: memory stats carry total_inactive_file and cache; blkio ops are capitalised. */
const CGROUP_V1: DockerStats = {
  cpu_stats: { cpu_usage: { total_usage: 1_000, percpu_usage: [500, 500, 0, 0] }, system_cpu_usage: 10_000 },
  precpu_stats: { cpu_usage: { total_usage: 500 }, system_cpu_usage: 5_000 },
  memory_stats: { usage: 200 * MiB, limit: 1024 * MiB, stats: { cache: 80 * MiB, total_inactive_file: 50 * MiB } },
  networks: { eth0: { rx_bytes: 10, tx_bytes: 20 } },
  blkio_stats: {
    io_service_bytes_recursive: [
      { op: "Read", value: 100 },
      { op: "Write", value: 200 },
      { op: "Total", value: 300 },
    ],
  },
  pids_stats: { current: 3 },
};

describe("container stats, computed like docker stats", () => {
  it("cgroup v2: CPU % from the deltas, memory without inactive file cache", () => {
    const u = containerUsageFromStats("hs-1", "hs-1-synapse", CGROUP_V2);
    // (200e6 / 2000e6) · 2 CPUs · 100 = 20 %
    expect(u.cpuPercent).toBeCloseTo(20, 6);
    expect(u.memoryBytes).toBe(70 * MiB);
    expect(u).toMatchObject({
      workloadId: "hs-1",
      container: "hs-1-synapse",
      memoryLimitBytes: 512 * MiB,
      networkRxBytes: 1001,
      networkTxBytes: 2002,
      blockReadBytes: 4100,
      blockWriteBytes: 8192,
      pids: 17,
    });
  });

  it("cgroup v1: total_inactive_file is the cache; CPUs counted from percpu_usage when online_cpus is absent", () => {
    const u = containerUsageFromStats("hs-2", "c", CGROUP_V1);
    expect(u.cpuPercent).toBeCloseTo((500 / 5000) * 4 * 100, 6);
    expect(u.memoryBytes).toBe(150 * MiB);
    expect(u).toMatchObject({ blockReadBytes: 100, blockWriteBytes: 200, pids: 3 });
    // older engines report only "cache"
    const old = containerUsageFromStats("hs-2", "c", { ...CGROUP_V1, memory_stats: { usage: 200 * MiB, stats: { cache: 80 * MiB } } });
    expect(old.memoryBytes).toBe(120 * MiB);
  });

  it("a first sample (no precpu) and missing sections give zeros, never negatives", () => {
    const u = containerUsageFromStats("hs-3", "c", { cpu_stats: { cpu_usage: { total_usage: 10 }, system_cpu_usage: 10 }, precpu_stats: {} });
    expect(u).toMatchObject({ cpuPercent: 0, memoryBytes: 0, networkRxBytes: 0, blockReadBytes: 0, pids: 0 });
  });
});

describe("container stats from the Docker Engine API", () => {
  it("lists the containers labelled berth.workload and reads their stats (a Docker API on a unix socket)", async () => {
    const socketPath = join(tempDir(), "docker.sock");
    const requests: string[] = [];
    const server = createServer((req, res) => {
      requests.push(req.url ?? "");
      const url = new URL(req.url ?? "/", "http://docker");
      res.setHeader("content-type", "application/json");
      if (url.pathname.endsWith("/containers/json")) {
        res.end(
          JSON.stringify([
            { Id: "aaa", Names: ["/hs-1-synapse"], Labels: { "berth.workload": "hs-1" } },
            { Id: "bbb", Names: ["/hs-1-postgres"], Labels: { "berth.workload": "hs-1" } },
            { Id: "ccc", Names: ["/gone"], Labels: { "berth.workload": "hs-2" } },
          ]),
        );
      } else if (url.pathname.endsWith("/containers/aaa/stats") || url.pathname.endsWith("/containers/bbb/stats")) {
        res.end(JSON.stringify(url.pathname.includes("aaa") ? CGROUP_V2 : CGROUP_V1));
      } else {
        res.statusCode = 404;
        res.end(JSON.stringify({ message: "No such container" }));
      }
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));

    const { log } = captureLog();
    const containers = await new ContainerStatsCollector({ socketPath, log }).collect();
    expect(containers.map((c) => [c.workloadId, c.container])).toEqual([
      ["hs-1", "hs-1-postgres"],
      ["hs-1", "hs-1-synapse"],
    ]);
    expect(containers.find((c) => c.container === "hs-1-synapse")!.memoryBytes).toBe(70 * MiB);
    const list = requests.find((r) => r.includes("/containers/json"))!;
    expect(JSON.parse(new URL(list, "http://docker").searchParams.get("filters")!)).toEqual({ label: ["berth.workload"] });
    expect(requests.some((r) => /\/containers\/aaa\/stats\?stream=false/.test(r))).toBe(true);
  });

  it("reports no containers when Docker is unreachable, and says so once", async () => {
    const captured = captureLog();
    const collector = new ContainerStatsCollector({ socketPath: join(tempDir(), "no-docker.sock"), log: captured.log });
    expect(await collector.collect()).toEqual([]);
    expect(await collector.collect()).toEqual([]);
    expect(captured.lines.filter((l) => String(l.msg).includes("Docker Engine unreachable"))).toHaveLength(1);
  });
});

describe("host usage", () => {
  it("measures this machine with systeminformation", async () => {
    const host = hostUsageSchema.parse(await collectHostUsage());
    expect(host.memoryAvailableBytes).toBeGreaterThan(0);
    expect(host.memoryUsedBytes).toBeGreaterThan(0);
    expect(host.disks.length).toBeGreaterThan(0);
    expect(host.disks.every((d) => d.sizeBytes >= d.usedBytes)).toBe(true);
  });
});

describe("usage batching", () => {
  function sample(at: number): UsageSample {
    return {
      at,
      host: { cpuLoadPercent: 0, memoryUsedBytes: 1, memoryAvailableBytes: 1, disks: [], networkRxBytes: 0, networkTxBytes: 0 },
      containers: [],
    };
  }

  it("keeps the newest 120 samples while disconnected and sends them as one usage message", async () => {
    let at = 1;
    let ready = false;
    const sent: AgentMessage[] = [];
    const reporter = new UsageReporter({
      collect: async () => sample(at++),
      send: (m) => sent.push(m),
      isReady: () => ready,
      intervalMs: 60_000,
      log: captureLog().log,
    });
    for (let i = 0; i < 130; i++) await reporter.tick();
    expect(sent).toEqual([]);
    expect(reporter.buffered).toBe(120);
    ready = true;
    reporter.flush();
    expect(sent).toHaveLength(1);
    const message = usageMessage.parse(sent[0]);
    expect(message.samples.map((s) => s.at)).toEqual(Array.from({ length: 120 }, (_, i) => i + 11));
    await reporter.tick();
    expect(usageMessage.parse(sent[1]).samples.map((s) => s.at)).toEqual([131]);
  });

  it("splits a batch that would be too large into several usage messages, oldest first", async () => {
    let at = 1;
    const sent: AgentMessage[] = [];
    const many = (n: number): UsageSample => ({
      ...sample(at++),
      containers: Array.from({ length: n }, (_, i) => ({
        workloadId: `hs-${i}`,
        container: `hs-${i}-synapse`,
        cpuPercent: 1.5,
        memoryBytes: 123456789,
        memoryLimitBytes: 536870912,
        networkRxBytes: 1e9,
        networkTxBytes: 1e9,
        blockReadBytes: 1e9,
        blockWriteBytes: 1e9,
        pids: 40,
      })),
    });
    let ready = false;
    const reporter = new UsageReporter({
      collect: async () => many(1000),
      send: (m) => sent.push(m),
      isReady: () => ready,
      intervalMs: 60_000,
      log: captureLog().log,
    });
    for (let i = 0; i < 10; i++) await reporter.tick();
    ready = true;
    reporter.flush();
    expect(sent.length).toBeGreaterThan(1);
    const ats: number[] = [];
    for (const m of sent) {
      expect(Buffer.byteLength(JSON.stringify(m))).toBeLessThanOrEqual(512 * 1024 + 1024);
      ats.push(...usageMessage.parse(m).samples.map((s) => s.at));
    }
    expect(ats).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it("samples every interval and survives a failing collector", async () => {
    let calls = 0;
    const sent: AgentMessage[] = [];
    const captured = captureLog();
    const reporter = new UsageReporter({
      collect: async () => {
        calls++;
        if (calls <= 2) throw new Error("sensor unavailable");
        return sample(calls);
      },
      send: (m) => sent.push(m),
      isReady: () => true,
      intervalMs: 20,
      log: captured.log,
    });
    reporter.start();
    onCleanup(() => reporter.stop());
    await waitFor(() => sent.length >= 3, "three usage messages");
    reporter.stop();
    const count = calls;
    await sleep(100);
    expect(calls).toBe(count);
    expect(captured.lines.filter((l) => l.msg === "usage sample failed")).toHaveLength(1);
    expect(captured.has("usage sampling works again")).toBe(true);
  });
});
