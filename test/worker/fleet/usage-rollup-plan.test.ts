import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { usageRollupStatements } from "../../../worker/fleet/usage";

// The hourly cron's usage roll-up must stay within D1's limits at 10,000 homeservers: each of its
// statements reads one resolution's time range through the (resolution, at) index of its table,
// never a scan of the whole table. This times nothing: it reads SQLite's query plans.

const HOMESERVERS = 10_000;
const HOSTS = 100;
const HOUR = 3_600_000;

/** `count` rows from a recursive counter, n = 0 … count − 1, for INSERT … SELECT. */
const counter = (count: number) => `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${count - 1})`;

async function seed(now: number) {
  const tag = crypto.randomUUID().slice(0, 8);
  await env.DB.batch([
    env.DB.prepare(
      `${counter(HOSTS)} INSERT INTO hosts (id, name, region, memory_mib, cpus, disk_gib, public_key, status, agent_version, enrolled_at)
       SELECT 'plan-${tag}-' || i, 'plan-${tag}-' || i, 'us-east', 65536, 16, 2000, 'key', 'online', '0.1.0', ? FROM n`,
    ).bind(now),
    // Per homeserver: 12 raw samples of the last hour, 12 five-minute buckets and 24 hourly ones before it.
    ...(
      [
        ["raw", 12, 5 * 60_000, now - HOUR],
        ["5m", 12, 5 * 60_000, now - 2 * HOUR],
        ["1h", 24, HOUR, now - 26 * HOUR],
      ] as const
    ).flatMap(([resolution, samples, step, from]) => [
      env.DB.prepare(
        `${counter(HOMESERVERS * samples)} INSERT INTO workload_usage
           (workload_id, host_id, resolution, at, cpu_percent, memory_bytes, memory_limit_bytes, network_rx_bytes, network_tx_bytes, block_read_bytes, block_write_bytes, pids)
         SELECT 'plan-${tag}-hs-' || (i / ${samples}), 'plan-${tag}-' || (i % ${HOSTS}), '${resolution}', ? + (i % ${samples}) * ${step}, 1, 2, 3, 4, 5, 6, 7, 8 FROM n`,
      ).bind(from),
      env.DB.prepare(
        `${counter(HOSTS * samples)} INSERT INTO host_usage
           (host_id, resolution, at, cpu_load_percent, memory_used_bytes, memory_available_bytes, disk_used_bytes, disk_size_bytes, network_rx_bytes, network_tx_bytes)
         SELECT 'plan-${tag}-' || (i / ${samples}), '${resolution}', ? + (i % ${samples}) * ${step}, 1, 2, 3, 4, 5, 6, 7 FROM n`,
      ).bind(from),
    ]),
  ]);
}

describe("the hourly usage roll-up at 10,000 homeservers", () => {
  it("reads each table through its (resolution, at) index in every statement: no full scan", async () => {
    const now = Date.now();
    await seed(now);
    const seeded = await env.DB.prepare("SELECT count(DISTINCT workload_id) AS n FROM workload_usage").first<{ n: number }>();
    expect(seeded!.n).toBeGreaterThanOrEqual(HOMESERVERS);
    // Statistics as a long-running database has them, so the planner weighs the real table.
    await env.DB.prepare("ANALYZE").run();

    const statements = usageRollupStatements(new Date(now));
    expect(statements).toHaveLength(10);
    for (const statement of statements) {
      const { results } = await env.DB.prepare(`EXPLAIN QUERY PLAN ${statement}`).all<{ detail: string }>();
      const reads = results.map((row) => row.detail).filter((detail) => /\b(host_usage|workload_usage)\b/.test(detail));
      expect(reads.length, statement).toBeGreaterThan(0);
      for (const detail of reads) {
        expect(detail, statement).toMatch(
          /^SEARCH (host_usage|workload_usage) USING (COVERING )?INDEX (host|workload)_usage_resolution_at_idx \(resolution=\?/,
        );
      }
    }
  });
});
