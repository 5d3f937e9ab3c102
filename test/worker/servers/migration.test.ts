import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { planById } from "../../../worker/billing/plans";
import { HOST_RESERVED_MEMORY_MIB, newcomerMemoryMiB } from "../../../worker/servers/admission";
import { advance, call, expectError, MINUTE, runCron } from "../helpers";
import { exportOf, reportFailed, waitForExport } from "../exports/export-helpers";
import { operatorCookie, succeeded } from "../fleet/fleet-helpers";
import { runningServer, serverView } from "./server-helpers";
import {
  anotherHost,
  fail,
  finalBackup,
  jobFor,
  migrate,
  migrationsOf,
  provisionAndStop,
  restoreOnTarget,
  serverRow,
  waitForPhase,
  workloadHost,
  type Side,
} from "./migration-helpers";

const starter = planById("starter")!;

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

/** A customer's running homeserver on one host, a second host of its region, and an operator. */
async function moveSetUp() {
  const server = await runningServer();
  const operator = await operatorCookie();
  const source: Side = { host: server.host, agent: server.agent };
  const target = await anotherHost(operator);
  return { ...server, operator, source, target };
}

async function serverPage(cookie: string, id: string): Promise<string> {
  const response = await call(`/servers/${id}`, { cookie, headers: { accept: "text/html" } });
  expect(response.status).toBe(200);
  return response.text();
}

async function auditOf(serverId: string): Promise<string[]> {
  const rows = await env.DB.prepare("SELECT action FROM audit_log WHERE target = ? ORDER BY id").bind(serverId).all<{ action: string }>();
  return rows.results.map((row) => row.action);
}

describe("who may move a homeserver", () => {
  it("a customer cannot move their own homeserver, nor anyone's: 403, and nothing starts", async () => {
    const { owner, id, target } = await moveSetUp();
    await expectError(await migrate(owner.cookie, id, target.host.hostId), 403, "operator_only");
    await expectError(await call("/api/admin/migrations", { cookie: owner.cookie }), 403, "operator_only");
    await expectError(await migrate("", id, target.host.hostId), 401);
    expect(await serverRow(id)).toMatchObject({ status: "running", reserved_on_host_id: null });
    expect(await env.DB.prepare("SELECT count(*) AS n FROM server_migrations WHERE server_id = ?").bind(id).first()).toEqual({ n: 0 });
  });
});

describe("refusals, each with its reason", () => {
  it("refuses another region, the same host, a host not active, offline or full, and a server not running or already moving", async () => {
    const { operator, owner, id, source, target, agent } = await moveSetUp();
    const west = await anotherHost(operator, "us-west");
    await expectError(await migrate(operator, id, west.host.hostId), 409, "other_region");
    await expectError(await migrate(operator, id, source.host.hostId), 409, "same_host");
    await expectError(await migrate(operator, id, "no-such-host"), 404);
    await expectError(await migrate(operator, crypto.randomUUID(), target.host.hostId), 404);

    await env.DB.prepare("UPDATE hosts SET state = 'draining' WHERE id = ?").bind(target.host.hostId).run();
    await expectError(await migrate(operator, id, target.host.hostId), 409, "host_not_active");
    // Less than a new Starter homeserver counts for.
    await env.DB.prepare("UPDATE hosts SET state = 'active', memory_mib = ? WHERE id = ?")
      .bind(HOST_RESERVED_MEMORY_MIB + newcomerMemoryMiB(starter) - 1, target.host.hostId)
      .run();
    await expectError(await migrate(operator, id, target.host.hostId), 409, "no_capacity");
    await env.DB.prepare("UPDATE hosts SET memory_mib = 8192, status = 'offline' WHERE id = ?").bind(target.host.hostId).run();
    await expectError(await migrate(operator, id, target.host.hostId), 409, "host_offline");
    await env.DB.prepare("UPDATE hosts SET status = 'online' WHERE id = ?").bind(target.host.hostId).run();

    expect((await post(owner.cookie, `/api/servers/${id}/stop`)).status).toBe(202);
    const stop = await jobFor(agent, "homeserver.stop", id);
    agent.send(succeeded(stop.job));
    await vi.waitFor(async () => expect((await serverView(owner.cookie, id)).status).toBe("stopped"));
    await expectError(await migrate(operator, id, target.host.hostId), 409, "invalid_state");
    expect((await post(owner.cookie, `/api/servers/${id}/start`)).status).toBe(202);
    agent.send(succeeded((await jobFor(agent, "homeserver.start", id)).job));
    await vi.waitFor(async () => expect((await serverView(owner.cookie, id)).status).toBe("running"));

    expect((await migrate(operator, id, target.host.hostId)).status).toBe(202);
    await expectError(await migrate(operator, id, target.host.hostId), 409, "already_moving");
    // The customer cannot stop, back up or delete it while it moves.
    await expectError(await post(owner.cookie, `/api/servers/${id}/stop`), 409, "invalid_state");
    await expectError(await post(owner.cookie, `/api/servers/${id}/backups`), 409, "invalid_state");
    await expectError(await call(`/api/servers/${id}`, { method: "DELETE", cookie: owner.cookie }), 409, "invalid_state");
  });

  it("refuses while an export of the homeserver is under way (its host reads the source's database and files), and moves it once the export ended", async () => {
    const setUp = await moveSetUp();
    const { operator, id, target } = setUp;
    const underWay = await exportOf(setUp);
    await expectError(await migrate(operator, id, target.host.hostId), 409, "export_running");
    reportFailed(underWay, "the host ran out of disk");
    await waitForExport(underWay.exportId, { status: "failed" });
    expect((await migrate(operator, id, target.host.hostId)).status).toBe(202);
  });

  it("the target's room is reserved while it moves: a placement that would over-commit it is refused", async () => {
    const { operator, id, target } = await moveSetUp();
    // Room for exactly one new Starter homeserver beside what is kept for the host.
    await env.DB.prepare("UPDATE hosts SET memory_mib = ? WHERE id = ?")
      .bind(HOST_RESERVED_MEMORY_MIB + newcomerMemoryMiB(starter), target.host.hostId)
      .run();
    const other = await moveSetUp();
    await env.DB.prepare("UPDATE hosts SET status = 'online' WHERE id = ?").bind(target.host.hostId).run();
    expect((await migrate(operator, id, target.host.hostId)).status).toBe(202);
    await expectError(await migrate(operator, other.id, target.host.hostId), 409, "no_capacity");
  });
});

const post = (cookie: string, path: string) => call(path, { method: "POST", cookie });

describe("a move that succeeds", () => {
  it("provisions the target while the source serves, stops the source, backs it up, restores, switches, checks, then destroys the source", async () => {
    const { operator, owner, id, source, target } = await moveSetUp();
    const response = await migrate(operator, id, target.host.hostId);
    expect(response.status).toBe(202);
    expect(await response.json()).toMatchObject({ phase: "provisioning_target", sourceHostId: source.host.hostId, targetHostId: target.host.hostId });
    expect(await serverRow(id)).toMatchObject({ status: "moving", host_id: source.host.hostId, reserved_on_host_id: target.host.hostId });
    expect(await serverView(owner.cookie, id)).toMatchObject({
      status: "moving",
      statusReason: "moving to another host",
      move: { progress: 0, message: "preparing its new host" },
    });
    expect(await serverPage(owner.cookie, id)).toContain("We are moving this homeserver to another host of its region (preparing its new host)");

    // The target provisions it under the same name; the source has not been touched yet.
    const provision = await jobFor(target.agent, "homeserver.provision", id);
    expect(provision.job.payload).toMatchObject({ serverId: id, name: expect.any(String) });
    expect(source.agent.messages.some((message: any) => message?.type === "job")).toBe(false);
    // Reconciliation on either host leaves the moving homeserver alone.
    target.agent.send({ type: "inventory", workloads: [{ id, kind: "homeserver", state: "running" }] });
    source.agent.send({ type: "inventory", workloads: [{ id, kind: "homeserver", state: "running" }] });
    target.agent.send(succeeded(provision.job));

    const stop = await jobFor(source.agent, "homeserver.stop", id);
    advance(2_000);
    source.agent.send(succeeded(stop.job));
    const backupId = await finalBackup(id, source);
    expect(await env.DB.prepare("SELECT trigger, status, host_id FROM backups WHERE id = ?").bind(backupId).first()).toEqual({
      trigger: "migration",
      status: "succeeded",
      host_id: source.host.hostId,
    });
    advance(3_000);
    await restoreOnTarget(id, target, backupId);

    // Switched: the target runs it now; the source keeps its copy (and its room) until the target passed its check.
    const check = await jobFor(target.agent, "homeserver.start", id);
    expect(await serverRow(id)).toMatchObject({ status: "moving", host_id: target.host.hostId, reserved_on_host_id: source.host.hostId });
    expect(await workloadHost(id)).toBe(target.host.hostId);
    expect(source.agent.messages.some((message: any) => message?.job?.kind === "homeserver.delete")).toBe(false);
    advance(1_000);
    target.agent.send(succeeded(check.job));

    const destroy = await jobFor(source.agent, "homeserver.delete", id);
    await vi.waitFor(async () => expect((await serverView(owner.cookie, id)).status).toBe("running"));
    source.agent.send(succeeded(destroy.job));
    const done = await waitForPhase(operator, id, "succeeded");
    // Downtime: from the source told to stop to the target healthy.
    expect(done).toMatchObject({ error: null, switchedAt: expect.any(String), finishedAt: expect.any(String) });
    expect(done.downtimeMs).toBe(Date.parse(done.servingAt!) - Date.parse(done.sourceStoppedAt!));
    expect(done.downtimeMs).toBeGreaterThanOrEqual(6_000);
    expect(await serverRow(id)).toMatchObject({ status: "running", status_reason: null, host_id: target.host.hostId, reserved_on_host_id: null });
    expect(await serverView(owner.cookie, id)).toMatchObject({ move: null, lastMove: { outcome: "moved", downtimeMs: done.downtimeMs } });
    expect(await serverPage(owner.cookie, id)).toContain(`it was unreachable for ${Math.round(done.downtimeMs! / 1000)} s`);

    const exported = (await (await call("/api/me/export", { cookie: owner.cookie })).json()) as { matrixMetadata: { servers: { moves: unknown[] }[] } };
    expect(exported.matrixMetadata.servers[0]!.moves).toEqual([
      { startedAt: expect.any(String), finishedAt: done.finishedAt, outcome: "moved", downtimeMs: done.downtimeMs },
    ]);
    expect(JSON.stringify(exported)).not.toContain(target.host.hostId);

    expect(await auditOf(id)).toEqual(
      expect.arrayContaining([
        "migration.started",
        "migration.stopping_source",
        "migration.backing_up",
        "migration.restoring_target",
        "server.route_switched",
        "migration.checking_target",
        "migration.destroying_source",
        "migration.succeeded",
      ]),
    );
    const unexpected = await env.DB.prepare("SELECT count(*) AS n FROM audit_log WHERE action = 'reconcile.unexpected_homeserver' AND target = ?")
      .bind(id)
      .first();
    expect(unexpected).toEqual({ n: 0 });
  });
});

describe("billing while it moves", () => {
  it("a suspension decided while the homeserver moves applies once it serves on its new host", async () => {
    const { operator, owner, id, source, target } = await moveSetUp();
    expect((await migrate(operator, id, target.host.hostId)).status).toBe(202);
    await provisionAndStop(id, source, target);
    await env.DB.prepare("UPDATE entitlements SET state = 'suspended' WHERE user_id = (SELECT user_id FROM servers WHERE id = ?)").bind(id).run();
    await runCron();
    expect(await serverRow(id)).toMatchObject({ status: "moving" });

    await restoreOnTarget(id, target, await finalBackup(id, source));
    target.agent.send(succeeded((await jobFor(target.agent, "homeserver.start", id)).job));
    const suspend = await jobFor(target.agent, "homeserver.suspend", id);
    target.agent.send(succeeded(suspend.job));
    await vi.waitFor(async () => expect((await serverView(owner.cookie, id)).status).toBe("suspended"));
    source.agent.send(succeeded((await jobFor(source.agent, "homeserver.delete", id)).job));
    await waitForPhase(operator, id, "succeeded");
  });
});

describe("a move that fails rolls back", () => {
  it("the target's provisioning fails: the source never stopped, runs on, and the target's partial copy is removed", async () => {
    const { operator, owner, id, source, target } = await moveSetUp();
    expect((await migrate(operator, id, target.host.hostId)).status).toBe(202);
    const provision = await jobFor(target.agent, "homeserver.provision", id);
    target.agent.send(fail(provision.job));
    const remove = await jobFor(target.agent, "homeserver.delete", id);
    expect(await serverView(owner.cookie, id)).toMatchObject({
      status: "running",
      statusReason: "a move to another host failed; the homeserver runs where it was, with its data as it was",
    });
    target.agent.send(succeeded(remove.job));
    const failed = await waitForPhase(operator, id, "failed");
    expect(failed).toMatchObject({ downtimeMs: 0, error: "provisioning_target: it broke on the host" });
    expect(source.agent.messages.some((message: any) => message?.type === "job")).toBe(false);
    expect(await serverRow(id)).toMatchObject({ host_id: source.host.hostId, reserved_on_host_id: null });
    // The customer reads our words, not the host's.
    const view = await serverView(owner.cookie, id);
    expect(view).toMatchObject({ lastMove: { outcome: "stayed", downtimeMs: 0 } });
    expect(JSON.stringify(view)).not.toContain("it broke on the host");
  });

  it.each([
    ["the source's stop", "stopping_source"],
    ["the final backup", "backing_up"],
    ["the restore on the target", "restoring_target"],
  ])("%s fails: the source is started again untouched, then the target's copy removed", async (_, failingPhase) => {
    const { operator, owner, id, source, target } = await moveSetUp();
    expect((await migrate(operator, id, target.host.hostId)).status).toBe(202);
    target.agent.send(succeeded((await jobFor(target.agent, "homeserver.provision", id)).job));
    const stop = await jobFor(source.agent, "homeserver.stop", id);
    if (failingPhase === "stopping_source") source.agent.send(fail(stop.job));
    else {
      source.agent.send(succeeded(stop.job));
      if (failingPhase === "backing_up") source.agent.send(fail((await jobFor(source.agent, "homeserver.backup", id)).job));
      else {
        await finalBackup(id, source);
        target.agent.send(fail((await jobFor(target.agent, "homeserver.restore", id)).job, "restore exploded"));
      }
    }

    const restart = await jobFor(source.agent, "homeserver.start", id);
    expect(await serverRow(id)).toMatchObject({ status: "moving", host_id: source.host.hostId });
    expect(target.agent.messages.some((message: any) => message?.job?.kind === "homeserver.delete")).toBe(false);
    source.agent.send(succeeded(restart.job));
    const remove = await jobFor(target.agent, "homeserver.delete", id);
    await vi.waitFor(async () => expect(await serverView(owner.cookie, id)).toMatchObject({ status: "running" }));
    target.agent.send(succeeded(remove.job));
    const failed = await waitForPhase(operator, id, "failed");
    expect(failed.error).toMatch(new RegExp(`^${failingPhase}: `));
    expect(failed.switchedAt).toBeNull();
    expect(await serverRow(id)).toMatchObject({ status: "running", host_id: source.host.hostId, reserved_on_host_id: null });
    expect(await workloadHost(id)).toBe(source.host.hostId);
    expect(await auditOf(id)).toEqual(expect.arrayContaining(["migration.restarting_source", "migration.removing_target", "migration.failed"]));
    expect(await auditOf(id)).not.toContain("server.route_switched");
  });

  it("the target fails its check after the switch: the route goes back, the source starts again, the target's copy is removed", async () => {
    const { operator, owner, id, source, target } = await moveSetUp();
    expect((await migrate(operator, id, target.host.hostId)).status).toBe(202);
    await provisionAndStop(id, source, target);
    await restoreOnTarget(id, target, await finalBackup(id, source));
    const check = await jobFor(target.agent, "homeserver.start", id);
    target.agent.send(fail(check.job, "synapse never answered"));

    const restart = await jobFor(source.agent, "homeserver.start", id);
    expect(await serverRow(id)).toMatchObject({ status: "moving", host_id: source.host.hostId, reserved_on_host_id: target.host.hostId });
    expect(await workloadHost(id)).toBe(source.host.hostId);
    source.agent.send(succeeded(restart.job));
    target.agent.send(succeeded((await jobFor(target.agent, "homeserver.delete", id)).job));
    const failed = await waitForPhase(operator, id, "failed");
    expect(failed).toMatchObject({ switchedAt: null, error: "checking_target: synapse never answered" });
    expect(await serverView(owner.cookie, id)).toMatchObject({ status: "running", lastMove: { outcome: "stayed" } });
    expect(source.agent.messages.some((message: any) => message?.job?.kind === "homeserver.delete")).toBe(false);
    const switches = await env.DB.prepare("SELECT detail FROM audit_log WHERE action = 'server.route_switched' AND target = ? ORDER BY id")
      .bind(id)
      .all<{ detail: string }>();
    expect(switches.results.map((row) => JSON.parse(row.detail).hostId)).toEqual([target.host.hostId, source.host.hostId]);
  });

  it("the source cannot be started again: the server is failed, saying so, and the target's copy is still removed", async () => {
    const { operator, owner, id, source, target } = await moveSetUp();
    expect((await migrate(operator, id, target.host.hostId)).status).toBe(202);
    target.agent.send(succeeded((await jobFor(target.agent, "homeserver.provision", id)).job));
    source.agent.send(fail((await jobFor(source.agent, "homeserver.stop", id)).job));
    source.agent.send(fail((await jobFor(source.agent, "homeserver.start", id)).job));
    target.agent.send(succeeded((await jobFor(target.agent, "homeserver.delete", id)).job));
    await waitForPhase(operator, id, "failed");
    expect(await serverView(owner.cookie, id)).toMatchObject({
      status: "failed",
      statusReason: "a move to another host failed and the homeserver could not be started again; our operators have been told",
    });
  });

  it("the source's copy cannot be destroyed: the move stands (the target serves), and the error says what was left", async () => {
    const { operator, owner, id, source, target } = await moveSetUp();
    expect((await migrate(operator, id, target.host.hostId)).status).toBe(202);
    await provisionAndStop(id, source, target);
    await restoreOnTarget(id, target, await finalBackup(id, source));
    target.agent.send(succeeded((await jobFor(target.agent, "homeserver.start", id)).job));
    source.agent.send(fail((await jobFor(source.agent, "homeserver.delete", id)).job, "device busy"));
    const done = await waitForPhase(operator, id, "succeeded");
    expect(done.error).toBe("the source's copy could not be destroyed: device busy");
    expect(await serverRow(id)).toMatchObject({ status: "running", host_id: target.host.hostId, reserved_on_host_id: null });
    expect(await serverView(owner.cookie, id)).toMatchObject({ status: "running", lastMove: { outcome: "moved" } });
  });
});

describe("the cron never leaves a server moving", () => {
  it("a step past its deadline fails and the move rolls back", async () => {
    const { operator, owner, id, source, target } = await moveSetUp();
    expect((await migrate(operator, id, target.host.hostId)).status).toBe(202);
    target.agent.send(succeeded((await jobFor(target.agent, "homeserver.provision", id)).job));
    await jobFor(source.agent, "homeserver.stop", id);
    // The source never answers its stop.
    advance(31 * MINUTE);
    await runCron();
    const restart = await jobFor(source.agent, "homeserver.start", id);
    source.agent.send(succeeded(restart.job));
    target.agent.send(succeeded((await jobFor(target.agent, "homeserver.delete", id)).job));
    expect(await waitForPhase(operator, id, "failed")).toMatchObject({ error: "stopping_source: deadline exceeded" });
    expect((await serverView(owner.cookie, id)).status).toBe("running");
  });

  it("a step whose job was lost is treated as failed once it has waited long enough", async () => {
    const { operator, id, source, target } = await moveSetUp();
    expect((await migrate(operator, id, target.host.hostId)).status).toBe(202);
    const provision = await jobFor(target.agent, "homeserver.provision", id);
    await env.DB.prepare("DELETE FROM jobs WHERE id = ?").bind(provision.job.id).run();
    await runCron();
    expect((await waitForPhase(operator, id, "provisioning_target")).error).toBeNull();
    advance(11 * MINUTE);
    await runCron();
    target.agent.send(succeeded((await jobFor(target.agent, "homeserver.delete", id)).job));
    expect(await waitForPhase(operator, id, "failed")).toMatchObject({ error: "provisioning_target: its job was lost" });
    expect(await serverRow(id)).toMatchObject({ status: "running", host_id: source.host.hostId });
  });

  it("an outcome recorded but never applied is applied by the cron, once", async () => {
    const { operator, id, source, target } = await moveSetUp();
    expect((await migrate(operator, id, target.host.hostId)).status).toBe(202);
    const provision = await jobFor(target.agent, "homeserver.provision", id);
    // As if the Worker stopped between recording the result and applying it.
    await env.DB.prepare("UPDATE jobs SET status = 'succeeded', finished_at = ? WHERE id = ?").bind(Date.now(), provision.job.id).run();
    await runCron();
    await runCron();
    await jobFor(source.agent, "homeserver.stop", id);
    expect(source.agent.messages.some((message: any) => message?.job?.kind === "homeserver.stop")).toBe(false);
    expect((await migrationsOf(operator, `serverId=${id}`))[0]).toMatchObject({ phase: "stopping_source" });
  });
});
