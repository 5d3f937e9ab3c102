import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { planById } from "../../../worker/billing/plans";
import { database } from "../../../worker/db/client";
import { refreshMeasuredMemory } from "../../../worker/fleet/usage";
import { DAY, HOUR, MINUTE, call, expectError, logIn, runCron, setNow, verifiedUser } from "../helpers";
import { connectedAgent, enrolledHost, operatorCookie } from "./fleet-helpers";
import { sample, serverOn } from "./usage-helpers";

afterEach(() => vi.useRealTimers());

const MIB = 1024 * 1024;

async function measuredMemory(serverId: string) {
  return (await env.DB.prepare("SELECT measured_memory_mib, memory_measured_since FROM servers WHERE id = ?").bind(serverId).first<{
    measured_memory_mib: number | null;
    memory_measured_since: number | null;
  }>())!;
}

interface Series {
  resolution: string;
  points: { at: string; cpuPercent: number; memoryBytes: number; pids: number }[];
}

async function usage(cookie: string, serverId: string, range = "24h"): Promise<Series> {
  const response = await call(`/api/servers/${serverId}/usage?range=${range}`, { cookie });
  expect(response.status).toBe(200);
  return response.json();
}

describe("usage reports", () => {
  it("arrive from the agent and are read by the server's owner, summed over its containers", async () => {
    const operator = await operatorCookie();
    const host = await enrolledHost(operator);
    const owner = await verifiedUser();
    const serverId = await serverOn(host, owner.email);
    const agent = await connectedAgent(host);
    const now = Date.now();
    agent.send({
      type: "usage",
      samples: [sample(now - 60_000, [{ id: serverId, cpu: 20, memory: 3e8 }]), sample(now - 30_000, [{ id: serverId, cpu: 40, memory: 4e8 }])],
    });

    const cookie = await logIn(owner.email);
    await vi.waitFor(async () => expect((await usage(cookie, serverId)).points).toHaveLength(2));
    const series = await usage(cookie, serverId);
    expect(series.resolution).toBe("raw");
    expect(series.points.map((point) => point.cpuPercent)).toEqual([20, 40]);
    expect(series.points[1]).toMatchObject({ memoryBytes: 4e8, pids: 15 });
    expect(Object.keys(series.points[0]!)).not.toContain("hostId");

    const hostUsage = await call(`/api/admin/hosts/${host.hostId}/usage`, { cookie: operator });
    expect(((await hostUsage.json()) as Series).points).toHaveLength(2);
  });

  it("carry each homeserver's storage, also while its containers are stopped", async () => {
    const host = await enrolledHost(await operatorCookie());
    const owner = await verifiedUser();
    const serverId = await serverOn(host, owner.email);
    const agent = await connectedAgent(host);
    const now = Date.now();
    const running = { ...sample(now - 60_000, [{ id: serverId, cpu: 20, memory: 3e8 }]), storage: [{ workloadId: serverId, usedBytes: 5e7 }] };
    const stopped = { ...sample(now - 30_000, []), storage: [{ workloadId: serverId, usedBytes: 6e7 }] };
    agent.send({ type: "usage", samples: [running, stopped] });

    const cookie = await logIn(owner.email);
    await vi.waitFor(async () => expect((await usage(cookie, serverId)).points).toHaveLength(2));
    const points = (await usage(cookie, serverId)).points as Array<Series["points"][number] & { storageBytes: number | null }>;
    expect(points.map((point) => point.storageBytes)).toEqual([5e7, 6e7]);
    expect(points[1]).toMatchObject({ cpuPercent: 0, memoryBytes: 0 });
  });

  it("one customer cannot read another's", async () => {
    const host = await enrolledHost(await operatorCookie());
    const alice = await verifiedUser();
    const mallory = await verifiedUser();
    const serverId = await serverOn(host, alice.email);
    await expectError(await call(`/api/servers/${serverId}/usage`, { cookie: await logIn(mallory.email) }), 404, "not_found");
    await expectError(await call(`/api/servers/${serverId}/usage`), 401);
    await expectError(await call(`/api/servers/${serverId}/usage?range=forever`, { cookie: await logIn(alice.email) }), 400, "validation_failed");
  });

  it("a host cannot write usage for another host's workloads", async () => {
    const operator = await operatorCookie();
    const theirs = await enrolledHost(operator);
    const mine = await enrolledHost(operator);
    const owner = await verifiedUser();
    const victim = await serverOn(theirs, owner.email);
    const agent = await connectedAgent(mine);
    agent.send({
      type: "usage",
      samples: [{ ...sample(Date.now(), [{ id: victim, cpu: 99, memory: 9e9 }]), storage: [{ workloadId: victim, usedBytes: 1e12 }] }],
    });
    // The host's own sample is stored; the forged container figures are not.
    await vi.waitFor(async () => {
      const response = await call(`/api/admin/hosts/${mine.hostId}/usage`, { cookie: operator });
      expect(((await response.json()) as Series).points).toHaveLength(1);
    });
    expect((await usage(await logIn(owner.email), victim)).points).toEqual([]);
    // Nor does it count towards the victim's measured memory, which placement reads.
    expect(await measuredMemory(victim)).toEqual({ measured_memory_mib: null, memory_measured_since: null });
  });

  it("a homeserver's measured memory is the peak its own host reports, clamped to its plan's limit; the host's available memory to its size", async () => {
    const operator = await operatorCookie();
    const host = await enrolledHost(operator);
    const serverId = await serverOn(host, (await verifiedUser()).email);
    const agent = await connectedAgent(host);
    const at = Date.now();
    agent.send({
      type: "usage",
      samples: [sample(at, [{ id: serverId, cpu: 1, memory: 300 * MIB }]), sample(at + 1, [{ id: serverId, cpu: 1, memory: 200 * MIB }])],
    });
    await vi.waitFor(async () => expect((await measuredMemory(serverId)).measured_memory_mib).toBe(300));
    expect((await measuredMemory(serverId)).memory_measured_since).toBeGreaterThan(0);

    // A host claiming more than the plan lets a homeserver use, or more memory than it has, is held to the limit.
    agent.send({ type: "usage", samples: [sample(at + 2, [{ id: serverId, cpu: 1, memory: 1e15 }], 10, 1e15)] });
    await vi.waitFor(async () => expect((await measuredMemory(serverId)).measured_memory_mib).toBe(planById("starter")!.resources.memoryMiB));
    await vi.waitFor(async () =>
      expect(await env.DB.prepare("SELECT memory_available_mib AS available, memory_mib AS size FROM hosts WHERE id = ?").bind(host.hostId).first()).toEqual({
        available: 8192,
        size: 8192,
      }),
    );
  });

  it("a host's figures count only for the homeservers it runs: not for one it merely holds a copy of during a move", async () => {
    const operator = await operatorCookie();
    const source = await enrolledHost(operator);
    const target = await enrolledHost(operator);
    const serverId = await serverOn(source, (await verifiedUser()).email);
    // The target holds the homeserver's workload, as during a move before the switch; the source still runs it.
    await env.DB.prepare("UPDATE workloads SET host_id = ? WHERE id = ?").bind(target.hostId, serverId).run();
    const agent = await connectedAgent(target);
    agent.send({ type: "usage", samples: [sample(Date.now(), [{ id: serverId, cpu: 1, memory: 1 }])] });
    await vi.waitFor(async () =>
      expect(await env.DB.prepare("SELECT count(*) AS n FROM host_usage WHERE host_id = ?").bind(target.hostId).first()).toEqual({ n: 1 }),
    );
    expect(await measuredMemory(serverId)).toEqual({ measured_memory_mib: null, memory_measured_since: null });
  });

  it("the hourly refresh sets the peak of the last day of its own host's samples while it ran: it falls after a spike, and stays while stopped", async () => {
    const host = await enrolledHost(await operatorCookie());
    const other = await enrolledHost(await operatorCookie());
    const [busy, stopped] = [await serverOn(host, (await verifiedUser()).email), await serverOn(host, (await verifiedUser()).email)];
    const now = Date.now();
    await env.DB.prepare("UPDATE servers SET measured_memory_mib = 900, memory_measured_since = ? WHERE id IN (?, ?)")
      .bind(now - 2 * DAY, busy, stopped)
      .run();
    const raw = (workloadId: string, hostId: string, at: number, memoryBytes: number) =>
      env.DB.prepare(
        `INSERT INTO workload_usage (workload_id, host_id, resolution, at, cpu_percent, memory_bytes, memory_limit_bytes, network_rx_bytes, network_tx_bytes, block_read_bytes, block_write_bytes, pids)
         VALUES (?, ?, 'raw', ?, 0, ?, 0, 0, 0, 0, 0, 0)`,
      ).bind(workloadId, hostId, at, memoryBytes);
    await env.DB.batch([
      raw(busy, host.hostId, now - DAY - HOUR, 900 * MIB), // the spike, more than a day ago
      raw(busy, host.hostId, now - 2 * HOUR, 250 * MIB - 1),
      raw(busy, host.hostId, now - HOUR, 0), // stopped since
      raw(busy, other.hostId, now - HOUR / 2, 800 * MIB), // another host's say
      raw(stopped, host.hostId, now - HOUR, 0),
    ]);
    await refreshMeasuredMemory(database(env.DB), new Date(now));
    expect((await measuredMemory(busy)).measured_memory_mib).toBe(250);
    expect((await measuredMemory(stopped)).measured_memory_mib).toBe(900);
  });

  it("roll up: raw kept 48 h, 5-minute averages for 30 days, hourly for a year", async () => {
    const operator = await operatorCookie();
    const host = await enrolledHost(operator);
    const owner = await verifiedUser();
    const serverId = await serverOn(host, owner.email);
    const agent = await connectedAgent(host);
    const start = Math.floor(Date.now() / HOUR) * HOUR - 2 * HOUR;
    // Two hours of samples every 30 s: cpu alternates 10 and 30 (average 20); storage 4e7 and 6e7 (average 5e7).
    const samples = Array.from({ length: 240 }, (_, i) => ({
      ...sample(start + i * 30_000, [{ id: serverId, cpu: i % 2 ? 30 : 10, memory: 1e8 }]),
      storage: [{ workloadId: serverId, usedBytes: i % 2 ? 6e7 : 4e7 }],
    }));
    for (let i = 0; i < samples.length; i += 120) agent.send({ type: "usage", samples: samples.slice(i, i + 120) });
    await vi.waitFor(async () => {
      const n = await env.DB.prepare("SELECT count(*) AS n FROM workload_usage WHERE workload_id = ? AND resolution = 'raw'")
        .bind(serverId)
        .first<{ n: number }>();
      expect(n!.n).toBe(240);
    });

    await runCron();
    const fiveMinute = await env.DB.prepare(
      "SELECT at, cpu_percent, memory_bytes, storage_bytes FROM workload_usage WHERE workload_id = ? AND resolution = '5m' ORDER BY at",
    )
      .bind(serverId)
      .all<{ at: number; cpu_percent: number; memory_bytes: number; storage_bytes: number }>();
    expect(fiveMinute.results).toHaveLength(24);
    expect(
      fiveMinute.results.every((row) => row.cpu_percent === 20 && row.memory_bytes === 1e8 && row.storage_bytes === 5e7 && row.at % (5 * MINUTE) === 0),
    ).toBe(true);
    const hourly = await env.DB.prepare("SELECT cpu_percent FROM workload_usage WHERE workload_id = ? AND resolution = '1h'").bind(serverId).all();
    expect(hourly.results).toEqual([{ cpu_percent: 20 }, { cpu_percent: 20 }]);

    const cookie = await logIn(owner.email);
    expect((await usage(cookie, serverId, "7d")).points).toHaveLength(24);

    // Two days on, the raw samples are gone and the averages remain.
    setNow(start + 2 * DAY + 3 * HOUR);
    await runCron();
    const left = await env.DB.prepare("SELECT resolution, count(*) AS n FROM workload_usage WHERE workload_id = ? GROUP BY resolution ORDER BY resolution")
      .bind(serverId)
      .all<{ resolution: string; n: number }>();
    expect(left.results).toEqual([
      { resolution: "1h", n: 2 },
      { resolution: "5m", n: 24 },
    ]);

    // A month on, only the hourly averages; a year on, nothing.
    setNow(start + 31 * DAY);
    await runCron();
    expect((await env.DB.prepare("SELECT resolution FROM workload_usage WHERE workload_id = ?").bind(serverId).all()).results).toEqual([
      { resolution: "1h" },
      { resolution: "1h" },
    ]);
    setNow(start + 366 * DAY);
    await runCron();
    expect((await env.DB.prepare("SELECT count(*) AS n FROM workload_usage WHERE workload_id = ?").bind(serverId).first<{ n: number }>())!.n).toBe(0);
    const hostRows = await env.DB.prepare("SELECT count(*) AS n FROM host_usage WHERE host_id = ?").bind(host.hostId).first<{ n: number }>();
    expect(hostRows!.n).toBe(0);
  });
});
