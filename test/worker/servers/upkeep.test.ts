import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { dailyBackupHour } from "../../../worker/backups/maintenance";
import { dailyUpkeepHour, REMOTE_MEDIA_RETENTION_DAYS } from "../../../worker/servers/upkeep";
import { subscriber } from "../billing/stripe-helpers";
import { succeeded } from "../fleet/fleet-helpers";
import { call, cronAt, DAY, expectError, HOUR, logIn, runCron } from "../helpers";
import { page } from "../pages/page-checks";
import { jobOf, runningServer, type ServerView } from "./server-helpers";

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

type Server = Awaited<ReturnType<typeof runningServer>>;
interface UpkeepView {
  finishedAt: string;
  databaseBytes: { before: number; after: number };
  stateGroupsStateRows: { before: number; after: number };
  mediaBytes: { before: number; after: number };
  remoteMediaDeleted: number;
  compressorMs: number;
}

const upkeepJobs = async (serverId: string) =>
  (
    await env.DB.prepare("SELECT created_at, status, payload FROM jobs WHERE server_id = ? AND kind = 'homeserver.upkeep' ORDER BY created_at")
      .bind(serverId)
      .all<{ created_at: number; status: string; payload: string }>()
  ).results.map((row) => ({ at: new Date(row.created_at), status: row.status, payload: JSON.parse(row.payload) }));

const upkeepRecords = async (serverId: string) => (await env.DB.prepare("SELECT * FROM upkeep_runs WHERE server_id = ?").bind(serverId).all()).results;

const auditOf = async (serverId: string, action: string) =>
  (
    await env.DB.prepare("SELECT actor, detail FROM audit_log WHERE target = ? AND action = ? ORDER BY id")
      .bind(serverId, action)
      .all<{ actor: string; detail: string }>()
  ).results;

/** The server's upkeep, sent by the hourly cron at its hour on the fixed date; a fresh session for its owner (the clock moved). */
async function upkeepSent(server: Server) {
  await cronAt(0, dailyUpkeepHour(server.id));
  const { job } = await jobOf(server.agent, "homeserver.upkeep");
  return { job, cookie: await logIn(server.owner.email) };
}

async function lastUpkeepOf(cookie: string, serverId: string): Promise<UpkeepView | null> {
  const response = await call(`/api/servers/${serverId}`, { cookie });
  expect(response.status).toBe(200);
  return ((await response.json()) as ServerView & { lastUpkeep: UpkeepView | null }).lastUpkeep;
}

const jobRow = (id: string) => env.DB.prepare("SELECT status, error FROM jobs WHERE id = ?").bind(id).first<{ status: string; error: string | null }>();

describe("daily upkeep", () => {
  it("each server has a stable hour, twelve hours from its daily backup", () => {
    for (let i = 0; i < 100; i++) {
      const id = `server-${i}`;
      expect(dailyUpkeepHour(id)).toBe(dailyUpkeepHour(id));
      expect(Math.abs(dailyUpkeepHour(id) - dailyBackupHour(id))).toBe(12);
    }
  });

  it("the hourly cron sends one upkeep a day to each running homeserver, at its hour, with the media retention", async () => {
    const running = await runningServer();
    const stopped = await runningServer();
    await env.DB.prepare("UPDATE servers SET status = 'stopped' WHERE id = ?").bind(stopped.id).run();

    for (let hour = 0; hour < 24; hour++) await cronAt(0, hour);

    const sent = await upkeepJobs(running.id);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.at.getUTCHours()).toBe(dailyUpkeepHour(running.id));
    expect(await upkeepJobs(stopped.id)).toEqual([]);
    const { job } = await jobOf(running.agent, "homeserver.upkeep");
    expect(job.payload).toEqual({ serverId: running.id, remoteMediaRetentionDays: REMOTE_MEDIA_RETENTION_DAYS });
  });

  it("sends none while one is under way; the next day's goes out once that one ran out of time, with the owner's media retention", async () => {
    const server = await runningServer();
    const hour = dailyUpkeepHour(server.id);
    await cronAt(0, hour);
    await cronAt(0, hour);
    expect(await upkeepJobs(server.id)).toHaveLength(1);

    await env.DB.prepare("UPDATE servers SET settings = json_set(coalesce(settings, ?), '$.mediaRetentionDays', 7) WHERE id = ?")
      .bind(
        JSON.stringify({ registration: "closed", federation: { mode: "on" }, messageRetentionDays: null, mediaRetentionDays: null, maxUploadMiB: 50 }),
        server.id,
      )
      .run();
    await cronAt(1, hour);
    const sent = await upkeepJobs(server.id);
    expect(sent.map((job) => job.status)).toEqual(["failed", "sent"]);
    expect(sent[1]!.payload.remoteMediaRetentionDays).toBe(7);
    expect(await auditOf(server.id, "server.upkeep_failed")).toEqual([{ actor: "system", detail: JSON.stringify({ reason: "deadline exceeded" }) }]);
  });
});

describe("upkeep records", () => {
  it("are kept a year, then the hourly cron deletes them", async () => {
    const { id } = await runningServer();
    const seed = (finishedAt: number) =>
      env.DB.prepare("INSERT INTO upkeep_runs VALUES (?, ?, 3, 2, 3, 2, 1, 1, 0, 5, ?)").bind(crypto.randomUUID(), id, finishedAt).run();
    await seed(Date.now() - 366 * DAY);
    await seed(Date.now() - 364 * DAY);
    await runCron();
    const kept = await upkeepRecords(id);
    expect(kept).toHaveLength(1);
    expect(Date.now() - Number(kept[0]!.finished_at)).toBeLessThan(365 * DAY);
  });
});

describe("an upkeep's result", () => {
  it("is recorded for its server: the API and the server's page show the last one, the audit log its sizes, the export every one", async () => {
    const server = await runningServer();
    const { job, cookie } = await upkeepSent(server);
    expect(await lastUpkeepOf(cookie, server.id)).toBeNull();
    expect(await page(`/servers/${server.id}`, cookie)).toContain("No upkeep has run yet.");

    server.agent.send(succeeded(job));
    await vi.waitFor(async () => expect(await lastUpkeepOf(cookie, server.id)).not.toBeNull());
    const upkeep = (await lastUpkeepOf(cookie, server.id))!;
    const sentAt = Date.UTC(2031, 0, 10, dailyUpkeepHour(server.id), 17);
    expect(new Date(upkeep.finishedAt).getTime()).toBeGreaterThanOrEqual(sentAt);
    expect(new Date(upkeep.finishedAt).getTime()).toBeLessThan(sentAt + HOUR);
    expect(upkeep).toEqual({
      finishedAt: upkeep.finishedAt,
      databaseBytes: { before: 20_000_000, after: 19_000_000 },
      stateGroupsStateRows: { before: 1166, after: 710 },
      mediaBytes: { before: 5_000_000, after: 4_000_000 },
      remoteMediaDeleted: 3,
      compressorMs: 950,
    });

    const html = await page(`/servers/${server.id}`, cookie);
    expect(html).toContain("Database and media upkeep");
    expect(html).toMatch(/<dt>Database size<\/dt><dd>20 MB → 19 MB<\/dd>/);
    expect(html).toMatch(/<dt>Room state rows<\/dt><dd>1,166 → 710<\/dd>/);
    expect(html).toMatch(/<dt>Cached media removed<\/dt><dd>3 files \(media 5.0 MB →\s*4.0 MB\)<\/dd>/);

    const [entry] = await auditOf(server.id, "server.upkeep_done");
    expect(entry!.actor).toBe("system");
    expect(JSON.parse(entry!.detail)).toEqual({
      databaseBytes: [20_000_000, 19_000_000],
      stateGroupsStateRows: [1166, 710],
      mediaBytes: [5_000_000, 4_000_000],
      remoteMediaDeleted: 3,
    });

    const exported = (await (await call("/api/me/export", { cookie })).json()) as Record<string, any>;
    expect(exported.usage).toEqual([expect.objectContaining({ serverId: server.id, upkeep: [upkeep] })]);
    expect(exported.account.auditLog).toContainEqual(expect.objectContaining({ action: "server.upkeep_done", detail: JSON.parse(entry!.detail) }));
  });

  it("is another customer's business only as a 404, from the API and the page alike", async () => {
    const server = await runningServer();
    const stranger = await subscriber();
    const { job } = await upkeepSent(server);
    server.agent.send(succeeded(job));
    await vi.waitFor(async () => expect(await upkeepRecords(server.id)).toHaveLength(1));

    const cookie = await logIn(stranger.email);
    await expectError(await call(`/api/servers/${server.id}`, { cookie }), 404, "not_found");
    const html = await page(`/servers/${server.id}`, cookie, 404);
    expect(html).not.toContain("Room state rows");
  });

  it("naming a server its job was not about, or one no longer on the answering host, records nothing", async () => {
    const server = await runningServer();
    const other = await runningServer();
    const { job, cookie } = await upkeepSent(server);
    server.agent.send(succeeded(job, { serverId: other.id }));
    await vi.waitFor(async () => expect((await jobRow(job.id))!.status).toBe("succeeded"));
    expect(await upkeepRecords(server.id)).toEqual([]);
    expect(await upkeepRecords(other.id)).toEqual([]);
    expect(await auditOf(other.id, "server.upkeep_done")).toEqual([]);
    expect(await lastUpkeepOf(await logIn(other.owner.email), other.id)).toBeNull();

    // The next day: the server has moved to the other host (a restore elsewhere, say) before its old host answered.
    await cronAt(1, dailyUpkeepHour(server.id));
    const { job: next } = await jobOf(server.agent, "homeserver.upkeep");
    const otherHost = await env.DB.prepare("SELECT host_id FROM servers WHERE id = ?").bind(other.id).first<{ host_id: string }>();
    await env.DB.prepare("UPDATE servers SET host_id = ? WHERE id = ?").bind(otherHost!.host_id, server.id).run();
    server.agent.send(succeeded(next));
    await vi.waitFor(async () => expect((await jobRow(next.id))!.status).toBe("succeeded"));
    expect(await upkeepRecords(server.id)).toEqual([]);
    expect(await lastUpkeepOf(cookie, server.id)).toBeNull();
  });

  it("with absurd figures fails the job and records nothing", async () => {
    const server = await runningServer();
    const { job } = await upkeepSent(server);
    const absurd = { databaseBytes: 2 ** 52, stateGroupsStateRows: 1, mediaBytes: 1 };
    server.agent.send(succeeded(job, { after: absurd }));
    await vi.waitFor(async () => expect((await jobRow(job.id))!.status).toBe("failed"));
    expect((await jobRow(job.id))!.error).toMatch(/^the agent reported success with a result this control plane cannot read/);
    expect(await upkeepRecords(server.id)).toEqual([]);
    expect(await auditOf(server.id, "server.upkeep_failed")).toHaveLength(1);

    await cronAt(1, dailyUpkeepHour(server.id));
    const { job: slow } = await jobOf(server.agent, "homeserver.upkeep");
    server.agent.send(succeeded(slow, { compressorMs: 4 * HOUR }));
    await vi.waitFor(async () => expect((await jobRow(slow.id))!.status).toBe("failed"));
    expect(await upkeepRecords(server.id)).toEqual([]);
  });
});
