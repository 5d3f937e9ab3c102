import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { dailyChecksHour } from "../../../worker/checks/runs";
import { succeeded, type DeliveredJob } from "../fleet/fleet-helpers";
import { call, cronAt, logIn, mailbox, post } from "../helpers";
import { jobOf, onlineHost, runningCustomNamedServer, runningServer } from "../servers/server-helpers";

// The delegation check of a homeserver whose Matrix server name is its owner's domain: sent to the
// host that serves it with the other checks (daily and on demand), recorded from its answer, shown to
// the owner, and mailed to them once when a working delegation breaks.

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

type CustomNamed = Awaited<ReturnType<typeof runningCustomNamedServer>>;

interface CheckView {
  id: string;
  latest: { result: string; summary: string } | null;
  history: { result: string }[];
}

async function checksOf(cookie: string, serverId: string): Promise<CheckView[]> {
  const response = await call(`/api/servers/${serverId}/checks`, { cookie });
  expect(response.status).toBe(200);
  return ((await response.json()) as { checks: CheckView[] }).checks;
}

const delegationOf = async (cookie: string, serverId: string) => (await checksOf(cookie, serverId)).find((check) => check.id === "delegation");

const delegationJobs = async (serverId: string) =>
  (await env.DB.prepare("SELECT id FROM jobs WHERE server_id = ? AND kind = 'homeserver.delegation_check'").bind(serverId).all()).results.length;

const recorded = async (jobId: string) =>
  (
    await env.DB.prepare("SELECT check_id, result, summary FROM check_results WHERE job_id = ?")
      .bind(jobId)
      .all<{ check_id: string; result: string; summary: string }>()
  ).results;

const brokenMails = async (email: string) => (await mailbox(email)).filter((mail) => mail.subject.includes("delegation is broken"));

const jobStatus = (id: string) => env.DB.prepare("SELECT status FROM jobs WHERE id = ?").bind(id).first<string>("status");

/** "Check now" is limited to three an hour per homeserver: these tests ask more often. */
const allowChecks = () => env.DB.prepare("DELETE FROM rate_limit_windows WHERE key LIKE 'checks_server:%'").run();

/** The owner asks for the checks; returns the delegation job as the host receives it (the other checks are answered). */
async function checkNow(server: CustomNamed): Promise<DeliveredJob> {
  expect((await post(`/api/servers/${server.id}/checks/run`, undefined, { cookie: server.owner.cookie })).status).toBe(202);
  const checks = await jobOf(server.agent, "homeserver.checks");
  server.agent.send(succeeded(checks.job));
  await vi.waitFor(async () => expect(await jobStatus(checks.job.id)).toBe("succeeded"));
  return (await jobOf(server.agent, "homeserver.delegation_check")).job;
}

/** The host's answer to a delegation job: holds, or fails with `summary`. */
async function answer(server: CustomNamed, job: DeliveredJob, result: "holds" | "fails", summary = `Delegation from ${server.serverName} is broken.`) {
  server.agent.send(succeeded(job, { outcome: { result, evidence: { summary, facts: [] } } }));
  await vi.waitFor(async () => expect(await recorded(job.id)).toHaveLength(1));
}

describe("the delegation check", () => {
  it("is asked of the serving host with the other checks, naming the domain and where it is served, and its answer is shown to the owner", async () => {
    const server = await runningCustomNamedServer();
    // Its first check passed before it was set up.
    expect((await delegationOf(server.owner.cookie, server.id))!.history.map((entry) => entry.result)).toEqual(["holds"]);
    const job = await checkNow(server);
    expect(job.payload).toEqual({ serverId: server.id, serverName: server.serverName, publicBaseUrl: `https://${server.name}.berth.example/` });
    await answer(
      server,
      job,
      "fails",
      `Delegation from ${server.serverName} is broken: https://${server.serverName}/.well-known/matrix/client answers HTTP 404.`,
    );
    expect((await delegationOf(server.owner.cookie, server.id))!.latest).toMatchObject({
      result: "fails",
      summary: `Delegation from ${server.serverName} is broken: https://${server.serverName}/.well-known/matrix/client answers HTTP 404.`,
    });
  });

  it("is not asked, nor listed, for a homeserver named under our domain", async () => {
    const server = await runningServer();
    expect((await post(`/api/servers/${server.id}/checks/run`, undefined, { cookie: server.owner.cookie })).status).toBe(202);
    await jobOf(server.agent, "homeserver.checks");
    expect(await delegationJobs(server.id)).toBe(0);
    expect(await delegationOf(server.owner.cookie, server.id)).toBeUndefined();
  });

  it("runs with the daily checks, at the server's hour", async () => {
    const server = await runningCustomNamedServer();
    await cronAt(3, dailyChecksHour(server.id));
    const { job } = await jobOf(server.agent, "homeserver.delegation_check");
    expect(job.payload.serverName).toBe(server.serverName);
    // The one before it was set up, and the daily one.
    expect(await delegationJobs(server.id)).toBe(2);
  });

  it("a host that did not answer leaves it not checked, never holding", async () => {
    const server = await runningCustomNamedServer();
    const job = await checkNow(server);
    server.agent.send({ type: "job.result", id: job.id, ok: false, error: "the agent crashed" });
    await vi.waitFor(async () =>
      expect(await recorded(job.id)).toEqual([{ check_id: "delegation", result: "could_not_check", summary: "The host did not answer." }]),
    );
  });
});

describe("misuse: a host cannot write a delegation verdict into another record", () => {
  it("an answer naming another server or another domain, or from a host that no longer serves it, is not recorded", async () => {
    const server = await runningCustomNamedServer();
    const other = await runningCustomNamedServer();
    for (const fields of [{ serverId: other.id }, { serverName: other.serverName }]) {
      const job = await checkNow(server);
      server.agent.send(succeeded(job, { ...fields, outcome: { result: "holds", evidence: { summary: "Fine.", facts: [] } } }));
      await vi.waitFor(async () => expect(await jobStatus(job.id)).toBe("succeeded"));
      expect(await recorded(job.id)).toEqual([]);
      await allowChecks();
    }
    const job = await checkNow(server);
    const elsewhere = await onlineHost();
    await env.DB.prepare("UPDATE servers SET host_id = ? WHERE id = ?").bind(elsewhere.host.hostId, server.id).run();
    server.agent.send(succeeded(job));
    await vi.waitFor(async () => expect(await jobStatus(job.id)).toBe("succeeded"));
    expect(await recorded(job.id)).toEqual([]);
    expect((await delegationOf(other.owner.cookie, other.id))!.history).toHaveLength(1);
  });
});

describe("a broken delegation is mailed to the owner once", () => {
  it("when it breaks, not again while it stays broken (a check that could not run says nothing), and again after a fix breaks anew", async () => {
    const server = await runningCustomNamedServer();
    const runs: Array<"holds" | "fails" | "none"> = ["holds", "fails", "fails", "none", "fails", "holds", "fails"];
    const mailsAfter: number[] = [];
    for (const run of runs) {
      await allowChecks();
      const job = await checkNow(server);
      if (run === "none") {
        server.agent.send({ type: "job.result", id: job.id, ok: false, error: "timed out" });
        await vi.waitFor(async () => expect(await recorded(job.id)).toHaveLength(1));
      } else await answer(server, job, run);
      mailsAfter.push((await brokenMails(server.owner.email)).length);
    }
    expect(mailsAfter).toEqual([0, 1, 1, 1, 1, 1, 2]);
    const [mail] = await brokenMails(server.owner.email);
    expect(mail!.subject).toBe(`${server.serverName}: its Matrix delegation is broken`);
    expect(mail!.text).toContain(`Delegation from ${server.serverName} is broken.`);
    expect(mail!.text).toContain(`/servers/${server.id}/security#delegation`);
    // The owner's session still sees the same story on the Security tab.
    const cookie = await logIn(server.owner.email);
    expect((await delegationOf(cookie, server.id))!.history.map((entry) => entry.result)).toEqual([
      "fails",
      "holds",
      "fails",
      "could_not_check",
      "fails",
      "fails",
      "holds",
      // Before it was set up.
      "holds",
    ]);
  });
});
