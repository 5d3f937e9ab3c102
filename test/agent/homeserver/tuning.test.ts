// A homeserver's PostgreSQL, database pool and allocator, sized from its containers' limits.
import { describe, expect, it } from "vitest";
import { postgresContainer, splitResources } from "../../../agent/homeserver/containers.ts";
import { homeserverNames, homeserverPaths } from "../../../agent/homeserver/names.ts";
import { AGENT_CONNECTIONS, databasePool, jemallocConfig, postgresSettings } from "../../../agent/homeserver/tuning.ts";

const starter = splitResources({ memoryMiB: 1024, cpus: 1 });
const team = splitResources({ memoryMiB: 2048, cpus: 2 });

describe("PostgreSQL's settings", () => {
  it("size memory from the container's limit: a Starter's 256 MiB", () => {
    expect(postgresSettings(starter.postgres)).toEqual({
      max_connections: "14",
      shared_buffers: "32MB",
      effective_cache_size: "128MB",
      work_mem: "4MB",
      maintenance_work_mem: "16MB",
      max_parallel_workers_per_gather: "0",
      autovacuum_max_workers: "2",
      jit: "off",
    });
  });

  it("grow with the limit, and keep floors for the smallest", () => {
    expect(postgresSettings({ memoryMiB: 2048, cpus: 2 })).toMatchObject({
      max_connections: "20",
      shared_buffers: "256MB",
      work_mem: "32MB",
      maintenance_work_mem: "128MB",
      max_parallel_workers_per_gather: "2",
    });
    expect(postgresSettings({ memoryMiB: 32, cpus: 0.1 })).toMatchObject({ shared_buffers: "16MB", work_mem: "1MB", maintenance_work_mem: "8MB" });
  });

  it("allow Synapse's whole pool and the agent's connections, whatever the limit", () => {
    for (const memoryMiB of [128, 256, 512, 1024, 8192]) {
      const maxConnections = Number(postgresSettings({ memoryMiB, cpus: 1 }).max_connections);
      expect(maxConnections).toBe(databasePool(memoryMiB).cpMax + AGENT_CONNECTIONS);
    }
  });

  it("reach PostgreSQL as its command's -c arguments", () => {
    const names = homeserverNames("3f2a9c1e-7b4d-4e8f-9a01-23456789abcd");
    const spec = postgresContainer({
      names,
      paths: homeserverPaths("/srv/berth", names.serverId),
      serverName: "chat.example.org",
      uid: 200_123,
      image: "berth/postgres:15",
      resources: team.postgres,
      maxUploadMiB: 50,
    });
    expect(spec.Cmd?.slice(0, 5)).toEqual(["postgres", "-c", "max_connections=18", "-c", "shared_buffers=64MB"]);
    expect(spec.Cmd).toContain("work_mem=8MB");
  });
});

describe("Synapse's database pool", () => {
  it("holds one connection per 64 MiB of PostgreSQL's limit, 3 to 10, one when idle", () => {
    expect(databasePool(starter.postgres.memoryMiB)).toEqual({ cpMin: 1, cpMax: 4 });
    expect(databasePool(team.postgres.memoryMiB)).toEqual({ cpMin: 1, cpMax: 8 });
    expect(databasePool(128).cpMax).toBe(3);
    expect(databasePool(4096).cpMax).toBe(10);
  });
});

describe("jemalloc's settings", () => {
  it("take one arena per CPU of Synapse's limit and return freed pages after a second", () => {
    expect(jemallocConfig(starter.synapse)).toBe("narenas:1,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0");
    expect(jemallocConfig(team.synapse)).toBe("narenas:2,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0");
  });
});
