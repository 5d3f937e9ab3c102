import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { subscriber } from "../billing/stripe-helpers";
import { succeeded, type DeliveredJob, type FakeAgent } from "../fleet/fleet-helpers";
import { call, cronAt, expectError, mailbox, post } from "../helpers";
import { AWAITING_DELEGATION_DAYS } from "../../../worker/checks/delegation";
import { jobOf, onlineHost, serverView, type ServerView } from "./server-helpers";

// A homeserver named by its owner's domain is made only once that domain delegates to it: until its
// well-knowns pass the check (or its owner confirms they publish them later), nothing exists on its
// host, and the API says so.

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

interface DelegationView {
  serverName: string;
  status: string;
  check: { result: string; summary: string } | null;
  checking: boolean;
  publishLaterWarning: string | null;
}

const count = async (sql: string, ...values: unknown[]) =>
  (await env.DB.prepare(sql)
    .bind(...values)
    .first<number>("n"))!;
const jobsOf = (serverId: string, kind: string) => count("SELECT count(*) AS n FROM jobs WHERE server_id = ? AND kind = ?", serverId, kind);
const workloadsOf = (serverId: string) => count("SELECT count(*) AS n FROM workloads WHERE id = ?", serverId);
/** The server made on the cron clock's first day (cronAt's day 0, 2031-01-10 at midnight UTC). */
const createdOnCronDay = (serverId: string) =>
  env.DB.prepare("UPDATE servers SET created_at = ? WHERE id = ?")
    .bind(Date.UTC(2031, 0, 10), serverId)
    .run();
const jobStatus = (id: string) => env.DB.prepare("SELECT status FROM jobs WHERE id = ?").bind(id).first<string>("status");

async function delegation(cookie: string, id: string): Promise<DelegationView> {
  const response = await call(`/api/servers/${id}/delegation`, { cookie });
  expect(response.status).toBe(200);
  return response.json();
}

/** A customer's new homeserver named by their domain, as created: waiting, and the host's first delegation check. */
async function waitingServer(options: { publishDelegationLater?: true } = {}) {
  const { agent } = await onlineHost();
  const owner = await subscriber();
  const serverName = `acme-${crypto.randomUUID().slice(0, 8)}.test`;
  const response = await post(
    "/api/servers",
    { name: `hs-${crypto.randomUUID().slice(0, 8)}`, region: "us-east", serverName, ...options },
    { cookie: owner.cookie },
  );
  expect(response.status).toBe(201);
  const view = (await response.json()) as ServerView;
  return { agent, owner, serverName, view };
}

function answer(
  agent: FakeAgent,
  job: DeliveredJob,
  result: "holds" | "fails",
  summary = "Delegation is broken: https://acme.test/.well-known/matrix/server answers HTTP 404.",
) {
  agent.send(succeeded(job, { outcome: { result, evidence: { summary, facts: [] } } }));
}

describe("a homeserver named by its owner's domain waits for its delegation", () => {
  it("is placed but not made, the host is asked to check the domain, and a failing check leaves nothing made", async () => {
    const { agent, owner, serverName, view } = await waitingServer();
    expect(view).toMatchObject({
      serverName,
      status: "awaiting_delegation",
      statusReason: "waiting for the well-knowns on its domain to pass the delegation check",
    });
    const { job } = await jobOf(agent, "homeserver.delegation_check");
    expect(job.payload).toEqual({ serverId: view.id, serverName, publicBaseUrl: `https://${view.name}.berth.example/` });
    expect(await delegation(owner.cookie, view.id)).toMatchObject({
      status: "awaiting_delegation",
      check: null,
      checking: true,
      publishLaterWarning: expect.stringContaining("cannot federate"),
    });

    answer(agent, job, "fails");
    await vi.waitFor(async () => expect((await delegation(owner.cookie, view.id)).check?.result).toBe("fails"));
    expect(await delegation(owner.cookie, view.id)).toMatchObject({
      status: "awaiting_delegation",
      check: { result: "fails", summary: "Delegation is broken: https://acme.test/.well-known/matrix/server answers HTTP 404." },
      checking: false,
    });
    expect(await jobsOf(view.id, "homeserver.provision")).toBe(0);
    expect(await workloadsOf(view.id)).toBe(0);
    // Its owner is setting it up and sees it on its page: no mail about a delegation that never worked.
    expect((await mailbox(owner.email)).filter((mail) => mail.subject.includes("delegation"))).toEqual([]);
  });

  it("is set up once a check passes: checked again on its owner's request, then provisioned once", async () => {
    const { agent, owner, view } = await waitingServer();
    answer(agent, (await jobOf(agent, "homeserver.delegation_check")).job, "fails");
    await vi.waitFor(async () => expect((await delegation(owner.cookie, view.id)).check?.result).toBe("fails"));

    const again = await post(`/api/servers/${view.id}/delegation/check`, undefined, { cookie: owner.cookie });
    expect(again.status).toBe(202);
    const { job } = await jobOf(agent, "homeserver.delegation_check");
    expect(job.id).toBe(((await again.json()) as { jobId: string }).jobId);
    await expectError(await post(`/api/servers/${view.id}/delegation/check`, undefined, { cookie: owner.cookie }), 409, "checks_running");
    answer(agent, job, "holds");

    const provision = await jobOf(agent, "homeserver.provision");
    expect(provision.job.payload).toMatchObject({ serverId: view.id, serverName: view.serverName, publicBaseUrl: `https://${view.name}.berth.example/` });
    expect((await serverView(owner.cookie, view.id)).status).toBe("provisioning");
    expect(await workloadsOf(view.id)).toBe(1);
    agent.send(succeeded(provision.job));
    await vi.waitFor(async () => expect((await serverView(owner.cookie, view.id)).status).toBe("running"));
    expect(await jobsOf(view.id, "homeserver.provision")).toBe(1);
  });

  it("is set up at once when its owner confirms they publish later, and only once", async () => {
    const { agent, owner, view } = await waitingServer();
    const first = await jobOf(agent, "homeserver.delegation_check");
    await expectError(await post(`/api/servers/${view.id}/delegation/publish-later`, {}, { cookie: owner.cookie }), 400, "validation_failed");
    await expectError(await post(`/api/servers/${view.id}/delegation/publish-later`, { confirm: "yes" }, { cookie: owner.cookie }), 400, "validation_failed");
    expect(await jobsOf(view.id, "homeserver.provision")).toBe(0);

    const confirmed = await post(`/api/servers/${view.id}/delegation/publish-later`, { confirm: true }, { cookie: owner.cookie });
    expect(confirmed.status).toBe(202);
    expect(((await confirmed.json()) as ServerView).status).toBe("provisioning");
    await jobOf(agent, "homeserver.provision");
    await expectError(await post(`/api/servers/${view.id}/delegation/publish-later`, { confirm: true }, { cookie: owner.cookie }), 409, "invalid_state");
    // The check sent before still comes back: a pass now provisions nothing more.
    answer(agent, first.job, "holds");
    await vi.waitFor(async () => expect(await jobStatus(first.job.id)).toBe("succeeded"));
    expect(await jobsOf(view.id, "homeserver.provision")).toBe(1);
    const audit = await env.DB.prepare("SELECT actor, detail FROM audit_log WHERE target = ? AND action = 'server.provisioning_started'").bind(view.id).all();
    expect(audit.results).toEqual([{ actor: expect.stringMatching(/^user:/), detail: JSON.stringify({ delegation: "publish_later" }) }]);
  });

  it("is set up at once, with no check first, when its owner says so when creating it", async () => {
    const { agent, owner, view } = await waitingServer({ publishDelegationLater: true });
    expect(view.status).toBe("provisioning");
    await jobOf(agent, "homeserver.provision");
    expect(await jobsOf(view.id, "homeserver.delegation_check")).toBe(0);
    expect((await delegation(owner.cookie, view.id)).publishLaterWarning).toBeNull();
  });

  it("is asked about again every hour while it waits, not while a check was just sent", async () => {
    const { agent, view } = await waitingServer();
    answer(agent, (await jobOf(agent, "homeserver.delegation_check")).job, "fails");
    await vi.waitFor(async () => expect(await count("SELECT count(*) AS n FROM check_results WHERE server_id = ?", view.id)).toBe(1));
    // The cron's clock runs in 2031 (cronAt): made that day, the server still waits (it has not lapsed),
    // and the first check is long pruned: count those sent since.
    await createdOnCronDay(view.id);
    const sentByCron = () =>
      count("SELECT count(*) AS n FROM jobs WHERE server_id = ? AND kind = 'homeserver.delegation_check' AND created_at >= ?", view.id, Date.UTC(2031, 0, 10));
    await cronAt(0, 5);
    expect(await sentByCron()).toBe(1);
    await jobOf(agent, "homeserver.delegation_check");
    await cronAt(0, 5);
    expect(await sentByCron()).toBe(1);
    // Unanswered, it ran out of time: an hour later, the host is asked again.
    await cronAt(0, 6);
    expect(await sentByCron()).toBe(2);
  });

  it(`lapses after ${AWAITING_DELEGATION_DAYS} days without a passing check: deleted with nothing made, its domain free, its owner told why`, async () => {
    const { agent, owner, serverName, view } = await waitingServer();
    answer(agent, (await jobOf(agent, "homeserver.delegation_check")).job, "fails");
    await vi.waitFor(async () => expect(await count("SELECT count(*) AS n FROM check_results WHERE server_id = ?", view.id)).toBe(1));
    await createdOnCronDay(view.id);
    // The cron runs on its own clock, where sessions made today have expired: the record is read directly.
    const status = () => env.DB.prepare("SELECT status FROM servers WHERE id = ?").bind(view.id).first<string>("status");
    await cronAt(AWAITING_DELEGATION_DAYS - 1, 23);
    expect(await status()).toBe("awaiting_delegation");
    expect((await mailbox(owner.email)).filter((mail) => mail.subject.includes("not set up"))).toEqual([]);

    await cronAt(AWAITING_DELEGATION_DAYS, 1);
    expect(await status()).toBe("deleted");
    expect(await count("SELECT count(*) AS n FROM jobs WHERE server_id = ? AND kind IN ('homeserver.provision', 'homeserver.delete')", view.id)).toBe(0);
    // Its domain is claimed by no homeserver: anyone who can publish on it may use it.
    expect(await count("SELECT count(*) AS n FROM servers WHERE server_name = ?", serverName)).toBe(0);
    const told = (await mailbox(owner.email)).filter((mail) => mail.subject.includes("not set up"));
    expect(told).toEqual([expect.objectContaining({ subject: `${serverName}: not set up, its domain's well-knowns never passed` })]);
    expect(told[0]!.text).toContain(`waited ${AWAITING_DELEGATION_DAYS} days`);
  });

  it("is deleted at once, with nothing asked of its host, and its domain is free again", async () => {
    const { owner, serverName, view } = await waitingServer();
    const deleted = await call(`/api/servers/${view.id}`, { method: "DELETE", cookie: owner.cookie });
    expect(deleted.status).toBe(202);
    expect(((await deleted.json()) as ServerView).status).toBe("deleted");
    expect(await count("SELECT count(*) AS n FROM jobs WHERE server_id = ? AND kind IN ('homeserver.backup', 'homeserver.delete')", view.id)).toBe(0);
    const next = await subscriber();
    const again = await post("/api/servers", { name: `hs-${crypto.randomUUID().slice(0, 8)}`, region: "us-east", serverName }, { cookie: next.cookie });
    expect(again.status).toBe(201);
  });
});

describe("misuse: another customer, or nobody, cannot check or set up a waiting homeserver", () => {
  it("gets the same 404 as for a server that does not exist, and nothing is sent", async () => {
    const { owner, view } = await waitingServer();
    const stranger = await subscriber();
    for (const id of [view.id, crypto.randomUUID()]) {
      await expectError(await post(`/api/servers/${id}/delegation/check`, undefined, { cookie: stranger.cookie }), 404, "not_found");
      await expectError(await post(`/api/servers/${id}/delegation/publish-later`, { confirm: true }, { cookie: stranger.cookie }), 404, "not_found");
    }
    await expectError(await post(`/api/servers/${view.id}/delegation/check`), 401);
    await expectError(await post(`/api/servers/${view.id}/delegation/publish-later`, { confirm: true }), 401);
    expect(await jobsOf(view.id, "homeserver.delegation_check")).toBe(1);
    expect(await jobsOf(view.id, "homeserver.provision")).toBe(0);
    expect((await serverView(owner.cookie, view.id)).status).toBe("awaiting_delegation");
  });

  it("publishing later is refused without a domain, or said any other way than true", async () => {
    await onlineHost();
    const { cookie } = await subscriber();
    const name = `hs-${crypto.randomUUID().slice(0, 8)}`;
    await expectError(await post("/api/servers", { name, region: "us-east", publishDelegationLater: true }, { cookie }), 400, "validation_failed");
    await expectError(
      await post("/api/servers", { name, region: "us-east", serverName: "acme-x.test", publishDelegationLater: false }, { cookie }),
      400,
      "validation_failed",
    );
    expect(await count("SELECT count(*) AS n FROM servers WHERE name = ?", name)).toBe(0);
  });
});
