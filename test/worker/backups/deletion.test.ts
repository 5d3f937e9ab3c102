import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { DAY, advance, call, expectError, runCron } from "../helpers";
import { jobOf, runningServer, serverView, suspendedForNonPayment, type ServerView } from "../servers/server-helpers";
import { avoidDailyBackupHour, backupRow, bytes, pathOf, signedJson, uploadBackup, waitForBackup } from "./backup-helpers";
import { succeeded } from "../fleet/fleet-helpers";

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const deleteServer = (cookie: string, id: string) => call(`/api/servers/${id}`, { method: "DELETE", cookie });

describe("deleting a homeserver takes a final backup first", () => {
  it("the host destroys it only after the final backup succeeded", async () => {
    const { agent, host, owner, id } = await runningServer();
    const response = await deleteServer(owner.cookie, id);
    expect(response.status).toBe(202);
    expect((await response.json()) as ServerView).toMatchObject({ status: "deleting", statusReason: "taking a final backup" });

    const { job } = await jobOf(agent, "homeserver.backup");
    expect(await backupRow(job.payload.backupId)).toMatchObject({ trigger: "final", status: "pending" });
    expect(agent.messages.some((message: any) => message?.job?.kind === "homeserver.delete")).toBe(false);

    expect((await uploadBackup(host, job.payload.uploadBase, [bytes(1000)])).status).toBe(200);
    agent.send(succeeded(job));
    const { job: deletion } = await jobOf(agent, "homeserver.delete");
    expect(deletion.payload).toEqual({ serverId: id });
    // Reconciliation must not provision it again once it is gone from the host.
    expect(await env.DB.prepare("SELECT desired FROM workloads WHERE id = ?").bind(id).first()).toEqual({ desired: "absent" });

    agent.send(succeeded(deletion));
    await vi.waitFor(async () => expect(await env.DB.prepare("SELECT status FROM servers WHERE id = ?").bind(id).first()).toEqual({ status: "deleted" }));
    await expectError(await call(`/api/servers/${id}`, { cookie: owner.cookie }), 404);
    // The final backup outlives the server (retention removes it in 30 days).
    expect(await backupRow(job.payload.backupId)).toMatchObject({ status: "succeeded" });
  });

  it("a failed final backup destroys nothing: the server goes back to its status, saying why", async () => {
    const { agent, owner, id } = await runningServer();
    expect((await call(`/api/servers/${id}/stop`, { method: "POST", cookie: owner.cookie })).status).toBe(202);
    const stop = await jobOf(agent, "homeserver.stop");
    agent.send(succeeded(stop.job));
    await vi.waitFor(async () => expect((await serverView(owner.cookie, id)).status).toBe("stopped"));

    expect((await deleteServer(owner.cookie, id)).status).toBe(202);
    const { job } = await jobOf(agent, "homeserver.backup");
    agent.send({ type: "job.result", id: job.id, ok: false, error: "no space left on device" });
    await vi.waitFor(async () =>
      expect(await serverView(owner.cookie, id)).toMatchObject({
        status: "stopped",
        statusReason: "deletion stopped, nothing was deleted: the final backup failed",
      }),
    );
    await waitForBackup(job.payload.backupId, { status: "failed", error: "no space left on device" });
    expect(await env.DB.prepare("SELECT count(*) AS n FROM jobs WHERE kind = 'homeserver.delete' AND payload LIKE ?").bind(`%${id}%`).first()).toEqual({
      n: 0,
    });
    expect(await env.DB.prepare("SELECT desired FROM workloads WHERE id = ?").bind(id).first()).toEqual({ desired: "present" });
  });

  it("is refused while another step is under way or the host is away", async () => {
    const { agent, owner, id, host } = await runningServer();
    expect((await deleteServer(owner.cookie, id)).status).toBe(202);
    await expectError(await deleteServer(owner.cookie, id), 409, "invalid_state");
    const { job } = await jobOf(agent, "homeserver.backup");
    agent.send({ type: "job.result", id: job.id, ok: false, error: "interrupted" });
    await vi.waitFor(async () => expect((await serverView(owner.cookie, id)).status).toBe("running"));

    agent.ws.close();
    await vi.waitFor(async () =>
      expect(await env.DB.prepare("SELECT status FROM hosts WHERE id = ?").bind(host.hostId).first()).toEqual({ status: "offline" }),
    );
    await expectError(await deleteServer(owner.cookie, id), 409, "host_offline");
    expect((await serverView(owner.cookie, id)).status).toBe("running");
  });

  it("a final backup whose job outcome was lost (the Worker stopped) is carried through by the cron", async () => {
    const finished = await runningServer();
    const failed = await runningServer();
    const jobs = [];
    for (const server of [finished, failed]) {
      avoidDailyBackupHour(server.id);
      expect((await deleteServer(server.owner.cookie, server.id)).status).toBe(202);
      jobs.push((await jobOf(server.agent, "homeserver.backup")).job);
    }
    expect((await uploadBackup(finished.host, jobs[0]!.payload.uploadBase, [bytes(100)])).status).toBe(200);
    expect((await signedJson(failed.host, `${pathOf(jobs[1]!.payload.uploadBase)}/abort`, { reason: "disk full" })).status).toBe(200);
    // Both jobs' ends were recorded, but their outcomes never applied.
    for (const job of jobs) await env.DB.prepare("UPDATE jobs SET status = 'succeeded', finished_at = ? WHERE id = ?").bind(Date.now(), job.id).run();

    await runCron();
    const { job: deletion } = await jobOf(finished.agent, "homeserver.delete");
    expect(deletion.payload).toEqual({ serverId: finished.id });
    expect(await serverView(failed.owner.cookie, failed.id)).toMatchObject({
      status: "running",
      statusReason: "deletion stopped, nothing was deleted: the final backup failed",
    });
    // Once on its way, the next run dispatches nothing twice.
    await runCron();
    expect(await env.DB.prepare("SELECT count(*) AS n FROM jobs WHERE kind = 'homeserver.delete' AND payload LIKE ?").bind(`%${finished.id}%`).first()).toEqual(
      { n: 1 },
    );
  });

  it("billing: when an account's deletion is due, its suspended homeserver is deleted after a final backup", async () => {
    const server = await runningServer();
    const { agent, host, id } = server;
    // Billing's webhooks are signed at the emulator's time, so the Worker's clock moves only after them.
    await suspendedForNonPayment(server);
    avoidDailyBackupHour(id);

    advance(31 * DAY);
    agent.send({ type: "inventory", workloads: [{ id, kind: "homeserver", state: "stopped" }] });
    await runCron();
    // A daily backup sent before the suspension (when that cron fell in the server's hour) is not the one.
    let { job } = await jobOf(agent, "homeserver.backup");
    while ((await backupRow(job.payload.backupId))?.trigger !== "final") ({ job } = await jobOf(agent, "homeserver.backup"));
    expect(await backupRow(job.payload.backupId)).toMatchObject({ trigger: "final" });
    expect((await uploadBackup(host, job.payload.uploadBase, [bytes(100)])).status).toBe(200);
    agent.send(succeeded(job));
    const deletion = await jobOf(agent, "homeserver.delete");
    agent.send(succeeded(deletion.job));
    await vi.waitFor(async () => expect(await env.DB.prepare("SELECT status FROM servers WHERE id = ?").bind(id).first()).toEqual({ status: "deleted" }));
  });
});
