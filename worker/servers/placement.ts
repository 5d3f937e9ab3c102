import { and, eq, inArray, ne } from "drizzle-orm";
import type { Database } from "../db/client";
import { hosts, servers, type Host } from "../db/schema";
import type { Plan } from "../billing/plans";
import { planById } from "../billing/plans";

/** Memory kept back on every host for the system, the agent and Caddy. */
export const HOST_RESERVED_MEMORY_MIB = 1024;

/**
 * Memory is reserved (a container at its limit is OOM-killed, so limits must
 * add up), CPU is not: a plan's CPUs are a cap, and idle homeservers use a
 * fraction of a percent of a core. Placement lets caps add up to this many
 * times a host's cores.
 */
export const CPU_OVERCOMMIT = 4;

export interface HostRoom {
  host: Host;
  freeMemoryMiB: number;
  freeCpus: number;
  freeDiskGiB: number;
}

/** What each online host of a region has left once its homeservers' plans are counted. */
export async function roomInRegion(db: Database, region: string): Promise<HostRoom[]> {
  const candidates = await db
    .select()
    .from(hosts)
    .where(and(eq(hosts.region, region), eq(hosts.status, "online")));
  // Customer data goes only where the data root is encrypted, or a development host says it may.
  const eligible = candidates.filter((host) => host.diskEncrypted === true || host.allowUnencrypted);
  if (eligible.length === 0) return [];
  const placed = await db
    .select({ hostId: servers.hostId, planId: servers.planId })
    .from(servers)
    .where(and(inArray(servers.hostId, eligible.map((host) => host.id)), ne(servers.status, "deleted")));
  return eligible.map((host) => {
    const mine = placed.filter((server) => server.hostId === host.id).map((server) => planById(server.planId)?.resources);
    const sum = (pick: (r: Plan["resources"]) => number) => mine.reduce((total, r) => total + (r ? pick(r) : 0), 0);
    return {
      host,
      freeMemoryMiB: host.memoryMiB - HOST_RESERVED_MEMORY_MIB - sum((r) => r.memoryMiB),
      freeCpus: host.cpus * CPU_OVERCOMMIT - sum((r) => r.cpus),
      freeDiskGiB: host.diskGiB - sum((r) => r.storageGiB),
    };
  });
}

/** The least-loaded online host in the region with room for the plan, or null when none has room. */
export async function placeServer(db: Database, region: string, plan: Plan): Promise<Host | null> {
  const fits = (await roomInRegion(db, region)).filter(
    (room) =>
      room.freeMemoryMiB >= plan.resources.memoryMiB &&
      room.freeCpus >= plan.resources.cpus &&
      room.freeDiskGiB >= plan.resources.storageGiB,
  );
  fits.sort((a, b) => b.freeMemoryMiB - a.freeMemoryMiB || b.freeCpus - a.freeCpus);
  return fits[0]?.host ?? null;
}
