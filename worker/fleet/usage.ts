import { and, asc, eq, gt, gte, inArray, ne, sql } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import type { UsageSample } from "../../protocol/messages";
import type { Database } from "../db/client";
import { hosts, hostUsage, servers, workloadUsage, workloads, type UsageResolution } from "../db/schema";
import { planMemoryLimitSql } from "../servers/placement";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** How long each resolution is kept, and the bucket width it averages over. */
export const USAGE_RETENTION: Record<UsageResolution, { keepMs: number; bucketMs: number }> = {
  raw: { keepMs: 48 * HOUR, bucketMs: 0 },
  "5m": { keepMs: 30 * DAY, bucketMs: 5 * MINUTE },
  "1h": { keepMs: 365 * DAY, bucketMs: HOUR },
};

const MIB = 1024 * 1024;

/** A homeserver's memory figure, reported in bytes, as placement counts it: whole MiB, clamped to [0, its plan's limit] in SQL. */
const clampedMemorySql = (bytes: number) => sql`min(${Math.max(0, Math.ceil(bytes / MIB))}, ${planMemoryLimitSql()})`;

/**
 * Stores an agent's samples. Container figures are summed per workload, and
 * only for workloads that belong to this host: a host cannot write another
 * host's (another customer's) usage. A homeserver's running containers also
 * raise its measured memory (servers.measuredMemoryMiB) if it runs on this
 * host, and the newest sample gives the host's own available memory, clamped
 * to its size: what placement reads, so a lying host can skew neither beyond
 * its own homeservers' plans.
 */
export async function ingestUsage(db: Database, hostId: string, samples: UsageSample[], now: Date): Promise<void> {
  const mine = new Set((await db.select({ id: workloads.id }).from(workloads).where(eq(workloads.hostId, hostId))).map((row) => row.id));
  const statements: BatchItem<"sqlite">[] = [];
  for (const sample of samples) {
    const at = new Date(sample.at);
    const disks = sample.host.disks;
    statements.push(
      db
        .insert(hostUsage)
        .values({
          hostId,
          resolution: "raw",
          at,
          cpuLoadPercent: sample.host.cpuLoadPercent,
          memoryUsedBytes: sample.host.memoryUsedBytes,
          memoryAvailableBytes: sample.host.memoryAvailableBytes,
          diskUsedBytes: disks.reduce((sum, disk) => sum + disk.usedBytes, 0),
          diskSizeBytes: disks.reduce((sum, disk) => sum + disk.sizeBytes, 0),
          networkRxBytes: sample.host.networkRxBytes,
          networkTxBytes: sample.host.networkTxBytes,
        })
        .onConflictDoNothing(),
    );
    const perWorkload = new Map<string, Omit<typeof workloadUsage.$inferInsert, "workloadId" | "hostId" | "resolution" | "at">>();
    const rowOf = (workloadId: string) => {
      let row = perWorkload.get(workloadId);
      if (!row) {
        // A workload with storage but no running container (a stopped homeserver) uses no CPU or memory.
        row = { cpuPercent: 0, memoryBytes: 0, memoryLimitBytes: 0, networkRxBytes: 0, networkTxBytes: 0, blockReadBytes: 0, blockWriteBytes: 0, pids: 0 };
        perWorkload.set(workloadId, row);
      }
      return row;
    };
    const running = new Set<string>();
    for (const container of sample.containers) {
      if (!mine.has(container.workloadId)) continue;
      running.add(container.workloadId);
      const sum = rowOf(container.workloadId);
      sum.cpuPercent += container.cpuPercent;
      sum.memoryBytes += container.memoryBytes;
      sum.memoryLimitBytes += container.memoryLimitBytes;
      sum.networkRxBytes += container.networkRxBytes;
      sum.networkTxBytes += container.networkTxBytes;
      sum.blockReadBytes += container.blockReadBytes;
      sum.blockWriteBytes += container.blockWriteBytes;
      sum.pids += container.pids;
    }
    for (const figure of sample.storage ?? []) {
      if (!mine.has(figure.workloadId)) continue;
      const row = rowOf(figure.workloadId);
      row.storageBytes = figure.usedBytes;
      row.quotaUsedBytes = figure.quota?.usedBytes ?? null;
      row.quotaBytes = figure.quota?.quotaBytes ?? null;
    }
    for (const [workloadId, sum] of perWorkload) {
      statements.push(
        db
          .insert(workloadUsage)
          .values({ workloadId, hostId, resolution: "raw", at, ...sum })
          .onConflictDoNothing(),
      );
      if (!running.has(workloadId)) continue;
      statements.push(
        db
          .update(servers)
          .set({
            measuredMemoryMiB: sql`max(coalesce(${servers.measuredMemoryMiB}, 0), ${clampedMemorySql(sum.memoryBytes)})`,
            memoryMeasuredSince: sql`coalesce(${servers.memoryMeasuredSince}, ${now.getTime()})`,
          })
          .where(and(eq(servers.id, workloadId), eq(servers.hostId, hostId), ne(servers.status, "deleted"))),
      );
    }
  }
  const newest = samples.reduce<UsageSample | undefined>((latest, sample) => (latest && latest.at >= sample.at ? latest : sample), undefined);
  if (newest) {
    const available = Math.max(0, Math.floor(newest.host.memoryAvailableBytes / MIB));
    statements.push(
      db
        .update(hosts)
        .set({ memoryAvailableMiB: sql`min(${available}, ${hosts.memoryMiB})` })
        .where(eq(hosts.id, hostId)),
    );
  }
  const [first, ...rest] = statements;
  if (first) await db.batch([first, ...rest]);
}

const HOST_METRICS = [
  "cpu_load_percent",
  "memory_used_bytes",
  "memory_available_bytes",
  "disk_used_bytes",
  "disk_size_bytes",
  "network_rx_bytes",
  "network_tx_bytes",
];
const WORKLOAD_METRICS = [
  "cpu_percent",
  "memory_bytes",
  "memory_limit_bytes",
  "network_rx_bytes",
  "network_tx_bytes",
  "block_read_bytes",
  "block_write_bytes",
  "pids",
  "storage_bytes",
  "quota_used_bytes",
  "quota_bytes",
];

/**
 * The hourly roll-up, statement by statement: averages the finer resolution
 * into complete buckets of the coarser one, recomputing from one bucket before
 * the newest already rolled (so late samples are counted), then prunes each
 * resolution past its retention. Each reads one resolution's time range,
 * which the (resolution, at) index of each table serves (a test holds it).
 */
export function usageRollupStatements(now: Date): string[] {
  const statements: string[] = [];
  for (const [table, key, metrics] of [
    ["host_usage", "host_id", HOST_METRICS],
    ["workload_usage", "workload_id, host_id", WORKLOAD_METRICS],
  ] as const) {
    for (const [from, to] of [
      ["raw", "5m"],
      ["5m", "1h"],
    ] as const) {
      const width = USAGE_RETENTION[to].bucketMs;
      const currentBucket = Math.floor(now.getTime() / width) * width;
      const averages = metrics.map((metric) => `avg(${metric})`).join(", ");
      const updates = metrics.map((metric) => `${metric} = excluded.${metric}`).join(", ");
      statements.push(`
          INSERT INTO ${table} (${key}, resolution, at, ${metrics.join(", ")})
          SELECT ${key}, '${to}', (at / ${width}) * ${width} AS bucket, ${averages}
          FROM ${table}
          WHERE resolution = '${from}'
            AND at < ${currentBucket}
            AND at >= coalesce((SELECT max(at) FROM ${table} WHERE resolution = '${to}'), 0) - ${width}
          GROUP BY ${key}, bucket
          ON CONFLICT DO UPDATE SET ${updates}`);
    }
  }
  for (const resolution of ["raw", "5m", "1h"] as const) {
    const before = now.getTime() - USAGE_RETENTION[resolution].keepMs;
    for (const table of ["host_usage", "workload_usage"]) statements.push(`DELETE FROM ${table} WHERE resolution = '${resolution}' AND at < ${before}`);
  }
  return statements;
}

export async function rollUpUsage(db: Database, now: Date): Promise<void> {
  for (const statement of usageRollupStatements(now)) await db.run(sql.raw(statement));
}

/** How far back a homeserver's measured memory looks: a day shows its daily peak (its busiest hour, its nightly upkeep). */
export const MEASURED_MEMORY_WINDOW_MS = DAY;

/**
 * Sets each homeserver's measured memory to the peak of the last day of its current host's raw
 * samples while it ran, clamped to its plan's limit, so that it falls again after a spike. One
 * without such samples (stopped all day, or just moved) keeps the figure it had.
 */
export async function refreshMeasuredMemory(db: Database, now: Date): Promise<void> {
  const peaks = db
    .select({
      workloadId: workloadUsage.workloadId,
      hostId: workloadUsage.hostId,
      peakBytes: sql<number>`max(${workloadUsage.memoryBytes})`.as("peak_bytes"),
    })
    .from(workloadUsage)
    .where(
      and(eq(workloadUsage.resolution, "raw"), gte(workloadUsage.at, new Date(now.getTime() - MEASURED_MEMORY_WINDOW_MS)), gt(workloadUsage.memoryBytes, 0)),
    )
    .groupBy(workloadUsage.workloadId, workloadUsage.hostId)
    .as("peaks");
  await db
    .update(servers)
    .set({ measuredMemoryMiB: sql`min(max(0, cast((${peaks.peakBytes} + ${MIB - 1}) / ${MIB} AS integer)), ${planMemoryLimitSql()})` })
    .from(peaks)
    .where(and(eq(peaks.workloadId, servers.id), eq(peaks.hostId, servers.hostId), ne(servers.status, "deleted")));
}

export const USAGE_RANGES = { "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY, "365d": 365 * DAY } as const;
export type UsageRange = keyof typeof USAGE_RANGES;

/** The finest resolution still kept for the whole range. */
export function resolutionFor(range: UsageRange): UsageResolution {
  const span = USAGE_RANGES[range];
  if (span <= USAGE_RETENTION.raw.keepMs) return "raw";
  if (span <= USAGE_RETENTION["5m"].keepMs) return "5m";
  return "1h";
}

export async function workloadUsageSeries(db: Database, workloadIds: string[], range: UsageRange, now: Date) {
  const resolution = resolutionFor(range);
  const rows = await db
    .select()
    .from(workloadUsage)
    .where(
      and(
        inArray(workloadUsage.workloadId, workloadIds),
        eq(workloadUsage.resolution, resolution),
        gte(workloadUsage.at, new Date(now.getTime() - USAGE_RANGES[range])),
      ),
    )
    .orderBy(asc(workloadUsage.at));
  return { resolution, rows };
}

export async function hostUsageSeries(db: Database, hostId: string, range: UsageRange, now: Date) {
  const resolution = resolutionFor(range);
  const rows = await db
    .select()
    .from(hostUsage)
    .where(and(eq(hostUsage.hostId, hostId), eq(hostUsage.resolution, resolution), gte(hostUsage.at, new Date(now.getTime() - USAGE_RANGES[range]))))
    .orderBy(asc(hostUsage.at));
  return { resolution, rows };
}
