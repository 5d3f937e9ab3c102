import { env } from "cloudflare:workers";
import type { UsageSample } from "../../../protocol/messages";
import type { HostIdentity } from "./fleet-helpers";

/** A usage sample at `at`: the host's figures, and two containers per workload (Synapse and PostgreSQL) that share its CPU and memory. */
export function sample(at: number, workloads: { id: string; cpu: number; memory: number }[], cpuLoad = 10, memoryAvailableBytes = 4e9): UsageSample {
  return {
    at,
    host: {
      cpuLoadPercent: cpuLoad,
      memoryUsedBytes: 4e9,
      memoryAvailableBytes,
      disks: [{ mount: "/var/lib/berth", usedBytes: 1e10, sizeBytes: 1e11 }],
      networkRxBytes: 1000,
      networkTxBytes: 2000,
    },
    // Two containers per homeserver (Synapse and PostgreSQL): summed per workload.
    containers: workloads.flatMap(({ id, cpu, memory }) => {
      const container = (role: string, pids: number) => ({
        workloadId: id,
        container: `${id}-${role}`,
        cpuPercent: cpu / 2,
        memoryBytes: memory / 2,
        memoryLimitBytes: 5e8,
        networkRxBytes: 10,
        networkTxBytes: 20,
        blockReadBytes: 30,
        blockWriteBytes: 40,
        pids,
      });
      return [container("synapse", 10), container("postgres", 5)];
    }),
  };
}

/** A customer's server placed on `host`, with its workload row (ids are shared). */
export async function serverOn(host: HostIdentity, email: string): Promise<string> {
  const id = crypto.randomUUID();
  const now = Date.now();
  const user = await env.DB.prepare("SELECT id FROM users WHERE email = ?").bind(email).first<{ id: string }>();
  await env.DB.batch([
    env.DB.prepare("INSERT INTO workloads (id, host_id, kind, spec, desired, created_at, updated_at) VALUES (?, ?, 'homeserver', '{}', 'present', ?, ?)").bind(
      id,
      host.hostId,
      now,
      now,
    ),
    env.DB.prepare("INSERT INTO servers (id, user_id, name, region, host_id, created_at) VALUES (?, ?, ?, 'us-east', ?, ?)").bind(
      id,
      user!.id,
      `hs-${id.slice(0, 8)}`,
      host.hostId,
      now,
    ),
  ]);
  return id;
}
