// The figures placement admits homeservers by, and the arithmetic they imply: free of imports
// that need the Workers runtime, so that the benchmarks can state what a host admits.
import type { Plan } from "../billing/plans";

/** Memory kept back on every host for the system, the agent and Caddy. */
export const HOST_RESERVED_MEMORY_MIB = 1024;

/**
 * CPU is not reserved: a plan's CPUs are a cap, and idle homeservers use a fraction of a percent
 * of a core. Placement lets caps add up to this many times a host's cores.
 */
export const CPU_OVERCOMMIT = 4;

/**
 * Memory is admitted by measured use (docs/decisions.md, "Placement by measured use"): each
 * homeserver counts for its measured peak (or its plan's floor while new) plus this much to grow
 * into, and its plan's limit still caps its containers.
 */
export const MEMORY_HEADROOM_MIB = 128;

/** The plans' memory limits on a host may add up to this many times the memory it gives homeservers. */
export const MEMORY_OVERCOMMIT = 4;

/** A homeserver measured for less than this counts at least its plan's floor: its first day has not shown its peak yet. */
export const MEASURED_AFTER_MS = 60 * 60_000;

/** What a homeserver not measured long enough counts for, at least: a quarter of its plan's limit. */
export function memoryFloorMiB(plan: Plan): number {
  return plan.resources.memoryMiB / 4;
}

/** What placement counts a homeserver it has never measured for: its plan's floor and the headroom. */
export function newcomerMemoryMiB(plan: Plan): number {
  return memoryFloorMiB(plan) + MEMORY_HEADROOM_MIB;
}

/**
 * How many homeservers of `plan` that each measure `measuredMiB` a host of `hostMemoryMiB` admits
 * once measured: as many as fit by measured use and headroom, at most as many as the overcommit ceiling lets.
 */
export function admittedCount(hostMemoryMiB: number, measuredMiB: number, plan: Plan): number {
  const available = hostMemoryMiB - HOST_RESERVED_MEMORY_MIB;
  const byUse = Math.floor(available / (Math.min(Math.max(measuredMiB, 0), plan.resources.memoryMiB) + MEMORY_HEADROOM_MIB));
  return Math.max(0, Math.min(byUse, Math.floor((available * MEMORY_OVERCOMMIT) / plan.resources.memoryMiB)));
}

/** A host that reports less than this share of its memory available is tight, whatever placement counts. */
export const TIGHT_AVAILABLE_SHARE = 0.1;

/** A tight host recovers once placement counts at most this share of what it gives homeservers, and it reports at least RECOVERED_AVAILABLE_SHARE available: a host at the edge does not flap. */
export const RECOVERED_ADMITTED_SHARE = 0.95;
export const RECOVERED_AVAILABLE_SHARE = 0.15;
