// A homeserver's PostgreSQL, database pool and allocator sized from its
// containers' limits (splitResources), so that a small plan's pair costs what it
// uses, not what the software's defaults assume (a dedicated machine). The
// figures behind each choice: docs/decisions.md, "Tenant tuning".
import type { ContainerResources } from "./containers.ts";

/** Connections the agent's own jobs may hold at once beside Synapse's pool (pg_dump, psql, the state compressor), PostgreSQL's 3 reserved slots included. */
export const AGENT_CONNECTIONS = 10;

export interface DatabasePool {
  cpMin: number;
  cpMax: number;
}

/**
 * Synapse's connection pool (twisted's adbapi: one thread and one PostgreSQL backend per
 * connection, each backend a few MiB of PostgreSQL's limit once its caches are warm):
 * one connection per 64 MiB of PostgreSQL's memory, 3 to 10 (Synapse's own default
 * maximum); one kept open when idle.
 */
export function databasePool(postgresMemoryMiB: number): DatabasePool {
  return { cpMin: 1, cpMax: Math.min(10, Math.max(3, Math.floor(postgresMemoryMiB / 64))) };
}

/**
 * PostgreSQL's settings (`postgres -c name=value`) from its container's limits:
 *
 * - max_connections: the pool above plus the agent's connections, not 100;
 * - shared_buffers an eighth of the limit, effective_cache_size a half (the page cache
 *   counts against the same limit);
 * - work_mem a 64th (per sort or hash, several per query), maintenance_work_mem a 16th
 *   (vacuum, index builds: 64 MB by default, a quarter of a Starter's PostgreSQL);
 * - no parallel query workers below 2 CPUs (each is a process with its own work_mem, with
 *   no core to run on), at most 2 autovacuum workers;
 * - no JIT: compiling takes longer than Synapse's short queries run, and loads LLVM
 *   (tens of MiB) into the backend that does it.
 */
export function postgresSettings(resources: ContainerResources): Record<string, string> {
  const memory = resources.memoryMiB;
  const atLeast = (floor: number, value: number) => `${Math.max(floor, Math.floor(value))}MB`;
  return {
    max_connections: String(databasePool(memory).cpMax + AGENT_CONNECTIONS),
    shared_buffers: atLeast(16, memory / 8),
    effective_cache_size: atLeast(32, memory / 2),
    work_mem: atLeast(1, memory / 64),
    maintenance_work_mem: atLeast(8, memory / 16),
    max_parallel_workers_per_gather: resources.cpus < 2 ? "0" : "2",
    autovacuum_max_workers: "2",
    jit: "off",
  };
}

/**
 * jemalloc's settings for Synapse (MALLOC_CONF; the image preloads jemalloc): one arena per CPU
 * of the container's limit, not 4 per CPU of the host's (Python's GIL runs one thread at a time);
 * freed pages returned to the kernel after 1 s, not 10 s, by a background thread, so an idle
 * server gives back what a burst took (without it jemalloc purges only while allocating).
 */
export function jemallocConfig(resources: ContainerResources): string {
  const arenas = Math.max(1, Math.ceil(resources.cpus));
  return `narenas:${arenas},background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0`;
}
