import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { UsageSample } from "../../../protocol/messages";
import { DAY, HOUR, MINUTE, call, expectError, logIn, runCron, setNow, verifiedUser } from "../helpers";
import { connectedAgent, enrolledHost, operatorCookie, type HostIdentity } from "./fleet-helpers";

afterEach(() => vi.useRealTimers());

function sample(at: number, workloads: { id: string; cpu: number; memory: number }[], cpuLoad = 10): UsageSample {
  return {
    at,
    host: {
      cpuLoadPercent: cpuLoad,
      memoryUsedBytes: 4e9,
      memoryAvailableBytes: 4e9,
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
async function serverOn(host: HostIdentity, email: string): Promise<string> {
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
