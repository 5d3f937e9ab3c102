import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { DAY, call, runCron } from "../helpers";
import { operatorCookie, succeeded } from "../fleet/fleet-helpers";
import { runningServer, serverEvents } from "../servers/server-helpers";
import { avoidDailyBackupHour, backupRow, bytes, manualBackup, pathOf, signedJson, uploadBackup, waitForBackup } from "../backups/backup-helpers";

// Host ids and the agent's own error text stay with operators: customers read
// a fixed, plain explanation in the API, the pages, the live stream and the export.

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const HOST_FAILURE = "the host reported an error; our operators can see the details";

/** A customer whose homeserver's host took a backup, then aborted one and failed the next (the latest job) in its own words. */
async function serverWithHostFailures() {
  const server = await runningServer();
  const { agent, host, owner, id } = server;
  avoidDailyBackupHour(id);
  const rawJobError = `pg_dump: could not write /var/lib/berth/hs/${id}/dump on ${host.hostId}: No space left on device`;
  const rawAbort = `disk full at /srv/berth-data/${host.hostId}/tmp`;

  const succeeding = await manualBackup(owner.cookie, id, agent);
  expect((await uploadBackup(host, succeeding.payload.uploadBase, [bytes(1000)])).status).toBe(200);
  agent.send(succeeded(succeeding));
  await vi.waitFor(async () =>
    expect(await env.DB.prepare("SELECT status FROM jobs WHERE id = ?").bind(succeeding.id).first()).toEqual({ status: "succeeded" }),
  );

  const aborted = await manualBackup(owner.cookie, id, agent);
  expect((await signedJson(host, `${pathOf(aborted.payload.uploadBase)}/abort`, { reason: rawAbort })).status).toBe(200);
  agent.send({ type: "job.result", id: aborted.id, ok: false, error: rawAbort });
  await waitForBackup(aborted.payload.backupId, { status: "failed" });

  const failing = await manualBackup(owner.cookie, id, agent);
  agent.send({ type: "job.result", id: failing.id, ok: false, error: rawJobError });
  await waitForBackup(failing.payload.backupId, { status: "failed" });

  return { ...server, rawJobError, rawAbort, failedJobId: failing.id, failedBackupId: failing.payload.backupId, abortedBackupId: aborted.payload.backupId };
}

function expectNothingOfTheHost(text: string, hostId: string) {
  expect(text).not.toContain(hostId);
  expect(text).not.toContain("/var/lib/berth");
  expect(text).not.toContain("/srv/berth-data");
  expect(text).not.toContain("pg_dump");
  expect(text).not.toContain("disk full");
}

describe("what customers see of the host", () => {
  it("the API, the pages and the live stream show a plain explanation, never the host's words or its id", async () => {
    const { owner, id, host } = await serverWithHostFailures();
    const seen: string[] = [];
    for (const path of [`/api/servers/${id}`, "/api/servers", `/api/servers/${id}/backups`, `/servers/${id}`, "/servers"]) {
      const response = await call(path, { cookie: owner.cookie, headers: { accept: "text/html" } });
      expect(response.status, path).toBe(200);
      seen.push(await response.text());
    }
    const stream = await serverEvents(owner.cookie, id);
    seen.push(JSON.stringify(await stream.next()));
    await stream.cancel();
    for (const text of seen) expectNothingOfTheHost(text, host.hostId);

    const { backups } = (await (await call(`/api/servers/${id}/backups`, { cookie: owner.cookie })).json()) as {
      backups: { status: string; error: string | null }[];
    };
    expect(backups.map((backup) => [backup.status, backup.error]).sort()).toEqual([
      ["failed", HOST_FAILURE],
      ["failed", HOST_FAILURE],
      ["succeeded", null],
    ]);
    const view = JSON.parse(seen[0]!) as { lastJob: { kind: string; status: string; error: string } };
    expect(view.lastJob).toMatchObject({ kind: "homeserver.backup", status: "failed", error: HOST_FAILURE });
    expect(seen[3]).toContain(`Backing up failed: ${HOST_FAILURE}`);
    expect(seen[3]).toContain(`failed: ${HOST_FAILURE}`);
  });

  it("the export leaves out host ids (in audit entries' actors and details) and the host's words", async () => {
    const { owner, id, host } = await serverWithHostFailures();
    // Two days without a good backup raise the operators' alert, which names the host and the last failure.
    await env.DB.prepare("UPDATE backups SET created_at = created_at - ? WHERE server_id = ? AND status = 'succeeded'")
      .bind(3 * DAY, id)
      .run();
    await env.DB.prepare("UPDATE servers SET created_at = ? WHERE id = ?")
      .bind(Date.now() - 3 * DAY, id)
      .run();
    await runCron();
    const alert = await env.DB.prepare("SELECT detail FROM audit_log WHERE action = 'backup.overdue' AND target = ?").bind(id).first<{ detail: string }>();
    expect(JSON.parse(alert!.detail)).toMatchObject({ hostId: host.hostId });

    const response = await call("/api/me/export", { cookie: owner.cookie });
    expect(response.status).toBe(200);
    const text = await response.text();
    expectNothingOfTheHost(text, host.hostId);

    const data = JSON.parse(text);
    const auditLog = data.account.auditLog as { actor: string; action: string; detail: Record<string, unknown> | null }[];
    expect(auditLog.find((entry) => entry.action === "server.created")!.detail).toEqual({ name: expect.any(String), region: "us-east" });
    expect(auditLog.filter((entry) => entry.action === "backup.failed").map((entry) => entry.detail!.reason)).toEqual([HOST_FAILURE, HOST_FAILURE]);
    expect(auditLog.find((entry) => entry.action === "backup.succeeded")!.actor).toBe("host");
    expect(auditLog.find((entry) => entry.action === "backup.overdue")!.detail).toEqual({ lastSucceededAt: expect.any(String), lastFailure: HOST_FAILURE });
    const [server] = data.matrixMetadata.servers;
    expect(
      server.operations.filter((operation: { status: string }) => operation.status === "failed").map((operation: { error: string }) => operation.error),
    ).toEqual([HOST_FAILURE, HOST_FAILURE]);
  });

  it("operators keep the host's own words", async () => {
    const { rawJobError, rawAbort, failedJobId, failedBackupId, abortedBackupId } = await serverWithHostFailures();
    const operator = await operatorCookie();
    const job = (await (await call(`/api/admin/jobs/${failedJobId}`, { cookie: operator })).json()) as { error: string };
    expect(job.error).toBe(rawJobError);
    expect(await backupRow(failedBackupId)).toMatchObject({ error: rawJobError });
    expect(await backupRow(abortedBackupId)).toMatchObject({ error: `aborted by the host: ${rawAbort}` });
    const { entries } = (await (await call("/api/admin/audit?limit=1000", { cookie: operator })).json()) as {
      entries: { action: string; detail: { reason?: string } }[];
    };
    expect(entries.filter((entry) => entry.action === "backup.failed").map((entry) => entry.detail.reason)).toEqual(
      expect.arrayContaining([rawJobError, `aborted by the host: ${rawAbort}`]),
    );
  });
});
