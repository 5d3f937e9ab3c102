import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { HOST_CHECK_IDS } from "../../../protocol/checks";
import { dailyBackupHour } from "../../../worker/backups/maintenance";
import { CHECK_IDS } from "../../../worker/checks/registry";
import { dailyChecksHour } from "../../../worker/checks/runs";
import { dailyUpkeepHour } from "../../../worker/servers/upkeep";
import { onlineHost } from "../servers/server-helpers";
import { succeeded } from "../fleet/fleet-helpers";
import { call, cronAt, DAY, expectError, HOUR, logIn, post, runCron, setNow } from "../helpers";
import { jobOf, runningServer } from "../servers/server-helpers";

// The promise checks of a homeserver: run daily and on demand, recorded from the host's answer and
// the Worker's own verdicts, shown to the owner alone.

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

type Server = Awaited<ReturnType<typeof runningServer>>;
interface CheckView {
  id: string;
  latest: { result: string; summary: string; facts: { label: string; value: string }[]; checkedAt: string } | null;
  history: { result: string; summary: string; checkedAt: string }[];
}

async function checksOf(cookie: string, serverId: string) {
  const response = await call(`/api/servers/${serverId}/checks`, { cookie });
  expect(response.status).toBe(200);
  return (await response.json()) as { checks: CheckView[]; runningJobId: string | null };
}

const latestResults = async (cookie: string, serverId: string) =>
  Object.fromEntries((await checksOf(cookie, serverId)).checks.map((check) => [check.id, check.latest?.result ?? null]));

const recordedFor = async (jobId: string) =>
  (await env.DB.prepare("SELECT check_id, result, summary FROM check_results WHERE job_id = ? ORDER BY check_id").bind(jobId).all()).results;

const jobRow = (id: string) => env.DB.prepare("SELECT status, error FROM jobs WHERE id = ?").bind(id).first<{ status: string; error: string | null }>();

const checkJobs = async (serverId: string) =>
  (
    await env.DB.prepare("SELECT created_at FROM jobs WHERE server_id = ? AND kind = 'homeserver.checks' ORDER BY created_at")
      .bind(serverId)
      .all<{ created_at: number }>()
  ).results.map((row) => new Date(row.created_at));

/** "Check now" as the owner asks for it: the job id the API answers with, and the job as the agent receives it. */
async function checkNow(server: Server, cookie = server.owner.cookie) {
  const response = await post(`/api/servers/${server.id}/checks/run`, undefined, { cookie });
  expect(response.status).toBe(202);
  const { jobId } = (await response.json()) as { jobId: string };
  const { job } = await jobOf(server.agent, "homeserver.checks");
  expect(job.id).toBe(jobId);
  return job;
}

describe("who may see and run a homeserver's checks", () => {
  it("only its owner: another customer gets the 404 of a server that does not exist, and runs nothing", async () => {
    const server = await runningServer();
    const stranger = await runningServer();
    for (const id of [server.id, crypto.randomUUID()]) {
      await expectError(await call(`/api/servers/${id}/checks`, { cookie: stranger.owner.cookie }), 404, "not_found");
      await expectError(await post(`/api/servers/${id}/checks/run`, undefined, { cookie: stranger.owner.cookie }), 404, "not_found");
    }
    expect(await checkJobs(server.id)).toEqual([]);
  });

  it("nobody without a session", async () => {
    const server = await runningServer();
    await expectError(await call(`/api/servers/${server.id}/checks`), 401);
    await expectError(await post(`/api/servers/${server.id}/checks/run`), 401);
    expect(await checkJobs(server.id)).toEqual([]);
  });
});

describe("a host's answer", () => {
  it("is recorded for the server it was asked about: each host check, and the software check from the version it reports", async () => {
    const server = await runningServer();
    const before = await checksOf(server.owner.cookie, server.id);
    // Delegation is checked only for a homeserver with its own domain (test/worker/checks/delegation.test.ts).
    expect(before.checks.map((check) => check.id)).toEqual(CHECK_IDS.filter((id) => id !== "delegation"));
    expect(before.checks.every((check) => check.latest === null && check.history.length === 0)).toBe(true);

    const job = await checkNow(server);
    expect(job.payload).toEqual({ serverId: server.id, checks: [...HOST_CHECK_IDS] });
    // The Worker's own verdicts are recorded at once; the host's wait for its answer.
    expect(await latestResults(server.owner.cookie, server.id)).toEqual({
      "encryption-by-default": null,
      certificates: null,
      "disk-encryption": null,
      isolation: null,
      backups: "could_not_check",
      "restore-verified": null,
      software: null,
      "card-data": "holds",
    });
    expect((await checksOf(server.owner.cookie, server.id)).runningJobId).toBe(job.id);

    server.agent.send(succeeded(job));
    await vi.waitFor(async () => expect((await checksOf(server.owner.cookie, server.id)).runningJobId).toBeNull());
    const after = await checksOf(server.owner.cookie, server.id);
    expect(Object.fromEntries(after.checks.map((check) => [check.id, check.latest?.result ?? null]))).toEqual({
      "encryption-by-default": "holds",
      certificates: "holds",
      "disk-encryption": "holds",
      isolation: "holds",
      backups: "could_not_check",
      "restore-verified": null,
      software: "holds",
      "card-data": "holds",
    });
    const isolation = after.checks.find((check) => check.id === "isolation")!;
    expect(isolation.latest).toMatchObject({ summary: "The isolation check holds.", facts: [{ label: "Checked by", value: "the test agent" }] });
    expect(after.checks.find((check) => check.id === "software")!.latest!.summary).toBe("Synapse 1.163.2 runs from the image we ship.");
  });

  it("about a server the host no longer runs is not recorded", async () => {
    const server = await runningServer();
    const job = await checkNow(server);
    const elsewhere = await onlineHost();
    await env.DB.prepare("UPDATE servers SET host_id = ? WHERE id = ?").bind(elsewhere.host.hostId, server.id).run();
    server.agent.send(succeeded(job));
    await vi.waitFor(async () => expect((await jobRow(job.id))?.status).toBe("succeeded"));
    expect(await recordedFor(job.id)).toEqual([]);
  });

  it("naming another server than the one it was asked about is not recorded", async () => {
    const server = await runningServer();
    const other = await runningServer();
    const job = await checkNow(server);
    server.agent.send(succeeded(job, { serverId: other.id }));
    await vi.waitFor(async () => expect((await jobRow(job.id))?.status).toBe("succeeded"));
    expect(await recordedFor(job.id)).toEqual([]);
    expect(await latestResults(other.owner.cookie, other.id)).toMatchObject({ isolation: null, software: null });
  });

  it("with outcomes outside the schema is refused: nothing it claimed is recorded, each host check could not be checked", async () => {
    const server = await runningServer();
    const job = await checkNow(server);
    const forged = [
      { checkId: "isolation", result: "holds", evidence: { summary: "All fine.", facts: [], extra: "<script>" } },
      { checkId: "backups", result: "holds", evidence: { summary: "Backups are fine.", facts: [] } },
    ];
    server.agent.send(succeeded(job, { outcomes: forged }));
    await vi.waitFor(async () => expect((await jobRow(job.id))?.status).toBe("failed"));
    await vi.waitFor(async () => expect(await recordedFor(job.id)).toHaveLength(HOST_CHECK_IDS.length + 1));
    const recorded = await recordedFor(job.id);
    expect(recorded.every((row) => row.result === "could_not_check" && row.summary === "The host did not answer.")).toBe(true);
    expect(recorded.map((row) => row.check_id)).not.toContain("backups");
  });
});

describe("check now", () => {
  it("runs once at a time, three times an hour, and only while the homeserver runs", async () => {
    // One rate-limit window throughout: a window that turned mid-test would let the refused request through.
    setNow(Date.now());
    const server = await runningServer();
    const first = await checkNow(server);
    await expectError(await post(`/api/servers/${server.id}/checks/run`, undefined, { cookie: server.owner.cookie }), 409, "checks_running");
    server.agent.send(succeeded(first));
    await vi.waitFor(async () => expect((await jobRow(first.id))?.status).toBe("succeeded"));
    for (let run = 2; run <= 3; run++) {
      const job = await checkNow(server);
      server.agent.send(succeeded(job));
      await vi.waitFor(async () => expect((await jobRow(job.id))?.status).toBe("succeeded"));
    }
    const refused = await post(`/api/servers/${server.id}/checks/run`, undefined, { cookie: server.owner.cookie });
    expect(refused.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(refused.status).toBe(429);
    expect(await refused.json()).toEqual({ error: { code: "rate_limited", message: expect.stringMatching(/checks have run 3 times within the hour/) } });
    expect(await checkJobs(server.id)).toHaveLength(3);

    const stopped = await runningServer();
    await env.DB.prepare("UPDATE servers SET status = 'stopped' WHERE id = ?").bind(stopped.id).run();
    await expectError(await post(`/api/servers/${stopped.id}/checks/run`, undefined, { cookie: stopped.owner.cookie }), 409, "invalid_state");
  });
});

describe("the daily checks", () => {
  it("each server has a stable hour of its own, six hours from its backup and its upkeep", () => {
    const hours = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const id = `server-${i}`;
      hours.add(dailyChecksHour(id));
      expect(dailyChecksHour(id)).toBe(dailyChecksHour(id));
      expect((dailyChecksHour(id) - dailyBackupHour(id) + 24) % 24).toBe(6);
      expect((dailyUpkeepHour(id) - dailyChecksHour(id) + 24) % 24).toBe(6);
    }
    expect(hours.size).toBe(24);
  });

  it("run once a day for each running homeserver, at its hour; a run the host never answered leaves its checks not checked", async () => {
    const server = await runningServer();
    const stopped = await runningServer();
    await env.DB.prepare("UPDATE servers SET status = 'stopped' WHERE id = ?").bind(stopped.id).run();
    const hour = dailyChecksHour(server.id);
    for (let h = 0; h < 24; h++) await cronAt(0, h);
    await cronAt(0, hour);

    const sent = await checkJobs(server.id);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.getUTCHours()).toBe(hour);
    expect(await checkJobs(stopped.id)).toEqual([]);
    await jobOf(server.agent, "homeserver.checks");

    // The agent never answers; the next day's pass finds the job past its deadline and sends another.
    await cronAt(1, hour);
    const cookie = await logIn(server.owner.email);
    const { checks } = await checksOf(cookie, server.id);
    const isolation = checks.find((check) => check.id === "isolation")!;
    expect(isolation.latest).toMatchObject({ result: "could_not_check", summary: "The host did not answer." });
    expect(checks.find((check) => check.id === "backups")!.history).toHaveLength(2);
    expect(await checkJobs(server.id)).toHaveLength(2);
  });
});

describe("results", () => {
  it("are shown for 30 days, then the hourly cron deletes them; the data export holds every one kept", async () => {
    const server = await runningServer();
    const [user] = (await env.DB.prepare("SELECT user_id FROM servers WHERE id = ?").bind(server.id).all<{ user_id: string }>()).results;
    const seed = (checkId: string, serverId: string | null, checkedAt: number, summary: string) =>
      env.DB.prepare(
        "INSERT INTO check_results (id, user_id, server_id, check_id, result, summary, facts, checked_at) VALUES (?, ?, ?, ?, 'holds', ?, '[]', ?)",
      )
        .bind(crypto.randomUUID(), user!.user_id, serverId, checkId, summary, checkedAt)
        .run();
    await seed("isolation", server.id, Date.now() - 31 * DAY, "a month ago");
    await seed("isolation", server.id, Date.now() - 29 * DAY, "four weeks ago");
    await seed("card-data", null, Date.now() - 2 * DAY, "the account's");

    const shown = (await checksOf(server.owner.cookie, server.id)).checks;
    expect(shown.find((check) => check.id === "isolation")!.history.map((entry) => entry.summary)).toEqual(["four weeks ago"]);
    expect(shown.find((check) => check.id === "card-data")!.latest!.summary).toBe("the account's");

    // An hour that is not this homeserver's checks hour: a daily run would add results of its own.
    const hoursOff = (dailyChecksHour(server.id) + 12 - new Date().getUTCHours() + 24) % 24;
    await runCron(new Date(Date.now() + hoursOff * HOUR));
    const kept = await env.DB.prepare("SELECT summary FROM check_results WHERE user_id = ? ORDER BY checked_at").bind(user!.user_id).all();
    expect(kept.results.map((row) => row.summary)).toEqual(["four weeks ago", "the account's"]);

    const exported = (await (await call("/api/me/export", { cookie: await logIn(server.owner.email) })).json()) as {
      account: { checks: { checkId: string; summary: string }[] };
      matrixMetadata: { servers: { id: string; checks: { checkId: string; result: string; summary: string; checkedAt: string }[] }[] };
    };
    expect(exported.account.checks).toMatchObject([{ checkId: "card-data", summary: "the account's" }]);
    expect(exported.matrixMetadata.servers.find((row) => row.id === server.id)!.checks).toMatchObject([
      { checkId: "isolation", result: "holds", summary: "four weeks ago" },
    ]);
  });
});
