import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { call, expectError, post, runCron } from "../helpers";
import {
  completeMove,
  fail,
  finalBackup,
  hostWithServers,
  jobFor,
  migrationsOf,
  provisionAndStop,
  restoreOnTarget,
  serverRow,
} from "../servers/migration-helpers";
import { serverView } from "../servers/server-helpers";
import { succeeded } from "./fleet-helpers";

beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

interface DrainView {
  id: string;
  hostId: string;
  concurrency: number;
  finishedAt: string | null;
  total: number;
  moved: number;
  failed: number;
  moving: number;
  remaining: number;
  remainingServers: { serverId: string; status: string; reason: string }[];
}

async function drainOf(cookie: string, hostId: string): Promise<DrainView> {
  const response = await call(`/api/admin/hosts/${hostId}/drain`, { cookie });
  expect(response.status).toBe(200);
  return response.json();
}

const drain = (cookie: string, hostId: string) => post(`/api/admin/hosts/${hostId}/drain`, undefined, { cookie });

describe("draining a host", () => {
  it("is for operators only: a customer gets 403 and the host keeps taking homeservers", async () => {
    const { source, servers } = await hostWithServers(1, "us-central");
    const customer = servers[0]!.cookie;
    await expectError(await drain(customer, source.host.hostId), 403, "operator_only");
    await expectError(await call(`/api/admin/hosts/${source.host.hostId}/drain`, { cookie: customer }), 403, "operator_only");
    expect(await env.DB.prepare("SELECT state FROM hosts WHERE id = ?").bind(source.host.hostId).first()).toEqual({ state: "active" });
    expect(await serverRow(servers[0]!.id)).toMatchObject({ status: "running" });
  });

  it("moves every running homeserver off, two at a time, reporting progress, and ends with the host draining", async () => {
    const { operator, source, target, servers } = await hostWithServers(3, "us-central");
    const response = await drain(operator, source.host.hostId);
    expect(response.status).toBe(202);
    expect(await response.json()).toMatchObject({ concurrency: 2, total: 3, moved: 0, moving: 2, remaining: 1, finishedAt: null });
    expect(await env.DB.prepare("SELECT state FROM hosts WHERE id = ?").bind(source.host.hostId).first()).toEqual({ state: "draining" });
    await expectError(await drain(operator, source.host.hostId), 409, "drain_running");

    const [first, second, third] = servers.map((server) => server.id) as [string, string, string];
    const waiting = (await drainOf(operator, source.host.hostId)).remainingServers;
    expect(waiting).toEqual([{ serverId: third, status: "running", reason: "waiting for a free slot" }]);
    expect(await serverRow(third)).toMatchObject({ status: "running", host_id: source.host.hostId });

    await completeMove(first, source, target);
    // One slot free: the third starts as the first ends.
    await jobFor(target.agent, "homeserver.provision", third).then(({ job }) => target.agent.send(succeeded(job)));
    await vi.waitFor(async () => expect(await drainOf(operator, source.host.hostId)).toMatchObject({ moved: 1, moving: 2, remaining: 0 }));

    // The second fails at its final backup: it is started again where it was.
    await provisionAndStop(second, source, target);
    source.agent.send(fail((await jobFor(source.agent, "homeserver.backup", second)).job));
    source.agent.send(succeeded((await jobFor(source.agent, "homeserver.start", second)).job));
    target.agent.send(succeeded((await jobFor(target.agent, "homeserver.delete", second)).job));

    source.agent.send(succeeded((await jobFor(source.agent, "homeserver.stop", third)).job));
    await restoreOnTarget(third, target, await finalBackup(third, source));
    target.agent.send(succeeded((await jobFor(target.agent, "homeserver.start", third)).job));
    source.agent.send(succeeded((await jobFor(source.agent, "homeserver.delete", third)).job));

    await vi.waitFor(async () =>
      expect(await drainOf(operator, source.host.hostId)).toMatchObject({
        total: 3,
        moved: 2,
        failed: 1,
        moving: 0,
        remaining: 0,
        finishedAt: expect.any(String),
      }),
    );
    const moves = await migrationsOf(operator, `drainId=${(await drainOf(operator, source.host.hostId)).id}`);
    expect(moves.map((move) => [move.serverId, move.phase]).sort()).toEqual(
      [
        [first, "succeeded"],
        [second, "failed"],
        [third, "succeeded"],
      ].sort(),
    );
    expect(await serverRow(first)).toMatchObject({ status: "running", host_id: target.host.hostId });
    expect(await serverRow(second)).toMatchObject({ status: "running", host_id: source.host.hostId });
    expect(await env.DB.prepare("SELECT state FROM hosts WHERE id = ?").bind(source.host.hostId).first()).toEqual({ state: "draining" });
  });

  it("leaves what it cannot move with the reason, and ends", async () => {
    const { operator, source, servers } = await hostWithServers(1, "us-west");
    const [only] = servers;
    expect((await call(`/api/servers/${only!.id}/stop`, { method: "POST", cookie: only!.cookie })).status).toBe(202);
    source.agent.send(succeeded((await jobFor(source.agent, "homeserver.stop", only!.id)).job));
    await vi.waitFor(async () => expect((await serverView(only!.cookie, only!.id)).status).toBe("stopped"));

    const response = await drain(operator, source.host.hostId);
    expect(response.status).toBe(202);
    expect(await response.json()).toMatchObject({
      total: 1,
      moving: 0,
      remaining: 1,
      finishedAt: expect.any(String),
      remainingServers: [{ serverId: only!.id, status: "stopped", reason: "it is stopped: only running homeservers are moved" }],
    });
  });

  it("waits for a host that is not connected (its final backups are taken there), and goes on once it is back", async () => {
    const { operator, source, target, servers } = await hostWithServers(1, "us-west");
    await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE id = ?").bind(source.host.hostId).run();
    const response = await drain(operator, source.host.hostId);
    expect(await response.json()).toMatchObject({
      moving: 0,
      remaining: 1,
      finishedAt: null,
      remainingServers: [{ serverId: servers[0]!.id, status: "running", reason: "waiting for its host to reconnect" }],
    });

    await env.DB.prepare("UPDATE hosts SET status = 'online' WHERE id = ?").bind(source.host.hostId).run();
    await runCron();
    await jobFor(target.agent, "homeserver.provision", servers[0]!.id);
    expect(await drainOf(operator, source.host.hostId)).toMatchObject({ moving: 1, remaining: 0, finishedAt: null });
  });
});

describe("cancelling a drain", () => {
  const cancel = (cookie: string, hostId: string) => post(`/api/admin/hosts/${hostId}/drain/cancel`, undefined, { cookie });

  it("is for operators only: a customer gets 403 and the drain goes on", async () => {
    const { operator, source, servers } = await hostWithServers(1, "us-central");
    await drain(operator, source.host.hostId);
    await expectError(await cancel(servers[0]!.cookie, source.host.hostId), 403, "operator_only");
    expect(await drainOf(operator, source.host.hostId)).toMatchObject({ cancelledAt: null, moving: 1 });
  });

  it("starts no more moves, lets those under way finish, then ends, audited; the host stays draining", async () => {
    const { operator, source, target, servers } = await hostWithServers(3, "us-central");
    await drain(operator, source.host.hostId);
    const [first, second, third] = servers.map((server) => server.id) as [string, string, string];

    const response = await cancel(operator, source.host.hostId);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({
      cancelledAt: expect.any(String),
      finishedAt: null,
      moving: 2,
      remainingServers: [{ serverId: third, status: "running", reason: "the drain was cancelled" }],
    });
    await expectError(await cancel(operator, source.host.hostId), 409, "no_drain_running");

    await completeMove(first, source, target);
    await runCron();
    expect(await drainOf(operator, source.host.hostId)).toMatchObject({ moved: 1, moving: 1, remaining: 1, finishedAt: null });
    await completeMove(second, source, target);
    await vi.waitFor(async () =>
      expect(await drainOf(operator, source.host.hostId)).toMatchObject({ moved: 2, moving: 0, remaining: 1, finishedAt: expect.any(String) }),
    );
    expect(await serverRow(third)).toMatchObject({ status: "running", host_id: source.host.hostId });
    expect((await migrationsOf(operator, `serverId=${third}`)).length).toBe(0);
    expect(await env.DB.prepare("SELECT state FROM hosts WHERE id = ?").bind(source.host.hostId).first()).toEqual({ state: "draining" });
    const cancelled = await env.DB.prepare("SELECT actor FROM audit_log WHERE action = 'host.drain_cancelled' AND target = ?").bind(source.host.hostId).all();
    expect(cancelled.results).toHaveLength(1);
    // Another drain may start: it moves what was left.
    expect((await drain(operator, source.host.hostId)).status).toBe(202);
  });

  it("of a host never drained, or whose drain ended, is refused", async () => {
    const { operator, source } = await hostWithServers(1, "us-west");
    await expectError(await cancel(operator, source.host.hostId), 409, "no_drain_running");
  });
});
