import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { call, expectError, logIn, post, runCron } from "../helpers";
import { deliverAll, emulatorControl, subscriber, takeDeliveries, type Subscriber } from "../billing/stripe-helpers";
import { operatorCookie, succeeded, type FakeAgent } from "../fleet/fleet-helpers";
import { serverWithBackup } from "../backups/backup-helpers";
import { create, jobOf, onlineHost, runningServer, serverView, type ServerView } from "./server-helpers";

// Billing's decision reaches a homeserver whatever it is doing, and no late job outcome undoes it.

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

/** Stripe marks the subscription unpaid: the account is suspended at once, and the webhook's follow-up work has run. */
async function suspendAccount(owner: Subscriber): Promise<void> {
  await emulatorControl(`/_emulator/subscriptions/${owner.subscriptionId}/mark-unpaid`);
  await deliverAll(await takeDeliveries(owner.customerId));
  await vi.waitFor(async () => {
    const pending = await env.DB.prepare(
      "SELECT count(*) AS n FROM entitlement_events e JOIN billing_customers c ON c.user_id = e.user_id WHERE c.stripe_customer_id = ? AND e.handled_at IS NULL",
    )
      .bind(owner.customerId)
      .first<{ n: number }>();
    expect(pending!.n).toBe(0);
  });
  const state = await env.DB.prepare("SELECT e.state FROM entitlements e JOIN billing_customers c ON c.user_id = e.user_id WHERE c.stripe_customer_id = ?")
    .bind(owner.customerId)
    .first<{ state: string }>();
  expect(state!.state).toBe("suspended");
}

async function jobsOf(serverId: string, kind: string): Promise<number> {
  const row = await env.DB.prepare("SELECT count(*) AS n FROM jobs WHERE kind = ? AND server_id = ?").bind(kind, serverId).first<{ n: number }>();
  return row!.n;
}

/** The host suspends it: the server ends suspended. */
async function suspendedByHost(agent: FakeAgent, cookie: string, id: string): Promise<void> {
  const suspend = await jobOf(agent, "homeserver.suspend");
  expect(suspend.job.payload).toEqual({ serverId: id });
  agent.send(succeeded(suspend.job));
  await vi.waitFor(async () => expect(await serverView(cookie, id)).toMatchObject({ status: "suspended" }));
}

describe("suspension reaches a server in any state", () => {
  it("provisioning, then suspended: the server is suspended once provisioning ends", async () => {
    const { agent } = await onlineHost();
    const owner = await subscriber();
    const created = (await (await create(owner.cookie)).json()) as ServerView;
    const provision = await jobOf(agent, "homeserver.provision");
    await suspendAccount(owner);
    expect(await serverView(owner.cookie, created.id)).toMatchObject({ status: "provisioning" });
    expect(await jobsOf(created.id, "homeserver.suspend")).toBe(0);

    agent.send(succeeded(provision.job, { synapseVersion: "1.163.2" }));
    await suspendedByHost(agent, owner.cookie, created.id);
  });

  it("provisioned, then suspended: suspended at once", async () => {
    const { agent, owner, id } = await runningServer();
    await suspendAccount(owner);
    await suspendedByHost(agent, owner.cookie, id);
  });

  it("a failed server is suspended too", async () => {
    const { agent } = await onlineHost();
    const owner = await subscriber();
    const created = (await (await create(owner.cookie)).json()) as ServerView;
    const provision = await jobOf(agent, "homeserver.provision");
    agent.send({ type: "job.result", id: provision.job.id, ok: false, error: "Synapse failed its health check" });
    await vi.waitFor(async () => expect(await serverView(owner.cookie, created.id)).toMatchObject({ status: "failed" }));
    await suspendAccount(owner);
    await suspendedByHost(agent, owner.cookie, created.id);
  });

  it("restoring, then suspended: suspended once the restore ends, whether it worked or not", async () => {
    for (const ok of [true, false]) {
      const { agent, owner, id, backupId } = await serverWithBackup();
      expect((await post(`/api/servers/${id}/restore`, { backupId }, { cookie: owner.cookie })).status).toBe(202);
      const restore = await jobOf(agent, "homeserver.restore");
      await suspendAccount(owner);
      expect(await serverView(owner.cookie, id)).toMatchObject({ status: "restoring" });
      agent.send(ok ? succeeded(restore.job) : { type: "job.result", id: restore.job.id, ok: false, error: "no" });
      await suspendedByHost(agent, owner.cookie, id);
    }
  });

  it("upgrading, then suspended: suspended once the upgrade ends", async () => {
    const { agent, owner, id } = await runningServer();
    expect((await post(`/api/admin/servers/${id}/upgrade`, { image: "berth/synapse:1.164.0" }, { cookie: await operatorCookie() })).status).toBe(202);
    const upgrade = await jobOf(agent, "homeserver.upgrade");
    await suspendAccount(owner);
    expect(await serverView(owner.cookie, id)).toMatchObject({ status: "upgrading" });
    agent.send(succeeded(upgrade.job, { synapseVersion: "1.164.0" }));
    await suspendedByHost(agent, owner.cookie, id);
    expect(await serverView(owner.cookie, id)).toMatchObject({ synapseVersion: "1.164.0" });
  });

  it("a suspension the host failed is tried again by the hourly backstop, not in a loop", async () => {
    const { agent, owner, id } = await runningServer();
    await suspendAccount(owner);
    const first = await jobOf(agent, "homeserver.suspend");
    agent.send({ type: "job.result", id: first.job.id, ok: false, error: "docker: timeout" });
    await vi.waitFor(async () =>
      expect(await serverView(owner.cookie, id)).toMatchObject({ status: "failed", statusReason: "suspending failed; we try again" }),
    );
    expect(await jobsOf(id, "homeserver.suspend")).toBe(1);
    await runCron();
    await suspendedByHost(agent, owner.cookie, id);
  });
});

describe("a late job outcome never undoes billing or a deletion", () => {
  it("a start that finishes after the suspension leaves the server suspended", async () => {
    const { agent, owner, id } = await runningServer();
    expect((await post(`/api/servers/${id}/stop`, undefined, { cookie: owner.cookie })).status).toBe(202);
    const stop = await jobOf(agent, "homeserver.stop");
    agent.send(succeeded(stop.job));
    await vi.waitFor(async () => expect((await serverView(owner.cookie, id)).status).toBe("stopped"));
    expect((await post(`/api/servers/${id}/start`, undefined, { cookie: owner.cookie })).status).toBe(202);
    const start = await jobOf(agent, "homeserver.start");

    await suspendAccount(owner);
    const suspend = await jobOf(agent, "homeserver.suspend");
    // The host finishes the start it got first, then the suspension.
    agent.send(succeeded(start.job, { synapseVersion: "1.163.2" }));
    await vi.waitFor(async () =>
      expect(await env.DB.prepare("SELECT status FROM jobs WHERE id = ?").bind(start.job.id).first()).toEqual({ status: "succeeded" }),
    );
    expect((await serverView(owner.cookie, id)).status).toBe("suspended");
    agent.send(succeeded(suspend.job));
    await vi.waitFor(async () =>
      expect(await env.DB.prepare("SELECT status FROM jobs WHERE id = ?").bind(suspend.job.id).first()).toEqual({ status: "succeeded" }),
    );
    expect((await serverView(owner.cookie, id)).status).toBe("suspended");
  });

  it("a stop that finishes after a deletion began leaves the server deleting", async () => {
    const { agent, owner, id } = await runningServer();
    expect((await post(`/api/servers/${id}/stop`, undefined, { cookie: owner.cookie })).status).toBe(202);
    const stop = await jobOf(agent, "homeserver.stop");
    await suspendAccount(owner);
    await suspendedByHost(agent, owner.cookie, id);
    const cookie = await logIn(owner.email);
    const deleting = await call(`/api/servers/${id}`, { method: "DELETE", cookie });
    expect(deleting.status).toBe(202);
    await jobOf(agent, "homeserver.backup");

    agent.send(succeeded(stop.job));
    await vi.waitFor(async () =>
      expect(await env.DB.prepare("SELECT status FROM jobs WHERE id = ?").bind(stop.job.id).first()).toEqual({ status: "succeeded" }),
    );
    expect(await serverView(cookie, id)).toMatchObject({ status: "deleting", statusReason: "taking a final backup" });
  });
});

describe("starting and restoring need an account that may run", () => {
  it("are refused while billing has suspended the account, even before its servers have been moved", async () => {
    const { agent, owner, id, backupId } = await serverWithBackup();
    expect((await post(`/api/servers/${id}/stop`, undefined, { cookie: owner.cookie })).status).toBe(202);
    const stop = await jobOf(agent, "homeserver.stop");
    agent.send(succeeded(stop.job));
    await vi.waitFor(async () => expect((await serverView(owner.cookie, id)).status).toBe("stopped"));
    // The entitlement changed; the event that moves the servers has not been handled yet.
    await env.DB.prepare("UPDATE entitlements SET state = 'suspended' WHERE user_id = (SELECT user_id FROM servers WHERE id = ?)").bind(id).run();

    await expectError(await post(`/api/servers/${id}/start`, undefined, { cookie: owner.cookie }), 403, "not_entitled");
    await expectError(await post(`/api/servers/${id}/restore`, { backupId }, { cookie: owner.cookie }), 403, "not_entitled");
    expect((await serverView(owner.cookie, id)).status).toBe("stopped");
    expect(await jobsOf(id, "homeserver.start")).toBe(0);
    expect(await jobsOf(id, "homeserver.restore")).toBe(0);
  });
});
