import { and, eq, ne, or, sql, type SQL } from "drizzle-orm";
import { isDevelopment, type WorkerConfig } from "../config";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { hosts, servers, type Host } from "../db/schema";
import type { Plan } from "../billing/plans";
import { PLANS } from "../billing/plans";

/** Memory kept back on every host for the system, the agent and Caddy. */
export const HOST_RESERVED_MEMORY_MIB = 1024;

/**
 * Memory is reserved (a container at its limit is OOM-killed, so limits must
 * add up), CPU is not: a plan's CPUs are a cap, and idle homeservers use a
 * fraction of a percent of a core. Placement lets caps add up to this many
 * times a host's cores.
 */
export const CPU_OVERCOMMIT = 4;

type Resource = keyof Plan["resources"];

export interface HostRoom {
  host: Host;
  freeMemoryMiB: number;
  freeCpus: number;
  freeDiskGiB: number;
}

/**
 * Whether customer data may go to this host: its data root is encrypted, or
 * (development only) its agent runs with --allow-unencrypted-data-root, or an
 * operator explicitly let this host take customer data anyway (audited).
 */
export function acceptsCustomerData(config: WorkerConfig, host: Host): boolean {
  if (host.diskEncrypted === true || host.unencryptedPlacementOverride) return true;
  return isDevelopment(config) && host.allowUnencrypted;
}

/** What one resource of the plans of a host's homeservers adds up to, in SQL over `servers` rows. */
function reservedSql(resource: Resource): SQL {
  const perPlan = sql.join(
    PLANS.map((plan) => sql`WHEN ${plan.id} THEN ${plan.resources[resource]}`),
    sql` `,
  );
  return sql`coalesce(sum(CASE ${servers.planId} ${perPlan} ELSE 0 END), 0)`;
}

/** The live homeservers whose room `hostId` holds: those it runs, and those moving onto or off it (servers.reservedOnHostId). */
function holdsRoomOn(hostId: string): SQL {
  return and(or(eq(servers.hostId, hostId), eq(servers.reservedOnHostId, hostId)), ne(servers.status, "deleted"))!;
}

/** What a host can give homeservers, per resource. */
export function capacityOf(host: Pick<Host, "memoryMiB" | "cpus" | "diskGiB">): Plan["resources"] {
  return { memoryMiB: host.memoryMiB - HOST_RESERVED_MEMORY_MIB, cpus: host.cpus * CPU_OVERCOMMIT, storageGiB: host.diskGiB };
}

/**
 * An SQL condition, true while the operator lets `hostId` take new homeservers.
 * Checked in the statement that places, so a drain started meanwhile wins.
 */
export function takesPlacementsSql(hostId: string): SQL {
  return sql`EXISTS (SELECT 1 FROM ${hosts} WHERE ${hosts.id} = ${hostId} AND ${hosts.state} = 'active')`;
}

/**
 * An SQL condition, true when `hostId` still has room for `plan` once every
 * live homeserver on it (but `exceptServerId`) is counted. Evaluated inside
 * the statement that reserves the room, so two requests cannot both take the
 * last of it: D1 runs each statement (and each batch) on its own.
 */
export function hasRoomSql(hostId: string, plan: Plan, exceptServerId?: string): SQL {
  const others = and(holdsRoomOn(hostId), exceptServerId ? ne(servers.id, exceptServerId) : undefined);
  const fits = (resource: Resource, capacity: SQL) =>
    sql`(SELECT ${reservedSql(resource)} FROM ${servers} WHERE ${others}) + ${plan.resources[resource]} <= ${capacity}`;
  const host = (column: SQL) => sql`(SELECT ${column} FROM ${hosts} WHERE ${hosts.id} = ${hostId})`;
  return sql`(${fits("memoryMiB", sql`${host(sql`${hosts.memoryMiB}`)} - ${HOST_RESERVED_MEMORY_MIB}`)}
    AND ${fits("cpus", sql`${host(sql`${hosts.cpus}`)} * ${CPU_OVERCOMMIT}`)}
    AND ${fits("storageGiB", host(sql`${hosts.diskGiB}`))})`;
}

/** What a host has left once its live homeservers' plans are counted (negative when an operator's change left it overcommitted). */
export async function roomOn(db: Database, host: Host): Promise<HostRoom> {
  const [used] = await db
    .select({ memoryMiB: reservedSql("memoryMiB"), cpus: reservedSql("cpus"), storageGiB: reservedSql("storageGiB") })
    .from(servers)
    .where(holdsRoomOn(host.id));
  const capacity = capacityOf(host);
  return {
    host,
    freeMemoryMiB: capacity.memoryMiB - Number(used?.memoryMiB ?? 0),
    freeCpus: capacity.cpus - Number(used?.cpus ?? 0),
    freeDiskGiB: capacity.storageGiB - Number(used?.storageGiB ?? 0),
  };
}

/** What each online, active host of a region that accepts customer data has left once its homeservers' plans are counted. */
export async function roomInRegion({ db, config }: WorkContext, region: string): Promise<HostRoom[]> {
  const candidates = await db
    .select()
    .from(hosts)
    .where(and(eq(hosts.region, region), eq(hosts.status, "online"), eq(hosts.state, "active")));
  return Promise.all(candidates.filter((host) => acceptsCustomerData(config, host)).map((host) => roomOn(db, host)));
}

/**
 * The online hosts of the region with room for the plan, least loaded first.
 * A snapshot: the room is taken for real by the statement that reserves it (hasRoomSql).
 */
export async function placementCandidates(ctx: WorkContext, region: string, plan: Plan): Promise<Host[]> {
  const fits = (await roomInRegion(ctx, region)).filter(
    (room) => room.freeMemoryMiB >= plan.resources.memoryMiB && room.freeCpus >= plan.resources.cpus && room.freeDiskGiB >= plan.resources.storageGiB,
  );
  fits.sort((a, b) => b.freeMemoryMiB - a.freeMemoryMiB || b.freeCpus - a.freeCpus);
  return fits.map((room) => room.host);
}
