import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { dailyBackupHour } from "../../../worker/backups/maintenance";
import { cronAt, DAY, HOUR, MINUTE, logIn, runCron, setNow } from "../helpers";
import { runningServer } from "../servers/server-helpers";
import { backupRow, backupsOf, bytes, manualBackup, uploadBackup } from "./backup-helpers";

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const scheduledBackups = async (serverId: string) =>
  (
    await env.DB.prepare("SELECT created_at FROM backups WHERE server_id = ? AND trigger = 'scheduled' ORDER BY created_at")
      .bind(serverId)
      .all<{ created_at: number }>()
  ).results.map((row) => new Date(row.created_at));

describe("daily backups", () => {
  it("each server has a stable hour, and servers are spread across the day", () => {
    expect(dailyBackupHour("4f6b1c1e-1111-4d4d-9e9e-000000000001")).toBe(dailyBackupHour("4f6b1c1e-1111-4d4d-9e9e-000000000001"));
    const perHour = new Array<number>(24).fill(0);
    for (let i = 0; i < 2400; i++) perHour[dailyBackupHour(`server-${i}`)]!++;
    expect(Math.min(...perHour)).toBeGreaterThan(70);
    expect(Math.max(...perHour)).toBeLessThan(130);
  });

  it("the hourly cron starts one backup a day per running, stopped or suspended server, at its hour", async () => {
    const running = await runningServer();
    const suspended = await runningServer();
    const provisioning = await runningServer();
    // Suspended by billing (a suspended server of an account that may run would be resumed).
    await env.DB.prepare("UPDATE servers SET status = 'suspended' WHERE id = ?").bind(suspended.id).run();
    await env.DB.prepare("UPDATE entitlements SET state = 'suspended' WHERE user_id = (SELECT user_id FROM servers WHERE id = ?)").bind(suspended.id).run();
    await env.DB.prepare("UPDATE servers SET status = 'provisioning' WHERE id = ?").bind(provisioning.id).run();

    for (let hour = 0; hour < 24; hour++) await cronAt(0, hour);

    for (const { id } of [running, suspended]) {
      const started = await scheduledBackups(id);
      expect(started).toHaveLength(1);
      expect(started[0]!.getUTCHours()).toBe(dailyBackupHour(id));
    }
    expect(await scheduledBackups(provisioning.id)).toEqual([]);
    const { job } = await running.agent.next((message) => message?.job?.kind === "homeserver.backup");
    expect(job).toMatchObject({ payload: { serverId: running.id } });
  });

  it("skips a server whose backup succeeded, or is under way, within the last 20 hours", async () => {
    const { agent, host, owner, id } = await runningServer();
    const hour = dailyBackupHour(id);
    setNow(Date.UTC(2031, 0, 10, hour, 17) - 2 * HOUR);
    const manual = await manualBackup(await logIn(owner.email), id, agent);
    expect((await uploadBackup(host, manual.payload.uploadBase, [bytes(100)])).status).toBe(200);

    await cronAt(0, hour);
    expect(await scheduledBackups(id)).toEqual([]);
    await cronAt(1, hour);
    expect(await scheduledBackups(id)).toHaveLength(1);
    // Its host never answered: by the next day its job ran out of time, so it failed and a new one starts.
    await cronAt(2, hour);
    expect(await scheduledBackups(id)).toHaveLength(2);
    const first = await env.DB.prepare("SELECT status, error FROM backups WHERE server_id = ? AND trigger = 'scheduled' ORDER BY created_at").bind(id).first();
    expect(first).toEqual({ status: "failed", error: "deadline exceeded" });
    // While that one is under way, a repeated run of the hour starts no second one.
    await cronAt(2, hour);
    expect(await scheduledBackups(id)).toHaveLength(2);
  });
});

/** A finished backup as if made `createdAt`, with its R2 object and manifest. */
async function seedBackup(serverId: string, hostId: string, createdAt: number, status: "succeeded" | "failed") {
  const id = crypto.randomUUID();
  const key = `backups/${serverId}/${id}.age`;
  await env.BACKUPS.put(key, bytes(64));
  await env.BACKUPS.put(key.replace(/\.age$/, ".manifest.json"), "{}");
  await env.DB.prepare(
    `INSERT INTO backups (id, server_id, host_id, trigger, status, r2_key, upload_id, part_size, job_id, created_at, completed_at)
     VALUES (?, ?, ?, 'scheduled', ?, ?, 'upload', 8388608, ?, ?, ?)`,
  )
    .bind(id, serverId, hostId, status, key, crypto.randomUUID(), createdAt, createdAt + HOUR)
    .run();
  await env.DB.prepare("INSERT INTO backup_parts (backup_id, part_number, size, sha256, etag, uploaded_at) VALUES (?, 1, 64, ?, 'etag', ?)")
    .bind(id, "0".repeat(64), createdAt)
    .run();
  return id;
}

const stored = async (serverId: string, id: string) => (await env.BACKUPS.head(`backups/${serverId}/${id}.age`)) !== null;
const START = Date.UTC(2031, 2, 1, 0, 0);

describe("30-day retention", () => {
  it("deletes backups older than 30 days from R2 and D1, but always keeps a server's newest successful one", async () => {
    const { owner, host, id } = await runningServer();
    const hostId = host.hostId;
    const oldest = await seedBackup(id, hostId, START, "succeeded");
    // (Half a day in: past 30 days whatever hour the cron below runs at.)
    const failed = await seedBackup(id, hostId, START + DAY / 2, "failed");
    const newest = await seedBackup(id, hostId, START + 2 * DAY, "succeeded");
    // Its hour for the daily backup is not this one: nothing new starts meanwhile.
    const hour = (dailyBackupHour(id) + 12) % 24;

    setNow(START + 31 * DAY + hour * HOUR);
    await runCron(new Date());
    expect(await backupRow(oldest)).toBeNull();
    expect(await backupRow(failed)).toBeNull();
    expect(await stored(id, oldest)).toBe(false);
    expect(await env.BACKUPS.head(`backups/${id}/${oldest}.manifest.json`)).toBeNull();
    expect(await env.DB.prepare("SELECT count(*) AS n FROM backup_parts WHERE backup_id IN (?, ?)").bind(oldest, failed).first()).toEqual({ n: 0 });

    setNow(START + 45 * DAY + hour * HOUR);
    await runCron(new Date());
    // Older than 30 days, but the newest successful one (the server has been suspended, say): kept, and said so.
    expect(await stored(id, newest)).toBe(true);
    expect(await backupsOf(await logIn(owner.email), id)).toEqual([expect.objectContaining({ id: newest, keptUntil: null })]);

    const newer = await seedBackup(id, hostId, START + 45 * DAY, "succeeded");
    setNow(START + 46 * DAY + hour * HOUR);
    await runCron(new Date());
    expect(await stored(id, newest)).toBe(false);
    expect((await backupsOf(await logIn(owner.email), id)).map((backup) => backup.id)).toEqual([newer]);
  });

  it("a deleted server's final backup ages out like the rest; a backup being restored is kept", async () => {
    const deleted = await runningServer();
    const restoring = await runningServer();
    const finalBackup = await seedBackup(deleted.id, deleted.host.hostId, START, "succeeded");
    await env.DB.prepare("UPDATE servers SET status = 'deleted' WHERE id = ?").bind(deleted.id).run();

    const beingRestored = await seedBackup(restoring.id, restoring.host.hostId, START, "succeeded");
    await seedBackup(restoring.id, restoring.host.hostId, START + DAY, "succeeded");
    await env.DB.prepare(
      `INSERT INTO jobs (id, host_id, kind, payload, server_id, backup_id, status, attempts, next_attempt_at, deadline, created_at, updated_at)
       VALUES (?, ?, 'homeserver.restore', ?, ?, ?, 'acked', 1, ?, ?, ?, ?)`,
    )
      .bind(
        crypto.randomUUID(),
        restoring.host.hostId,
        JSON.stringify({ serverId: restoring.id, backupId: beingRestored }),
        restoring.id,
        beingRestored,
        START,
        START + 400 * DAY,
        START,
        START,
      )
      .run();

    setNow(START + 40 * DAY + ((dailyBackupHour(restoring.id) + 12) % 24) * HOUR);
    await runCron(new Date());
    expect(await stored(deleted.id, finalBackup)).toBe(false);
    expect(await stored(restoring.id, beingRestored)).toBe(true);
  });
});

describe("abandoned uploads", () => {
  /** A pending backup with an open multipart upload, whose job `jobId` may or may not exist. */
  async function pendingBackup(serverId: string, hostId: string, createdAt: number) {
    const id = crypto.randomUUID();
    const key = `backups/${serverId}/${id}.age`;
    const { uploadId } = await env.BACKUPS.createMultipartUpload(key);
    await env.DB.prepare(
      `INSERT INTO backups (id, server_id, host_id, trigger, status, r2_key, upload_id, part_size, job_id, created_at)
       VALUES (?, ?, ?, 'scheduled', 'pending', ?, ?, 8388608, ?, ?)`,
    )
      .bind(id, serverId, hostId, key, uploadId, crypto.randomUUID(), createdAt)
      .run();
    return id;
  }

  const uploadAborted = async (backupId: string) => {
    const row = (await backupRow(backupId))!;
    return env.BACKUPS.resumeMultipartUpload(row.r2_key, row.upload_id)
      .uploadPart(1, "x")
      .then(
        () => false,
        () => true,
      );
  };

  it("a backup still unfinished after its job ended, or whose job was never written, is aborted and failed by the cron", async () => {
    const first = await runningServer();
    const { id: jobId, payload } = await manualBackup(first.owner.cookie, first.id, first.agent);
    // The job's end was recorded, but never applied to its backup (the Worker stopped in between).
    await env.DB.prepare("UPDATE jobs SET status = 'failed', error = 'the agent was killed', finished_at = ? WHERE id = ?").bind(Date.now(), jobId).run();
    const second = await runningServer();
    const orphan = await pendingBackup(second.id, second.host.hostId, Date.now() - 11 * MINUTE);
    const third = await runningServer();
    // Its job may be being written right now: left alone.
    const young = await pendingBackup(third.id, third.host.hostId, Date.now() - MINUTE);

    await runCron();
    expect(await backupRow(payload.backupId)).toMatchObject({ status: "failed", error: "the agent was killed" });
    expect(await backupRow(orphan)).toMatchObject({ status: "failed", error: "the backup job ended without completing the upload" });
    expect(await uploadAborted(orphan)).toBe(true);
    expect(await backupRow(young)).toMatchObject({ status: "pending" });
    expect(await uploadAborted(young)).toBe(false);
  });
});

describe("overdue backups", () => {
  const overdueAlerts = async (serverId: string) =>
    (
      await env.DB.prepare("SELECT actor, detail FROM audit_log WHERE action = 'backup.overdue' AND target = ? ORDER BY id")
        .bind(serverId)
        .all<{ actor: string; detail: string }>()
    ).results.map((row) => ({ actor: row.actor, ...(JSON.parse(row.detail) as Record<string, unknown>) }));

  it("two days without a successful backup alert the operators, once a day while it lasts, with the last failure's reason", async () => {
    const { host, id } = await runningServer();
    const created = Date.now();
    const fresh = await runningServer();
    // Off the servers' daily hour, so the cron itself starts no backup here.
    const offHour = (start: number) => {
      let at = start;
      while ([dailyBackupHour(id), dailyBackupHour(fresh.id)].includes(new Date(at).getUTCHours())) at += HOUR;
      return at;
    };
    const cronAtTime = async (at: number) => {
      setNow(at);
      await runCron(new Date(at));
    };
    await seedBackup(id, host.hostId, created, "succeeded");
    const failed = await seedBackup(id, host.hostId, created + DAY + HOUR, "failed");
    await env.DB.prepare("UPDATE backups SET error = 'pg_dump exited 1' WHERE id = ?").bind(failed).run();

    await cronAtTime(offHour(created + DAY + 2 * HOUR));
    expect(await overdueAlerts(id)).toEqual([]);

    const due = offHour(created + 2 * DAY + HOUR);
    await cronAtTime(due);
    expect(await overdueAlerts(id)).toEqual([
      { actor: "system", hostId: host.hostId, lastSucceededAt: new Date(created).toISOString(), lastFailure: "pg_dump exited 1" },
    ]);
    // A server created in the same minute never had a backup: it is alerted too.
    expect(await overdueAlerts(fresh.id)).toHaveLength(1);

    await cronAtTime(offHour(due + HOUR));
    expect(await overdueAlerts(id)).toHaveLength(1);
    await cronAtTime(offHour(due + DAY + HOUR));
    expect(await overdueAlerts(id)).toHaveLength(2);

    // A success ends it.
    await seedBackup(id, host.hostId, due + DAY + 2 * HOUR, "succeeded");
    await cronAtTime(offHour(due + 2 * DAY + 3 * HOUR));
    expect(await overdueAlerts(id)).toHaveLength(2);
  });

  it("a server younger than two days, or deleted, is not overdue", async () => {
    const young = await runningServer();
    const deleted = await runningServer();
    await env.DB.prepare("UPDATE servers SET status = 'deleted' WHERE id = ?").bind(deleted.id).run();
    const at = Date.now() + DAY;
    setNow(at);
    await runCron(new Date(at));
    expect(await overdueAlerts(young.id)).toEqual([]);
    setNow(at + 2 * DAY);
    await runCron(new Date(at + 2 * DAY));
    expect(await overdueAlerts(deleted.id)).toEqual([]);
  });
});
