import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { planById } from "../../../worker/billing/plans";
import { HOST_RESERVED_MEMORY_MIB, newcomerMemoryMiB } from "../../../worker/servers/admission";
import { PLAN_CHANGE_WAITING } from "../../../worker/servers/plan-changes";
import { call, runCron } from "../helpers";
import { deliverAll, emulator, stripeGet, subscriber, takeDeliveries, type Subscriber } from "../billing/stripe-helpers";
import { succeeded, type FakeAgent } from "../fleet/fleet-helpers";
import { operatorCookie } from "../fleet/fleet-helpers";
import { anotherHost, completeMove, migrate, waitForPhase } from "./migration-helpers";
import { create, jobOf, onlineHost, serverView, type ServerView } from "./server-helpers";

// A plan changed in Stripe's Customer Portal changes the running homeserver's limits.

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

/** What the portal's "Switch to <plan>" does: the subscription's item gets the plan's price; Stripe tells us. */
async function switchPlan(owner: Subscriber, planId: string): Promise<void> {
  const subscription = await stripeGet<{ items: { data: { id: string }[] } }>(`/v1/subscriptions/${owner.subscriptionId}`);
  const form = new URLSearchParams({ "items[0][id]": subscription.items.data[0]!.id, "items[0][price]": planById(planId)!.stripePriceId });
  const response = await emulator(`/v1/subscriptions/${owner.subscriptionId}`, {
    method: "POST",
    headers: { authorization: "Bearer sk_test_berth_tests", "content-type": "application/x-www-form-urlencoded" },
    body: form.toString(),
  });
  expect(response.status).toBe(200);
  await deliverAll(await takeDeliveries(owner.customerId));
}

/** A running homeserver on `plan`, on a fresh host of `memoryMiB`. */
async function runningOn(plan: string, memoryMiB?: number) {
  const { agent, host } = await onlineHost("us-east", memoryMiB);
  const owner = await subscriber(plan);
  const created = (await (await create(owner.cookie)).json()) as ServerView;
  const { job } = await jobOf(agent, "homeserver.provision");
  expect(job.payload).toMatchObject({ planId: plan, resources: planById(plan)!.resources, maxUsers: planById(plan)!.maxUsers });
  agent.send(succeeded(job, { synapseVersion: "1.163.2" }));
  await vi.waitFor(async () => expect(await serverView(owner.cookie, created.id)).toMatchObject({ status: "running", plan, planApplied: true }));
  return { agent, host, owner, id: created.id };
}

async function resized(agent: FakeAgent, cookie: string, id: string, plan: string) {
  const resize = await jobOf(agent, "homeserver.resize");
  expect(resize.job.payload).toEqual({ serverId: id, planId: plan, resources: planById(plan)!.resources, maxUsers: planById(plan)!.maxUsers });
  expect(await serverView(cookie, id)).toMatchObject({ plan, planApplied: false, status: "running" });
  agent.send(succeeded(resize.job));
  await vi.waitFor(async () => expect(await serverView(cookie, id)).toMatchObject({ plan, planApplied: true, status: "running" }));
}

describe("plan changes", () => {
  it("waits while the homeserver moves to another host, then applies there", async () => {
    const { agent, host, owner, id } = await runningOn("starter");
    const operator = await operatorCookie();
    const target = await anotherHost(operator);
    expect((await migrate(operator, id, target.host.hostId)).status).toBe(202);
    await switchPlan(owner, "team");
    expect(await serverView(owner.cookie, id)).toMatchObject({ plan: "starter", status: "moving" });

    await completeMove(id, { host, agent }, target);
    await waitForPhase(operator, id, "succeeded");
    await runCron();
    await resized(target.agent, owner.cookie, id, "team");
    expect(agent.messages.some((message: any) => message?.job?.kind === "homeserver.resize")).toBe(false);
  });

  it("an upgrade gives the running homeserver the larger plan's limits, and the record and dashboard say so", async () => {
    const { agent, owner, id } = await runningOn("starter");
    await switchPlan(owner, "team");
    await resized(agent, owner.cookie, id, "team");

    const workload = await env.DB.prepare("SELECT spec FROM workloads WHERE id = ?").bind(id).first<{ spec: string }>();
    expect(JSON.parse(workload!.spec)).toMatchObject({ planId: "team", resources: planById("team")!.resources, maxUsers: planById("team")!.maxUsers });
    const page = await (await call(`/servers/${id}`, { cookie: owner.cookie, headers: { accept: "text/html" } })).text();
    expect(page).toContain("Plan: Team");
  });

  it("a downgrade gives it the smaller plan's limits", async () => {
    const { agent, owner, id } = await runningOn("team");
    await switchPlan(owner, "starter");
    await resized(agent, owner.cookie, id, "starter");
  });

  it("an upgrade that does not fit on the host waits, saying so, and is applied once there is room", async () => {
    // Room for one new Starter homeserver only: not for it on Team's larger floor.
    const { agent, host, owner, id } = await runningOn("starter", HOST_RESERVED_MEMORY_MIB + newcomerMemoryMiB(planById("starter")!));
    await switchPlan(owner, "team");
    await vi.waitFor(async () => expect(await serverView(owner.cookie, id)).toMatchObject({ plan: "starter", statusReason: PLAN_CHANGE_WAITING }));
    const alert = await env.DB.prepare("SELECT detail FROM audit_log WHERE action = 'server.plan_change_waiting' AND target = ?")
      .bind(id)
      .first<{ detail: string }>();
    expect(JSON.parse(alert!.detail)).toEqual({ from: "starter", to: "team" });
    expect(await env.DB.prepare("SELECT count(*) AS n FROM jobs WHERE kind = 'homeserver.resize' AND host_id = ?").bind(host.hostId).first()).toEqual({ n: 0 });

    await env.DB.prepare("UPDATE hosts SET memory_mib = 8192 WHERE id = ?").bind(host.hostId).run();
    await runCron();
    await resized(agent, owner.cookie, id, "team");
    expect((await serverView(owner.cookie, id)).statusReason).toBeNull();
  });

  it("a resize the host failed is sent again by the hourly run", async () => {
    const { agent, owner, id } = await runningOn("starter");
    await switchPlan(owner, "team");
    const first = await jobOf(agent, "homeserver.resize");
    agent.send({ type: "job.result", id: first.job.id, ok: false, error: "docker: busy" });
    await vi.waitFor(async () => expect(await env.DB.prepare("SELECT status FROM jobs WHERE id = ?").bind(first.job.id).first()).toEqual({ status: "failed" }));
    expect(await serverView(owner.cookie, id)).toMatchObject({ plan: "team", planApplied: false });
    await runCron();
    await resized(agent, owner.cookie, id, "team");
  });
});
