import { env } from "cloudflare:workers";
import { Decrypter } from "age-encryption";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RATE_LIMIT_RULES } from "../../../worker/auth/rate-limit";
import { backupIdentity } from "../../../worker/backups/keys";
import { workerConfig } from "../../../worker/config";
import { database } from "../../../worker/db/client";
import { call, expectError, logIn, post, setNow, verifiedUser } from "../helpers";
import { enrolledHost, operatorCookie, succeeded } from "../fleet/fleet-helpers";
import { jobOf, runningServer, serverView, type JobMessage, type ServerView } from "../servers/server-helpers";
import {
  BACKUP_PLAINTEXT,
  backupRow,
  backupsOf,
  bytes,
  manualBackup,
  pathOf,
  serverWithBackup,
  signedCall,
  uploadBackup,
  waitForBackup,
  type BackupJob,
} from "./backup-helpers";

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const restore = (cookie: string, serverId: string, backupId: string) => post(`/api/servers/${serverId}/restore`, { backupId }, { cookie });

describe("a customer's backups", () => {
  it("asking for one starts it at once (202); the list shows it with its progress, then its size", async () => {
    const { agent, host, owner, id } = await runningServer();
    const response = await post(`/api/servers/${id}/backups`, undefined, { cookie: owner.cookie });
    expect(response.status).toBe(202);
    const view = (await response.json()) as Record<string, unknown>;
    expect(Object.keys(view).sort()).toEqual([
      "completedAt",
      "createdAt",
      "error",
      "id",
      "keptUntil",
      "progressBytes",
      "sizeBytes",
      "startedAt",
      "status",
      "trigger",
    ]);
    expect(view).toMatchObject({ trigger: "manual", status: "pending", progressBytes: 0, sizeBytes: null, completedAt: null });
    expect(new Date(view.keptUntil as string).getTime() - new Date(view.createdAt as string).getTime()).toBe(30 * 24 * 3600_000);

    const { job } = await jobOf(agent, "homeserver.backup");
    expect((await signedCall(host, "PUT", `${pathOf(job.payload.uploadBase)}/parts/1`, bytes(4096))).status).toBe(200);
    expect(await backupsOf(owner.cookie, id)).toEqual([expect.objectContaining({ id: view.id, status: "running", progressBytes: 4096 })]);
  });

  it("one at a time: another is refused while one is under way", async () => {
    const { agent, owner, id } = await runningServer();
    await manualBackup(owner.cookie, id, agent);
    await expectError(await post(`/api/servers/${id}/backups`, undefined, { cookie: owner.cookie }), 409, "backup_running");
    expect(await backupsOf(owner.cookie, id)).toHaveLength(1);
  });

  it("needs a running or stopped server on a connected host", async () => {
    const { agent, owner, id, host } = await runningServer();
    await env.DB.prepare("UPDATE servers SET status = 'suspended' WHERE id = ?").bind(id).run();
    await expectError(await post(`/api/servers/${id}/backups`, undefined, { cookie: owner.cookie }), 409, "invalid_state");
    await env.DB.prepare("UPDATE servers SET status = 'stopped' WHERE id = ?").bind(id).run();
    agent.ws.close();
    await vi.waitFor(async () =>
      expect(await env.DB.prepare("SELECT status FROM hosts WHERE id = ?").bind(host.hostId).first()).toEqual({ status: "offline" }),
    );
    await expectError(await post(`/api/servers/${id}/backups`, undefined, { cookie: owner.cookie }), 409, "host_offline");
  });

  it("are reached only through their server's owner", async () => {
    const { id, backupId } = await serverWithBackup();
    const stranger = await logIn((await verifiedUser()).email);
    await expectError(await call(`/api/servers/${id}/backups`, { cookie: stranger }), 404, "not_found");
    await expectError(await post(`/api/servers/${id}/backups`, undefined, { cookie: stranger }), 404, "not_found");
    await expectError(await restore(stranger, id, backupId), 404, "not_found");
    await expectError(await call(`/api/servers/${id}/backups`), 401);
  });

  it("never show the key, the object's name or the upload", async () => {
    const { owner, id, backupId } = await serverWithBackup();
    const row = (await backupRow(backupId))!;
    const listing = await (await call(`/api/servers/${id}/backups`, { cookie: owner.cookie })).text();
    for (const secret of [row.r2_key, row.upload_id, "AGE-SECRET-KEY", "age1"]) expect(listing).not.toContain(secret);
  });
});

describe("a backup's manifest", () => {
  const counts = { users: 3, rooms: 2, events: 41, mediaFiles: 5 };

  it("keeps the counts its host measured from the backup's snapshot once the backup completed", async () => {
    const { agent, host, owner, id } = await runningServer();
    const job = await manualBackup(owner.cookie, id, agent);
    expect((await uploadBackup(host, job.payload.uploadBase, [bytes(64)])).status).toBe(200);
    agent.send(succeeded(job, { counts }));
    await waitForBackup(job.payload.backupId, { user_count: 3, room_count: 2, event_count: 41, media_file_count: 5 });
  });

  it("has none for a backup whose host reported none, nor for one whose upload never completed", async () => {
    const { agent, owner, id } = await runningServer();
    const job = await manualBackup(owner.cookie, id, agent);
    agent.send(succeeded(job, { counts }));
    await waitForBackup(job.payload.backupId, { status: "failed", user_count: null, room_count: null, event_count: null, media_file_count: null });
  });
});

describe("restoring a backup", () => {
  it("sends the host a restore job whose identity decrypts the backup; the server is restoring, then running", async () => {
    const { agent, host, owner, id, backupId, ciphertext } = await serverWithBackup();
    const response = await restore(owner.cookie, id, backupId);
    expect(response.status).toBe(202);
    expect(((await response.json()) as ServerView).status).toBe("restoring");

    const { job } = await jobOf(agent, "homeserver.restore");
    expect(job.payload).toEqual({
      serverId: id,
      backupId,
      identity: expect.stringMatching(/^AGE-SECRET-KEY-1[A-Z0-9]{58}$/),
      downloadUrl: `https://berth.example/api/agent/backups/${backupId}/object`,
    });
    const download = await signedCall(host, "GET", pathOf(job.payload.downloadUrl));
    expect(download.status).toBe(200);
    const downloaded = new Uint8Array(await download.arrayBuffer());
    expect(downloaded).toEqual(ciphertext);
    const decrypter = new Decrypter();
    decrypter.addIdentity(job.payload.identity);
    expect(await decrypter.decrypt(downloaded, "text")).toBe(BACKUP_PLAINTEXT);

    agent.send(succeeded(job));
    await vi.waitFor(async () => expect(await serverView(owner.cookie, id)).toMatchObject({ status: "running", statusReason: null }));
  });

  it("keeps the identity out of D1 and every API: it is added only as the job goes to the host", async () => {
    const { agent, owner, id, backupId } = await serverWithBackup();
    expect((await restore(owner.cookie, id, backupId)).status).toBe(202);
    const { job } = await jobOf(agent, "homeserver.restore");
    const identity = job.payload.identity as string;
    const stored = await env.DB.prepare("SELECT payload FROM jobs WHERE id = ?").bind(job.id).first<{ payload: string }>();
    expect(JSON.parse(stored!.payload)).toEqual({ serverId: id, backupId, downloadUrl: job.payload.downloadUrl });
    const key = await env.DB.prepare("SELECT recipient, wrapped_identity FROM backup_keys WHERE server_id = ?").bind(id).first<Record<string, string>>();
    expect(key!.wrapped_identity).not.toContain(identity);
    const adminView = await (await call(`/api/admin/jobs/${job.id}`, { cookie: await operatorCookie() })).text();
    expect(adminView).not.toContain(identity);
    expect(await (await call(`/api/servers/${id}`, { cookie: owner.cookie })).text()).not.toContain(identity);
  });

  it("a failed restore leaves the server as it was, saying why", async () => {
    const { agent, owner, id, backupId } = await serverWithBackup();
    expect((await restore(owner.cookie, id, backupId)).status).toBe(202);
    const { job } = await jobOf(agent, "homeserver.restore");
    agent.send({ type: "job.result", id: job.id, ok: false, error: "the backup does not decrypt with this key" });
    await vi.waitFor(async () =>
      expect(await serverView(owner.cookie, id)).toMatchObject({
        status: "running",
        statusReason: "the restore failed and the homeserver was left as it was",
      }),
    );
  });

  it("only from a successful backup of this server, with no backup under way", async () => {
    const { agent, owner, id, backupId } = await serverWithBackup();
    const other = await serverWithBackup();
    await expectError(await restore(owner.cookie, id, other.backupId), 404, "not_found");
    await expectError(await restore(owner.cookie, id, crypto.randomUUID()), 404, "not_found");

    const running = await manualBackup(owner.cookie, id, agent);
    await expectError(await restore(owner.cookie, id, running.payload.backupId), 409, "backup_not_restorable");
    await expectError(await restore(owner.cookie, id, backupId), 409, "backup_running");
    agent.send({ type: "job.result", id: running.id, ok: false, error: "interrupted" });
    await vi.waitFor(async () => expect(await backupRow(running.payload.backupId)).toMatchObject({ status: "failed" }));
    await expectError(await restore(owner.cookie, id, running.payload.backupId), 409, "backup_not_restorable");

    expect((await restore(owner.cookie, id, backupId)).status).toBe(202);
    await expectError(await restore(owner.cookie, id, backupId), 409, "invalid_state");
  });

  it("the ciphertext goes only to a host with an unfinished restore (or restore verification) job for that backup", async () => {
    const { agent, host, owner, id, backupId } = await serverWithBackup();
    const object = `/api/agent/backups/${backupId}/object`;
    // The first backup is verified at once: its host may download it until the verification ends.
    const verification = (await jobOf(agent, "homeserver.restore_verify")) as JobMessage;
    expect((await signedCall(host, "GET", object)).status).toBe(200);
    agent.send(succeeded(verification.job));
    await vi.waitFor(async () => expect((await signedCall(host, "GET", object)).status).toBe(403));
    await expectError(await signedCall(host, "GET", object), 403, "not_restoring");
    expect((await restore(owner.cookie, id, backupId)).status).toBe(202);
    const { job } = (await jobOf(agent, "homeserver.restore")) as JobMessage;
    const neighbour = await enrolledHost(await operatorCookie());
    await expectError(await signedCall(neighbour, "GET", object), 403, "not_restoring");
    expect((await signedCall(host, "GET", object)).status).toBe(200);
    agent.send(succeeded(job));
    await vi.waitFor(async () => expect((await serverView(owner.cookie, id)).status).toBe("running"));
    await expectError(await signedCall(host, "GET", object), 403, "not_restoring");
  });
});

describe("backup keys", () => {
  it("one age key pair per server, made on its first backup; every backup job carries the same recipient", async () => {
    const { agent, owner, id, job } = await serverWithBackup();
    const second: BackupJob = await manualBackup(owner.cookie, id, agent);
    expect(second.payload.recipient).toBe(job.payload.recipient);
    const other = await serverWithBackup();
    expect(other.job.payload.recipient).not.toBe(job.payload.recipient);
    const rows = await env.DB.prepare("SELECT count(*) AS n FROM backup_keys WHERE server_id = ?").bind(id).first();
    expect(rows).toEqual({ n: 1 });
  });

  it("a wrapped identity unwraps only for its own server, and only with the Worker's secret", async () => {
    const { id } = await serverWithBackup();
    const other = await serverWithBackup();
    const db = database(env.DB);
    const secret = workerConfig(env).backupKeyWrappingSecret;
    expect(await backupIdentity(db, secret, id)).toMatch(/^AGE-SECRET-KEY-1/);
    await expect(backupIdentity(db, "another secret of the same length as the real one, roughly", id)).rejects.toThrow();
    // Another server's wrapped identity put in this server's row: the server id is the associated data, so it does not unwrap.
    await env.DB.prepare("UPDATE backup_keys SET wrapped_identity = (SELECT wrapped_identity FROM backup_keys WHERE server_id = ?) WHERE server_id = ?")
      .bind(other.id, id)
      .run();
    await expect(backupIdentity(db, secret, id)).rejects.toThrow();
  });
});

describe("back up now and restore, throttled per server", () => {
  // The limits count in fixed hourly windows: the clock stands still, so no test straddles two.
  beforeEach(() => setNow(Date.now()));

  async function expectThrottled(response: Response) {
    const retryAfter = Number(response.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(3600);
    const code = await expectError(response.clone(), 429, "rate_limited");
    expect(((await response.json()) as { error: { message: string } }).error.message).toMatch(/this homeserver .* an hour/i);
    return code;
  }

  it(`${RATE_LIMIT_RULES.backup_server.limit} backups asked for an hour, then 429 with Retry-After; other servers are not affected`, async () => {
    const { agent, owner, id } = await runningServer();
    for (let i = 0; i < RATE_LIMIT_RULES.backup_server.limit; i++) {
      const job = await manualBackup(owner.cookie, id, agent);
      agent.send({ type: "job.result", id: job.id, ok: false, error: "interrupted" });
      await vi.waitFor(async () => expect(await backupRow(job.payload.backupId)).toMatchObject({ status: "failed" }));
    }
    await expectThrottled(await post(`/api/servers/${id}/backups`, undefined, { cookie: owner.cookie }));
    expect(await backupsOf(owner.cookie, id)).toHaveLength(RATE_LIMIT_RULES.backup_server.limit);

    const other = await runningServer();
    await manualBackup(other.owner.cookie, other.id, other.agent);
  });

  it(`${RATE_LIMIT_RULES.restore_server.limit} restores an hour, then 429 with Retry-After`, async () => {
    const { agent, owner, id, backupId } = await serverWithBackup();
    for (let i = 0; i < RATE_LIMIT_RULES.restore_server.limit; i++) {
      expect((await restore(owner.cookie, id, backupId)).status).toBe(202);
      const { job } = await jobOf(agent, "homeserver.restore");
      agent.send(succeeded(job));
      await vi.waitFor(async () => expect((await serverView(owner.cookie, id)).status).toBe("running"));
    }
    await expectThrottled(await restore(owner.cookie, id, backupId));
    expect((await serverView(owner.cookie, id)).status).toBe("running");
  });
});
