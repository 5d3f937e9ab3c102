import { env } from "cloudflare:workers";
import type { UsageSample } from "../../../protocol/messages";
import type { FakeAgent } from "../fleet/fleet-helpers";

// Shared by the export and deletion tests: what a customer's data looks like once their host reported usage.

/** One usage report of a homeserver's two containers, as its agent sends it. */
export function reportUsage(agent: FakeAgent, serverId: string, at: number, cpuPercent: number) {
  const container = (name: string) => ({
    workloadId: serverId,
    container: `${serverId}-${name}`,
    cpuPercent: cpuPercent / 2,
    memoryBytes: 2e8,
    memoryLimitBytes: 5e8,
    networkRxBytes: 10,
    networkTxBytes: 20,
    blockReadBytes: 30,
    blockWriteBytes: 40,
    pids: 5,
  });
  const sample: UsageSample = {
    at,
    host: {
      cpuLoadPercent: 10,
      memoryUsedBytes: 4e9,
      memoryAvailableBytes: 4e9,
      disks: [{ mount: "/var/lib/berth", usedBytes: 1e10, sizeBytes: 1e11 }],
      networkRxBytes: 1000,
      networkTxBytes: 2000,
    },
    containers: [container("synapse"), container("postgres")],
  };
  agent.send({ type: "usage", samples: [sample] });
}

export async function rowCount(sql: string, ...bindings: unknown[]): Promise<number> {
  return (await env.DB.prepare(`SELECT count(*) AS n FROM (${sql})`)
    .bind(...bindings)
    .first<{ n: number }>())!.n;
}
