import { and, eq, ne, or, sql, type SQL } from "drizzle-orm";
import { isDevelopment, type WorkerConfig } from "../config";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { hosts, servers, type Host } from "../db/schema";
import type { Plan } from "../billing/plans";
import { PLANS } from "../billing/plans";
import {
  CPU_OVERCOMMIT,
  HOST_RESERVED_MEMORY_MIB,
  MEASURED_AFTER_MS,
  MEMORY_HEADROOM_MIB,
  MEMORY_OVERCOMMIT,
  memoryFloorMiB,
  newcomerMemoryMiB,
} from "./admission";

type Resource = keyof Plan["resources"];

/** What a host's memory holds, in MiB, as placement counts it. */
export interface HostMemory {
  /** What it gives homeservers: its memory less the system's reserve. */
  capacityMiB: number;
  /** Its homeservers' measured peaks (those never measured count nothing). */
  usedMiB: number;
  /** What placement counts its homeservers for: each one's measured peak (or its plan's floor while new) plus headroom. */
  admittedMiB: number;
  /** Its homeservers' plans' memory limits added up. */
  committedMiB: number;
  /** How far those limits may add up: MEMORY_OVERCOMMIT × the capacity. */
  ceilingMiB: number;
  /** What the host last reported available itself; null until it reports usage. */
  reportedAvailableMiB: number | null;
}

export interface HostRoom {
  host: Host;
  memory: HostMemory;
  /** Capacity less what is admitted (negative once its homeservers grew beyond it). */
  freeMemoryMiB: number;
  freeCpus: number;
  freeDiskGiB: number;
  /** Whether it takes no new homeservers for want of memory (hosts.tightSince, worker/fleet/tight-hosts.ts). */
  tight: boolean;
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

/** Per `servers` row, a figure of its plan's, in SQL (0 for a plan no longer sold). */
function perPlanSql(figure: (plan: Plan) => number): SQL {
  return sql`(CASE ${servers.planId} ${sql.join(
    PLANS.map((plan) => sql`WHEN ${plan.id} THEN ${figure(plan)}`),
    sql` `,
  )} ELSE 0 END)`;
}

/** A plan's memory limit per `servers` row, in SQL: what a reported figure is clamped to. */
export const planMemoryLimitSql = () => perPlanSql((plan) => plan.resources.memoryMiB);

/**
 * What placement counts a `servers` row for, in MiB: its measured peak, or at least `floor` while it
 * has not been measured for MEASURED_AFTER_MS at `now`; plus the headroom.
 */
function admittedMemorySql(floor: SQL, now: Date): SQL {
  const measuredLongEnough = sql`${servers.memoryMeasuredSince} <= ${now.getTime() - MEASURED_AFTER_MS}`;
  return sql`(CASE WHEN ${measuredLongEnough} THEN coalesce(${servers.measuredMemoryMiB}, ${floor}) ELSE max(coalesce(${servers.measuredMemoryMiB}, 0), ${floor}) END + ${MEMORY_HEADROOM_MIB})`;
}

/** What each of a host's figures adds up to over `servers` rows, in SQL. */
function reservedSql(resource: Exclude<Resource, "memoryMiB">): SQL {
  return sql`coalesce(sum(${perPlanSql((plan) => plan.resources[resource])}), 0)`;
}
const admittedSql = (now: Date) => sql`coalesce(sum(${admittedMemorySql(perPlanSql(memoryFloorMiB), now)}), 0)`;
const committedSql = () => sql`coalesce(sum(${planMemoryLimitSql()}), 0)`;

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
 * An SQL condition, true when `hostId` still has room for a homeserver on `plan` once every live
 * homeserver on it (but `exceptServerId`) is counted: by measured memory plus headroom within its
 * capacity, with its plans' limits under the overcommit ceiling, and the host not tight.
 * `exceptServerId` is the homeserver that asks (a plan change, a move): it counts for its own
 * measured peak. Evaluated inside the statement that reserves the room, so two requests cannot both
 * take the last of it: D1 runs each statement (and each batch) on its own.
 */
export function hasRoomSql(hostId: string, plan: Plan, now: Date, exceptServerId?: string): SQL {
  const others = and(holdsRoomOn(hostId), exceptServerId ? ne(servers.id, exceptServerId) : undefined);
  const floor = memoryFloorMiB(plan);
  const newcomer = exceptServerId
    ? sql`coalesce((SELECT ${admittedMemorySql(sql`${floor}`, now)} FROM ${servers} WHERE ${servers.id} = ${exceptServerId}), ${newcomerMemoryMiB(plan)})`
    : sql`${newcomerMemoryMiB(plan)}`;
  const ofOthers = (figure: SQL) => sql`(SELECT ${figure} FROM ${servers} WHERE ${others})`;
  const host = (column: SQL) => sql`(SELECT ${column} FROM ${hosts} WHERE ${hosts.id} = ${hostId})`;
  const memory = sql`(${host(sql`${hosts.memoryMiB}`)} - ${HOST_RESERVED_MEMORY_MIB})`;
  return sql`(${ofOthers(admittedSql(now))} + ${newcomer} <= ${memory}
    AND ${ofOthers(committedSql())} + ${plan.resources.memoryMiB} <= ${memory} * ${MEMORY_OVERCOMMIT}
    AND ${host(sql`${hosts.tightSince}`)} IS NULL
    AND ${ofOthers(reservedSql("cpus"))} + ${plan.resources.cpus} <= ${host(sql`${hosts.cpus}`)} * ${CPU_OVERCOMMIT}
    AND ${ofOthers(reservedSql("storageGiB"))} + ${plan.resources.storageGiB} <= ${host(sql`${hosts.diskGiB}`)})`;
}

/** What a host holds and has left once its live homeservers are counted (negative when they grew, or an operator's change left it overcommitted). */
export async function roomOn(db: Database, host: Host, now: Date): Promise<HostRoom> {
  const [held] = await db
    .select({
      usedMiB: sql<number>`coalesce(sum(${servers.measuredMemoryMiB}), 0)`,
      admittedMiB: admittedSql(now),
      committedMiB: committedSql(),
      cpus: reservedSql("cpus"),
      storageGiB: reservedSql("storageGiB"),
    })
    .from(servers)
    .where(holdsRoomOn(host.id));
  const capacity = capacityOf(host);
  const memory: HostMemory = {
    capacityMiB: capacity.memoryMiB,
    usedMiB: Number(held?.usedMiB ?? 0),
    admittedMiB: Number(held?.admittedMiB ?? 0),
    committedMiB: Number(held?.committedMiB ?? 0),
    ceilingMiB: capacity.memoryMiB * MEMORY_OVERCOMMIT,
    reportedAvailableMiB: host.memoryAvailableMiB,
  };
  return {
    host,
    memory,
    freeMemoryMiB: memory.capacityMiB - memory.admittedMiB,
    freeCpus: capacity.cpus - Number(held?.cpus ?? 0),
    freeDiskGiB: capacity.storageGiB - Number(held?.storageGiB ?? 0),
    tight: host.tightSince !== null,
  };
}

/** Whether a host's room admits a new homeserver on `plan`: what hasRoomSql decides, on a snapshot. */
function admits(room: HostRoom, plan: Plan): boolean {
  return (
    !room.tight &&
    room.freeMemoryMiB >= newcomerMemoryMiB(plan) &&
    room.memory.committedMiB + plan.resources.memoryMiB <= room.memory.ceilingMiB &&
    room.freeCpus >= plan.resources.cpus &&
    room.freeDiskGiB >= plan.resources.storageGiB
  );
}

/** What each online, active host of a region that accepts customer data holds and has left. */
export async function roomInRegion({ db, config, now }: WorkContext, region: string): Promise<HostRoom[]> {
  const candidates = await db
    .select()
    .from(hosts)
    .where(and(eq(hosts.region, region), eq(hosts.status, "online"), eq(hosts.state, "active")));
  return Promise.all(candidates.filter((host) => acceptsCustomerData(config, host)).map((host) => roomOn(db, host, now)));
}

/**
 * The online hosts of the region with room for the plan, least loaded first.
 * A snapshot: the room is taken for real by the statement that reserves it (hasRoomSql).
 */
export async function placementCandidates(ctx: WorkContext, region: string, plan: Plan): Promise<Host[]> {
  const fits = (await roomInRegion(ctx, region)).filter((room) => admits(room, plan));
  fits.sort((a, b) => b.freeMemoryMiB - a.freeMemoryMiB || b.freeCpus - a.freeCpus);
  return fits.map((room) => room.host);
}
