import { evictDurableObject, runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { advance, call, expectError, logIn, post, verifiedUser } from "../helpers";
import { connectedAgent, enrolledHost, hostStub, operatorCookie, type FakeAgent } from "./fleet-helpers";

afterEach(() => vi.useRealTimers());

interface JobMessage {
  type: "job";
  job: { id: string; kind: string; payload: unknown; attempt: number; deadline: number };
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
    agent.send({ type: "job.result", id: queued.id, ok: true, result: { slept: 10 } });
    await vi.waitFor(async () => expect(await job(cookie, queued.id)).toMatchObject({ status: "succeeded", result: { slept: 10 }, progress: 1 }));
  });

  it("a failed job carries its error; a repeated result changes nothing", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const agent = await connectedAgent(host);
    const queued = await enqueue(cookie, host.hostId, "fail", { message: "boom" });
    await jobFor(agent, queued.id);
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
    await expect(jobFor(agent, queued.id).then(() => "resent", () => "waiting")).resolves.toBe("waiting");
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
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const agent = await connectedAgent(host);
    const queued = await enqueue(cookie, host.hostId, "sleep", { ms: 60_000 });
    await jobFor(agent, queued.id);
    agent.send({ type: "job.ack", id: queued.id });
    await vi.waitFor(async () => expect((await job(cookie, queued.id)).status).toBe("acked"));
    advance(60_000);
    await runDurableObjectAlarm(hostStub(host.hostId));
    await expect(jobFor(agent, queued.id).then(() => "resent", () => "not resent")).resolves.toBe("not resent");
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
      agent.next((message) => message?.job?.kind === "workload.ensure", 300).then(() => "duplicate", () => "none"),
    ).resolves.toBe("none");

    agent.send({ type: "job.result", id: ensure.job.id, ok: true, result: {} });
    agent.send({ type: "job.result", id: remove.job.id, ok: true, result: {} });
    agent.send({ type: "inventory", workloads: [{ id: workload.id, kind: "test", state: "running" }] });
    await expect(agent.next((message) => message?.type === "job", 300).then(() => "more jobs", () => "in sync")).resolves.toBe("in sync");
  });

  it("a missing homeserver is provisioned again, and an unexpected one is reported, never removed", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const id = crypto.randomUUID();
    const spec = { serverId: id, name: "recon", serverName: "recon.berth.example" };
    const now = Date.now();
    await env.DB.prepare("INSERT INTO workloads (id, host_id, kind, spec, desired, created_at, updated_at) VALUES (?, ?, 'homeserver', ?, 'present', ?, ?)")
      .bind(id, host.hostId, JSON.stringify(spec), now, now)
      .run();
    const agent = await connectedAgent(host, [{ id: "someone-elses-data", kind: "homeserver", state: "running" }]);
    const provision = await agent.next<JobMessage>((message) => message?.job?.kind === "homeserver.provision");
    expect(provision.job.payload).toEqual(spec);
    await expect(agent.next((message) => message?.job?.kind === "workload.remove", 300).then(() => "removed", () => "kept")).resolves.toBe("kept");
    const audited = await env.DB.prepare("SELECT action FROM audit_log WHERE target = 'someone-elses-data'").all<{ action: string }>();
    expect(audited.results.map((row) => row.action)).toContain("reconcile.unexpected_homeserver");
  });
});
