import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { planById } from "../../../worker/billing/plans";
import { database } from "../../../worker/db/client";
import { CPU_OVERCOMMIT, HOST_RESERVED_MEMORY_MIB, placeServer } from "../../../worker/servers/placement";

const db = database(env.DB);
const starter = planById("starter")!;
const region = () => `test-${crypto.randomUUID().slice(0, 8)}`;

async function host(region: string, memoryMiB: number, cpus: number) {
  const id = crypto.randomUUID();
  await env.DB.prepare(
    `INSERT INTO hosts (id, name, region, memory_mib, cpus, disk_gib, public_key, status, agent_version, disk_encrypted, enrolled_at)
     VALUES (?, ?, ?, ?, ?, 1000, 'key', 'online', 'test', 1, ?)`,
  )
    .bind(id, `host-${id}`, region, memoryMiB, cpus, Date.now())
    .run();
  return id;
}

let owner: string;
beforeEach(async () => {
  owner = crypto.randomUUID();
  await env.DB.prepare("INSERT INTO users (id, email, password_hash, created_at, updated_at) VALUES (?, ?, 'x', ?, ?)").bind(owner, `${owner}@example.com`, Date.now(), Date.now()).run();
});

/** Places starter servers until none fits; how many did. */
async function fill(region: string): Promise<number> {
  for (let placed = 0; ; placed++) {
    const chosen = await placeServer(db, region, starter);
    if (!chosen) return placed;
    const id = crypto.randomUUID();
    await env.DB.prepare("INSERT INTO servers (id, user_id, name, region, host_id, plan_id, status, created_at) VALUES (?, ?, ?, ?, ?, 'starter', 'running', ?)")
      .bind(id, owner, `s-${id.slice(0, 12)}`, region, chosen.id, Date.now())
      .run();
  }
}

describe("placement", () => {
  it(`reserves memory (less ${HOST_RESERVED_MEMORY_MIB} MiB for the host) but lets CPU caps add up to ${CPU_OVERCOMMIT}× the cores`, async () => {
    const memoryBound = region();
    await host(memoryBound, 4096, 8);
    expect(await fill(memoryBound)).toBe((4096 - HOST_RESERVED_MEMORY_MIB) / starter.resources.memoryMiB);

    const cpuBound = region();
    await host(cpuBound, 24 * 1024, 2);
    expect(await fill(cpuBound)).toBe((2 * CPU_OVERCOMMIT) / starter.resources.cpus);
  });
});
