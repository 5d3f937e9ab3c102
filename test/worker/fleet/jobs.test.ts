import { evictDurableObject, runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { JOBS, JobSchemaError, type JobKind, type JobPayload } from "../../../protocol/jobs";
import { database } from "../../../worker/db/client";
import { dispatchJob } from "../../../worker/fleet/hosts";
import { createJob, pruneJobs } from "../../../worker/fleet/jobs";
import { DAY, advance, call, expectError, logIn, post, runCron, verifiedUser } from "../helpers";
import { connectedAgent, enrolledHost, hostStub, operatorCookie, succeeded, type FakeAgent } from "./fleet-helpers";

afterEach(() => vi.useRealTimers());

interface JobMessage {
  type: "job";
  job: { id: string; kind: string; payload: Record<string, any>; attempt: number; deadline: number };
}
interface JobView {
  id: string;
  status: string;
  attempts: number;
  result: unknown;
  error: string | null;
  progress: number | null;
}

async function enqueue(cookie: string, hostId: string, kind: string, payload?: unknown, timeoutSeconds?: number) {
  const response = await post(`/api/admin/hosts/${hostId}/jobs`, { kind, payload, timeoutSeconds }, { cookie });
  expect(response.status, await response.clone().text()).toBe(202);
  return (await response.json()) as JobView;
}

async function job(cookie: string, id: string): Promise<JobView> {
  const response = await call(`/api/admin/jobs/${id}`, { cookie });
  expect(response.status).toBe(200);
  return response.json();
}

const jobFor = (agent: FakeAgent, id: string) => agent.next<JobMessage>((message) => message?.type === "job" && message.job.id === id);

/** An operator's test job, delivered to a fresh host's agent. */
async function deliveredTestJob(kind: string, payload?: unknown) {
  const cookie = await operatorCookie();
  const host = await enrolledHost(cookie);
  const agent = await connectedAgent(host);
  const queued = await enqueue(cookie, host.hostId, kind, payload);
  await jobFor(agent, queued.id);
  return { cookie, host, agent, queued };
}

describe("jobs", () => {
  it("round trip: persisted, delivered, acknowledged, progress and result recorded", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const agent = await connectedAgent(host);
    const queued = await enqueue(cookie, host.hostId, "sleep", { ms: 10 });
    expect(queued.status).toBe("queued");

    const { job: delivered } = await jobFor(agent, queued.id);
    expect(delivered).toMatchObject({ kind: "sleep", payload: { ms: 10 }, attempt: 1 });
    expect((await job(cookie, queued.id)).status).toBe("sent");
    agent.send({ type: "job.ack", id: queued.id });
    agent.send({ type: "job.progress", id: queued.id, progress: 0.5, message: "half way" });
    await vi.waitFor(async () => expect((await job(cookie, queued.id)).progress).toBe(0.5));
    agent.send({ type: "job.result", id: queued.id, ok: true, result: { sleptMs: 10 } });
    await vi.waitFor(async () => expect(await job(cookie, queued.id)).toMatchObject({ status: "succeeded", result: { sleptMs: 10 }, progress: 1 }));
  });

  it("a failed job carries its error; a repeated result changes nothing", async () => {
    const { cookie, agent, queued } = await deliveredTestJob("fail", { message: "boom" });
    agent.send({ type: "job.result", id: queued.id, ok: false, error: "boom" });
    await vi.waitFor(async () => expect(await job(cookie, queued.id)).toMatchObject({ status: "failed", error: "boom" }));
    agent.send({ type: "job.result", id: queued.id, ok: true, result: { late: true } });
    await agent.send({ type: "job.progress", id: queued.id, progress: 0.1 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await job(cookie, queued.id)).toMatchObject({ status: "failed", error: "boom" });
  });

  it("an unacknowledged job is sent again with backoff", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const agent = await connectedAgent(host);
    const queued = await enqueue(cookie, host.hostId, "noop");
    expect((await jobFor(agent, queued.id)).job.attempt).toBe(1);
    advance(5_001);
    await runDurableObjectAlarm(hostStub(host.hostId));
    expect((await jobFor(agent, queued.id)).job.attempt).toBe(2);
    advance(5_001);
    await runDurableObjectAlarm(hostStub(host.hostId));
    await expect(
      jobFor(agent, queued.id).then(
        () => "resent",
        () => "waiting",
      ),
    ).resolves.toBe("waiting");
    advance(5_000);
    await runDurableObjectAlarm(hostStub(host.hostId));
    expect((await jobFor(agent, queued.id)).job.attempt).toBe(3);
  });

  it("overlapping dispatches send each job once", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const agent = await connectedAgent(host);
    const queued = await Promise.all(Array.from({ length: 8 }, () => enqueue(cookie, host.hostId, "noop")));
    for (const { id } of queued) expect((await jobFor(agent, id)).job.attempt).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(agent.messages.filter((message: any) => message?.type === "job")).toEqual([]);
    for (const { id } of queued) expect((await job(cookie, id)).attempts).toBe(1);
  });

  it("an acknowledged job is not resent while the agent stays connected", async () => {
    const { cookie, host, agent, queued } = await deliveredTestJob("sleep", { ms: 60_000 });
    agent.send({ type: "job.ack", id: queued.id });
    await vi.waitFor(async () => expect((await job(cookie, queued.id)).status).toBe("acked"));
    advance(60_000);
    await runDurableObjectAlarm(hostStub(host.hostId));
    await expect(
      jobFor(agent, queued.id).then(
        () => "resent",
        () => "not resent",
      ),
    ).resolves.toBe("not resent");
  });

  it("jobs for an offline host wait for it, and unfinished ones are resent after a reconnect", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const waiting = await enqueue(cookie, host.hostId, "noop");
    expect((await job(cookie, waiting.id)).status).toBe("queued");

    const first = await connectedAgent(host);
    await jobFor(first, waiting.id);
    first.send({ type: "job.ack", id: waiting.id });
    await vi.waitFor(async () => expect((await job(cookie, waiting.id)).status).toBe("acked"));
    first.ws.close(1001, "agent restarting");

    // The agent comes back (killed mid-job, or the network dropped): the job is delivered again.
    const second = await connectedAgent(host);
    const again = await jobFor(second, waiting.id);
    expect(again.job.attempt).toBeGreaterThan(1);
    second.send({ type: "job.result", id: waiting.id, ok: true, result: { ok: true } });
    await vi.waitFor(async () => expect((await job(cookie, waiting.id)).status).toBe("succeeded"));
  });

  it("survive the Durable Object being evicted: the hibernated connection keeps working", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const agent = await connectedAgent(host);
    await evictDurableObject(hostStub(host.hostId));
    const queued = await enqueue(cookie, host.hostId, "noop");
    await jobFor(agent, queued.id);
    agent.send({ type: "job.result", id: queued.id, ok: true, result: { ok: true } });
    await vi.waitFor(async () => expect((await job(cookie, queued.id)).status).toBe("succeeded"));
  });

  it("fail once past their deadline, even for a host that never returns", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const queued = await enqueue(cookie, host.hostId, "sleep", { ms: 1000 }, 60);
    advance(61_000);
    await runDurableObjectAlarm(hostStub(host.hostId));
    expect(await job(cookie, queued.id)).toMatchObject({ status: "failed", error: "deadline exceeded" });
  });

  it("only test job kinds can be sent through the API, by operators, to enrolled hosts", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    await expectError(await post(`/api/admin/hosts/${host.hostId}/jobs`, { kind: "rm -rf" }, { cookie }), 400, "validation_failed");
    await expectError(await post(`/api/admin/hosts/nope/jobs`, { kind: "noop" }, { cookie }), 404, "not_found");
    const customer = await logIn((await verifiedUser()).email);
    await expectError(await post(`/api/admin/hosts/${host.hostId}/jobs`, { kind: "noop" }, { cookie: customer }), 403);
  });

  it("an operator's job is audited in the job's own write: a job refused leaves no entry", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const entries = (target: string) =>
      env.DB.prepare("SELECT actor, action, detail FROM audit_log WHERE target = ?")
        .bind(target)
        .all<{ actor: string; action: string; detail: string }>()
        .then((rows) => rows.results.map((row) => ({ ...row, detail: JSON.parse(row.detail) })));
    const queued = await enqueue(cookie, host.hostId, "noop");
    expect(await entries(queued.id)).toEqual([
      { actor: expect.stringMatching(/^user:/), action: "job.enqueued", detail: { hostId: host.hostId, kind: "noop" } },
    ]);
    // The job's foreign key refuses an unknown host, and its audit entry goes with it.
    const before = await env.DB.prepare("SELECT count(*) AS n FROM audit_log WHERE action = 'job.enqueued'").first<{ n: number }>();
    await expectError(await post(`/api/admin/hosts/${crypto.randomUUID()}/jobs`, { kind: "noop" }, { cookie }), 404, "not_found");
    const after = await env.DB.prepare("SELECT count(*) AS n FROM audit_log WHERE action = 'job.enqueued'").first<{ n: number }>();
    expect(after!.n).toBe(before!.n);
  });

  it("a host cannot report on another host's jobs", async () => {
    const cookie = await operatorCookie();
    const mine = await enrolledHost(cookie);
    const theirs = await enrolledHost(cookie);
    const queued = await enqueue(cookie, theirs.hostId, "noop");
    const intruder = await connectedAgent(mine);
    intruder.send({ type: "job.result", id: queued.id, ok: false, error: "forged" });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await job(cookie, queued.id)).status).toBe("queued");
  });
});

describe("reconciliation", () => {
  it("on (re)connect, what should run but does not is ensured, and what runs but should not is removed", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const created = await post(`/api/admin/hosts/${host.hostId}/workloads`, { kind: "test", spec: { size: 1 } }, { cookie });
    expect(created.status).toBe(201);
    const { workload } = (await created.json()) as { workload: { id: string } };

    // The agent reports something stale and not the workload it should run.
    const agent = await connectedAgent(host, [{ id: "stale-workload", kind: "test", state: "running" }]);
    const ensure = await agent.next<JobMessage>((message) => message?.job?.kind === "workload.ensure");
    expect(ensure.job.payload).toMatchObject({ id: workload.id, kind: "test", spec: { size: 1 } });
    const remove = await agent.next<JobMessage>((message) => message?.job?.kind === "workload.remove");
    expect(remove.job.payload).toMatchObject({ id: "stale-workload" });

    // No second ensure while the first is under way, even after another inventory report.
    agent.send({ type: "inventory", workloads: [] });
    await expect(
      agent
        .next((message) => message?.job?.kind === "workload.ensure", 300)
        .then(
          () => "duplicate",
          () => "none",
        ),
    ).resolves.toBe("none");

    agent.send(succeeded(ensure.job));
    agent.send(succeeded(remove.job));
    agent.send({ type: "inventory", workloads: [{ id: workload.id, kind: "test", state: "running" }] });
    await expect(
      agent
        .next((message) => message?.type === "job", 300)
        .then(
          () => "more jobs",
          () => "in sync",
        ),
    ).resolves.toBe("in sync");
  });

  it("a missing homeserver is provisioned again, and an unexpected one is reported, never removed", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const id = crypto.randomUUID();
    const spec = {
      serverId: id,
      name: "recon",
      serverName: "recon.berth.example",
      publicBaseUrl: "https://recon.berth.example/",
      planId: "starter",
      resources: { memoryMiB: 1024, cpus: 1, storageGiB: 10 },
      images: { synapse: "matrixdotorg/synapse:latest", postgres: "postgres:15" },
    };
    const now = Date.now();
    await env.DB.prepare("INSERT INTO workloads (id, host_id, kind, spec, desired, created_at, updated_at) VALUES (?, ?, 'homeserver', ?, 'present', ?, ?)")
      .bind(id, host.hostId, JSON.stringify(spec), now, now)
      .run();
    const agent = await connectedAgent(host, [{ id: "someone-elses-data", kind: "homeserver", state: "running" }]);
    const provision = await agent.next<JobMessage>((message) => message?.job?.kind === "homeserver.provision");
    expect(provision.job.payload).toEqual(spec);
    await expect(
      agent
        .next((message) => message?.job?.kind === "workload.remove", 300)
        .then(
          () => "removed",
          () => "kept",
        ),
    ).resolves.toBe("kept");
    const audited = await env.DB.prepare("SELECT action FROM audit_log WHERE target = 'someone-elses-data'").all<{ action: string }>();
    expect(audited.results.map((row) => row.action)).toContain("reconcile.unexpected_homeserver");
  });
});

async function jobCount(hostId: string): Promise<number> {
  return (await env.DB.prepare("SELECT count(*) AS n FROM jobs WHERE host_id = ?").bind(hostId).first<{ n: number }>())!.n;
}

describe("the job catalogue (protocol/jobs.ts)", () => {
  it("the Worker refuses to dispatch a payload that is not its kind's, naming the field, and writes nothing", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const db = database(env.DB);
    const stop = { hostId: host.hostId, kind: "homeserver.stop", payload: { serverId: "../etc" } } as const;
    await expect(dispatchJob(db, env, stop, new Date())).rejects.toThrow(/^homeserver.stop: invalid payload: serverId: /);
    const tiny = { serverId: crypto.randomUUID(), planId: "team", resources: { memoryMiB: 1, cpus: 1, storageGiB: 10 } };
    const refusal = dispatchJob(db, env, { hostId: host.hostId, kind: "homeserver.resize", payload: tiny }, new Date());
    await expect(refusal).rejects.toBeInstanceOf(JobSchemaError);
    await expect(refusal).rejects.toThrow(/^homeserver.resize: invalid payload: resources.memoryMiB: /);
    // A kind's payload type is checked where the job is made, too.
    const noImage = { serverId: crypto.randomUUID() };
    // @ts-expect-error homeserver.upgrade wants an image
    const upgrade = dispatchJob(db, env, { hostId: host.hostId, kind: "homeserver.upgrade", payload: noImage }, new Date());
    await expect(upgrade).rejects.toThrow(/invalid payload: image: /);
    // Operators' test jobs are checked the same way, and answered 400.
    const response = await post(`/api/admin/hosts/${host.hostId}/jobs`, { kind: "sleep", payload: { ms: "soon" } }, { cookie });
    expect(await response.clone().json()).toMatchObject({ error: { message: expect.stringMatching(/^ms: /) } });
    await expectError(response, 400, "validation_failed");
    expect(await jobCount(host.hostId)).toBe(0);
  });

  it("a result that is not its kind's is refused: the job is recorded failed, naming the field", async () => {
    const { cookie, agent, queued } = await deliveredTestJob("sleep", { ms: 10 });
    agent.send({ type: "job.result", id: queued.id, ok: true, result: { slept: "10 ms" } });
    await vi.waitFor(async () =>
      expect(await job(cookie, queued.id)).toMatchObject({
        status: "failed",
        result: null,
        error: expect.stringMatching(/^the agent reported success with a result this control plane cannot read: sleep: invalid result: sleptMs: /),
      }),
    );
  });

  it("each kind's deadline is the catalogue's, and a job names the server and backup it is about in its own columns", async () => {
    const host = await enrolledHost(await operatorCookie());
    const db = database(env.DB);
    const now = new Date();
    const serverId = crypto.randomUUID();
    const backupId = crypto.randomUUID();
    const made = await Promise.all([
      createJob(db, { hostId: host.hostId, kind: "noop", payload: {} }, now),
      createJob(db, { hostId: host.hostId, kind: "homeserver.stop", payload: { serverId } }, now),
      createJob(db, { hostId: host.hostId, kind: "homeserver.restore", payload: { serverId, backupId, downloadUrl: "https://berth.example/object" } }, now),
    ]);
    expect(made.map((row) => [row.kind, row.deadline.getTime() - now.getTime(), row.serverId, row.backupId])).toEqual([
      ["noop", 60 * 60_000, null, null],
      ["homeserver.stop", 30 * 60_000, serverId, null],
      ["homeserver.restore", 6 * 60 * 60_000, serverId, backupId],
    ]);
    expect(made.map((row) => JOBS[row.kind].timeoutMs)).toEqual([60 * 60_000, 30 * 60_000, 6 * 60 * 60_000]);
  });

  it("the migration fills the columns of jobs written before them from their payloads", async () => {
    const host = await enrolledHost(await operatorCookie());
    const serverId = crypto.randomUUID();
    const backupId = crypto.randomUUID();
    const now = Date.now();
    const insert =
      "INSERT INTO jobs (id, host_id, kind, payload, status, attempts, next_attempt_at, deadline, created_at, updated_at) VALUES (?, ?, ?, ?, 'succeeded', 1, ?, ?, ?, ?)";
    const rows = [
      ["homeserver.backup", { serverId, backupId }],
      ["homeserver.start", { serverId }],
      ["noop", {}],
    ] as const;
    const ids = rows.map(() => crypto.randomUUID());
    await env.DB.batch(rows.map(([kind, payload], i) => env.DB.prepare(insert).bind(ids[i], host.hostId, kind, JSON.stringify(payload), now, now, now, now)));
    const migration = env.TEST_MIGRATIONS.find((m) => m.name.startsWith("0008_"))!;
    const backfill = migration.queries.filter((query) => query.trimStart().startsWith("UPDATE") || query.includes("UPDATE `jobs`"));
    expect(backfill).toHaveLength(1);
    await env.DB.prepare(backfill[0]!).run();
    const filled = await env.DB.prepare(`SELECT id, server_id, backup_id FROM jobs WHERE id IN (?, ?, ?)`)
      .bind(...ids)
      .all<{ id: string; server_id: string | null; backup_id: string | null }>();
    const byId = new Map(filled.results.map((row) => [row.id, [row.server_id, row.backup_id]]));
    expect(ids.map((id) => byId.get(id))).toEqual([
      [serverId, backupId],
      [serverId, null],
      [null, null],
    ]);
  });
});

describe("job retention", () => {
  /** A job made `daysAgo` days ago and, unless told otherwise, finished then. */
  async function pastJob<K extends JobKind>(hostId: string, kind: K, payload: JobPayload<K>, daysAgo: number, status = "succeeded") {
    const at = new Date(Date.now() - daysAgo * DAY);
    const row = await createJob(database(env.DB), { hostId, kind, payload }, at);
    if (status !== "queued")
      await env.DB.prepare("UPDATE jobs SET status = ?, finished_at = ? WHERE id = ?")
        .bind(status, at.getTime() + 1000, row.id)
        .run();
    return row.id;
  }

  /** A running server on `hostId`, as far as D1 knows. */
  async function serverOn(hostId: string): Promise<string> {
    const { email } = await verifiedUser();
    const user = await env.DB.prepare("SELECT id FROM users WHERE email = ?").bind(email).first<{ id: string }>();
    const id = crypto.randomUUID();
    await env.DB.prepare("INSERT INTO servers (id, user_id, name, region, host_id, status, created_at) VALUES (?, ?, ?, 'us-east', ?, 'running', ?)")
      .bind(id, user!.id, `hs-${id.slice(0, 8)}`, hostId, Date.now())
      .run();
    return id;
  }

  it("prunes finished jobs older than 90 days, keeping each server's newest of a kind, its lifecycle job, its backups' jobs and unfinished ones", async () => {
    const hostId = (await enrolledHost(await operatorCookie())).hostId;
    const serverId = await serverOn(hostId);
    const stop = { serverId };
    const resize = { serverId, planId: "starter", resources: { memoryMiB: 1024, cpus: 1, storageGiB: 10 } };
    const backup = (backupId: string) => ({
      serverId,
      backupId,
      recipient: `age1${"q".repeat(58)}`,
      partSize: 8 * 1024 * 1024,
      uploadBase: "https://berth.example/b",
    });
    const jobs = {
      oldStop: await pastJob(hostId, "homeserver.stop", stop, 100),
      lifecycleStop: await pastJob(hostId, "homeserver.stop", stop, 99),
      newestStop: await pastJob(hostId, "homeserver.stop", stop, 98),
      unreferencedBackup: await pastJob(hostId, "homeserver.backup", backup(crypto.randomUUID()), 102),
      referencedBackup: await pastJob(hostId, "homeserver.backup", backup(crypto.randomUUID()), 101),
      newestBackup: await pastJob(hostId, "homeserver.backup", backup(crypto.randomUUID()), 100),
      unfinishedStart: await pastJob(hostId, "homeserver.start", stop, 100, "queued"),
      failedStart: await pastJob(hostId, "homeserver.start", stop, 99, "failed"),
      newestStart: await pastJob(hostId, "homeserver.start", stop, 98),
      recentResize: await pastJob(hostId, "homeserver.resize", resize, 10),
      newestResize: await pastJob(hostId, "homeserver.resize", resize, 5),
      oldTestJob: await pastJob(hostId, "noop", {}, 91),
      recentTestJob: await pastJob(hostId, "noop", {}, 89),
    };
    await env.DB.prepare("UPDATE servers SET lifecycle_job_id = ? WHERE id = ?").bind(jobs.lifecycleStop, serverId).run();
    await env.DB.prepare(
      "INSERT INTO backups (id, server_id, host_id, trigger, status, r2_key, upload_id, part_size, job_id, created_at) VALUES (?, ?, ?, 'scheduled', 'failed', 'k', 'u', 1, ?, ?)",
    )
      .bind(crypto.randomUUID(), serverId, hostId, jobs.referencedBackup, Date.now() - 101 * DAY)
      .run();

    expect(await pruneJobs(database(env.DB), new Date())).toBe(4);
    const left = new Set((await env.DB.prepare("SELECT id FROM jobs WHERE host_id = ?").bind(hostId).all<{ id: string }>()).results.map((row) => row.id));
    const kept = Object.entries(jobs).flatMap(([name, id]) => (left.has(id) ? [name] : []));
    expect(kept).toEqual([
      "lifecycleStop",
      "newestStop",
      "referencedBackup",
      "newestBackup",
      "unfinishedStart",
      "newestStart",
      "recentResize",
      "newestResize",
      "recentTestJob",
    ]);
  });

  it("the hourly cron prunes them", async () => {
    const host = await enrolledHost(await operatorCookie());
    const old = await pastJob(host.hostId, "noop", {}, 120);
    await runCron();
    expect(await env.DB.prepare("SELECT id FROM jobs WHERE id = ?").bind(old).first()).toBeNull();
  });
});
