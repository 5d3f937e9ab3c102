import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { dailyBackupHour } from "../../../worker/backups/maintenance";
import { weeklyVerificationHour } from "../../../worker/checks/restore-verification";
import { bytes, manualBackup, uploadBackup } from "../backups/backup-helpers";
import { operatorCookie, succeeded, type DeliveredJob } from "../fleet/fleet-helpers";
import { post, runCron, setNow } from "../helpers";
import { jobOf, runningServer } from "../servers/server-helpers";

afterEach(() => vi.useRealTimers());

const counts = { users: 4, rooms: 3, events: 120, mediaFiles: 2 };

/** A running server whose first backup completed with `counts` as its manifest; the verification that sends at once. */
async function serverWithFirstBackup() {
  const server = await runningServer();
  const backup = await manualBackup(server.owner.cookie, server.id, server.agent);
  expect((await uploadBackup(server.host, backup.payload.uploadBase, [bytes(64)])).status).toBe(200);
  server.agent.send(succeeded(backup, { counts }));
  const { job } = await jobOf(server.agent, "homeserver.restore_verify");
  return { ...server, backupId: backup.payload.backupId, verification: job as DeliveredJob };
}

async function checkResultsOf(serverId: string) {
  const { results } = await env.DB.prepare("SELECT * FROM check_results WHERE server_id = ? AND check_id = 'restore-verified' ORDER BY checked_at")
    .bind(serverId)
    .all<Record<string, string>>();
  return results.map((row) => ({
    result: row.result,
    summary: row.summary!,
    jobId: row.job_id,
    facts: JSON.parse(row.facts!) as Array<{ label: string; value: string }>,
  }));
}

const verified = (job: DeliveredJob, restored = counts) => succeeded(job, { counts: restored });

describe("restore verification", () => {
  it("is sent as soon as a server's first backup completes, for that backup, with its identity added only on delivery", async () => {
    const { id, backupId, verification } = await serverWithFirstBackup();
    expect(verification.payload).toMatchObject({ serverId: id, backupId, identity: expect.stringMatching(/^AGE-SECRET-KEY-1/) });
    const stored = await env.DB.prepare("SELECT payload FROM jobs WHERE id = ?").bind(verification.id).first<{ payload: string }>();
    expect(stored!.payload).not.toContain("AGE-SECRET-KEY");
  });

  it("holds when the restored counts equal the manifest, with the counts as its facts, and is audited", async () => {
    const { id, agent, verification } = await serverWithFirstBackup();
    agent.send(verified(verification));
    await vi.waitFor(async () => expect(await checkResultsOf(id)).toHaveLength(1));
    const [result] = await checkResultsOf(id);
    expect(result).toMatchObject({ result: "holds", jobId: verification.id });
    expect(result!.facts).toEqual(expect.arrayContaining([{ label: "Restored events", value: "120 (backed up: 120)" }]));
    const audited = await env.DB.prepare("SELECT detail FROM audit_log WHERE action = 'check.restore_verified' AND target = ?")
      .bind(id)
      .first<{ detail: string }>();
    expect(JSON.parse(audited!.detail)).toMatchObject({ result: "holds" });
  });

  it("fails naming the count that differs", async () => {
    const { id, agent, verification } = await serverWithFirstBackup();
    agent.send(verified(verification, { ...counts, events: 119 }));
    await vi.waitFor(async () => expect(await checkResultsOf(id)).toHaveLength(1));
    const [result] = await checkResultsOf(id);
    expect(result).toMatchObject({ result: "fails" });
    expect(result!.summary).toContain("events (119 restored, 120 backed up)");
    expect(result!.summary).not.toContain("users");
  });

  it("a job that failed (a corrupted backup, say) fails the check in our words, not the host's", async () => {
    const { id, agent, verification } = await serverWithFirstBackup();
    agent.send({ type: "job.result", id: verification.id, ok: false, error: "age: header MAC mismatch at /var/lib/berth/x" });
    await vi.waitFor(async () => expect(await checkResultsOf(id)).toHaveLength(1));
    const [result] = await checkResultsOf(id);
    expect(result).toMatchObject({ result: "fails" });
    expect(result!.summary).toMatch(/^The backup could not be restored: /);
    expect(result!.summary).not.toContain("/var/lib");
  });

  it("could not check when the host's agent does not run verifications yet (not a failure of the backup)", async () => {
    const { id, agent, verification } = await serverWithFirstBackup();
    agent.send({ type: "job.result", id: verification.id, ok: false, error: 'unknown job kind "homeserver.restore_verify" (this agent runs: noop)' });
    await vi.waitFor(async () => expect(await checkResultsOf(id)).toHaveLength(1));
    expect((await checkResultsOf(id))[0]).toMatchObject({ result: "could_not_check" });
  });

  it("a host's result for a server it does not run is not recorded", async () => {
    const victim = await serverWithFirstBackup();
    const other = await runningServer();
    // Another host answers the victim's verification as if it had run it.
    other.agent.send(verified(victim.verification));
    victim.agent.send({ type: "job.result", id: victim.verification.id, ok: false, error: "sandbox failed" });
    await vi.waitFor(async () => expect(await checkResultsOf(victim.id)).toHaveLength(1));
    expect((await checkResultsOf(victim.id))[0]).toMatchObject({ result: "fails" });
    expect(await checkResultsOf(other.id)).toHaveLength(0);
  });

  it("is sent again after a successful upgrade", async () => {
    const { id, agent, verification } = await serverWithFirstBackup();
    agent.send(verified(verification));
    await vi.waitFor(async () => expect(await checkResultsOf(id)).toHaveLength(1));
    expect((await post(`/api/admin/servers/${id}/upgrade`, { image: "berth/synapse:1.164.0" }, { cookie: await operatorCookie() })).status).toBe(202);
    const upgrade = await jobOf(agent, "homeserver.upgrade");
    agent.send(succeeded(upgrade.job, { synapseVersion: "1.164.0" }));
    const { job } = await jobOf(agent, "homeserver.restore_verify");
    expect(job.id).not.toBe(verification.id);
  });

  it("weekly, at an hour of the week spread by the server's id, three hours after that day's backup started", () => {
    const hours = new Set<number>();
    for (let i = 0; i < 2000; i++) {
      const id = `server-${i}`;
      hours.add(weeklyVerificationHour(id));
      expect(weeklyVerificationHour(id)).toBeLessThan(7 * 24);
      expect((weeklyVerificationHour(id) - dailyBackupHour(id) + 24) % 24).toBe(3);
    }
    expect(hours.size).toBeGreaterThan(150);
  });

  it("weekly, at the server's own hour of the week, by the hourly cron; not while one is under way", async () => {
    const { id, agent, verification } = await serverWithFirstBackup();
    agent.send(verified(verification));
    await vi.waitFor(async () => expect(await checkResultsOf(id)).toHaveLength(1));
    const hourOfWeek = weeklyVerificationHour(id);
    // 2031-01-12 is a Sunday: hour 0 of the week.
    const at = new Date(Date.UTC(2031, 0, 12 + Math.floor(hourOfWeek / 24), hourOfWeek % 24, 17));
    setNow(at);
    await runCron(at);
    const { job } = await jobOf(agent, "homeserver.restore_verify");
    expect(job.payload).toMatchObject({ serverId: id });
    const sent = () =>
      env.DB.prepare("SELECT id FROM jobs WHERE kind = 'homeserver.restore_verify' AND server_id = ? ORDER BY id").bind(id).all<{ id: string }>();
    const before = (await sent()).results.map((row) => row.id);
    expect(before).toContain(job.id);
    await runCron(at);
    // The cron prunes old finished jobs; it sends no second verification while this one is under way.
    expect((await sent()).results.filter((row) => !before.includes(row.id))).toEqual([]);
  });
});
