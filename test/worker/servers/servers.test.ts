import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { nameProblem } from "../../../worker/servers/names";
import { call, expectError, logIn, post, runCron, verifiedUser } from "../helpers";
import { deliverAll, emulatorControl, signedNow, subscriber, takeDeliveries } from "../billing/stripe-helpers";
import { operatorCookie, succeeded } from "../fleet/fleet-helpers";
import { create, jobOf, onlineHost, runningServer, serverEvents, serverView, suspendedForNonPayment, type ServerView } from "./server-helpers";

afterEach(() => vi.useRealTimers());
// Each test brings its own hosts online; those of earlier tests in this file must not take placements.
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

describe("homeserver names", () => {
  it.each([
    ["alice", null],
    ["a1-b2", null],
    ["ab", "must be 3 to 40 characters"],
    ["x".repeat(41), "must be 3 to 40 characters"],
    ["Alice", "may contain only lower-case letters a–z, digits and hyphens"],
    ["al_ice", "may contain only lower-case letters a–z, digits and hyphens"],
    ["alice.example", "may contain only lower-case letters a–z, digits and hyphens"],
    ["-alice", "must not start or end with a hyphen"],
    ["alice-", "must not start or end with a hyphen"],
    ["xn--bcher-kva", "must not look like an encoded (punycode) name"],
    ["www", "is reserved"],
    ["admin", "is reserved"],
    ["matrix", "is reserved"],
  ])("%s → %s", (name, problem) => {
    expect(nameProblem(name)).toBe(problem);
  });
});

describe("creating a homeserver", () => {
  it("needs an active subscription", async () => {
    const cookie = await logIn((await verifiedUser()).email);
    await expectError(await create(cookie), 403, "not_entitled");
    await expectError(await post("/api/servers", { name: "valid-name", region: "us-east" }), 401);
  });

  it("refuses a bad name or region with the reason", async () => {
    const { cookie } = await subscriber();
    const response = await create(cookie, "www");
    await expectError(response.clone(), 400, "validation_failed");
    expect(((await response.json()) as { error: { message: string } }).error.message).toContain("is reserved");
    await expectError(await create(cookie, "valid-name", "eu-central"), 400, "validation_failed");
  });

  it("places it on a host in the region and provisions it through the host's agent", async () => {
    const { agent, host } = await onlineHost();
    const { cookie } = await subscriber();
    const name = `alice-${crypto.randomUUID().slice(0, 6)}`;
    const response = await create(cookie, name);
    expect(response.status).toBe(201);
    const created = (await response.json()) as ServerView;
    expect(created).toMatchObject({ name, status: "provisioning", serverName: `${name}.berth.example`, homeserverUrl: `https://${name}.berth.example` });

    const { job } = await jobOf(agent, "homeserver.provision");
    expect(job.payload).toMatchObject({
      serverId: created.id,
      name,
      serverName: `${name}.berth.example`,
      resources: { memoryMiB: 1024, cpus: 1, storageGiB: 10 },
      images: { synapse: expect.any(String), postgres: expect.any(String) },
    });
    const placed = await env.DB.prepare("SELECT host_id FROM servers WHERE id = ?").bind(created.id).first<{ host_id: string }>();
    expect(placed!.host_id).toBe(host.hostId);

    agent.send({ type: "job.progress", id: job.id, progress: 0.5, message: "starting Synapse" });
    await vi.waitFor(async () => expect((await serverView(cookie, created.id)).lastJob).toMatchObject({ kind: "homeserver.provision" }));
    agent.send(succeeded(job, { synapseVersion: "1.163.2" }));
    await vi.waitFor(async () => expect(await serverView(cookie, created.id)).toMatchObject({ status: "running", synapseVersion: "1.163.2" }));
  });

  it("a failed provisioning says so in our words; the host's error stays with the job for operators", async () => {
    const { agent } = await onlineHost();
    const { cookie } = await subscriber();
    const created = (await (await create(cookie)).json()) as ServerView;
    const { job } = await jobOf(agent, "homeserver.provision");
    agent.send({ type: "job.result", id: job.id, ok: false, error: "Synapse failed its health check at /var/lib/berth/x" });
    await vi.waitFor(async () =>
      expect(await serverView(cookie, created.id)).toMatchObject({ status: "failed", statusReason: "setting up the homeserver failed" }),
    );
    const stored = await env.DB.prepare("SELECT error FROM jobs WHERE id = ?").bind(job.id).first<{ error: string }>();
    expect(stored!.error).toBe("Synapse failed its health check at /var/lib/berth/x");
  });

  it("a provisioning reported done with a result that is not the catalogue's fails the server: nothing is taken from it", async () => {
    // A compromised host might say anything; what the owner would read must be what the catalogue allows.
    const { agent } = await onlineHost();
    const { cookie } = await subscriber();
    const created = (await (await create(cookie)).json()) as ServerView;
    const { job } = await jobOf(agent, "homeserver.provision");
    const { synapseVersion: _missing, ...incomplete } = succeeded(job, { adminUserId: "Call +1 555 0100 to reset your admin password" }).result as Record<
      string,
      unknown
    >;
    agent.send({ type: "job.result", id: job.id, ok: true, result: incomplete });
    await vi.waitFor(async () =>
      expect(await serverView(cookie, created.id)).toMatchObject({ status: "failed", statusReason: "setting up the homeserver failed", synapseVersion: null }),
    );
    const stored = await env.DB.prepare("SELECT status, result, error FROM jobs WHERE id = ?")
      .bind(job.id)
      .first<{ status: string; result: string | null; error: string }>();
    expect(stored).toMatchObject({ status: "failed", result: null });
    expect(stored!.error).toMatch(/homeserver.provision: invalid result: .*synapseVersion: .*adminUserId: a Matrix user id/);
    const admin = await env.DB.prepare("SELECT admin_user_id FROM servers WHERE id = ?").bind(created.id).first<{ admin_user_id: string | null }>();
    expect(admin!.admin_user_id).toBeNull();
  });

  it("picks the least-loaded host, and says so clearly when none has room", async () => {
    const { host: small } = await onlineHost("us-west", 2048);
    const { host: big } = await onlineHost("us-west", 8192);
    const first = (await (await create((await subscriber()).cookie, undefined, "us-west")).json()) as ServerView;
    expect((await env.DB.prepare("SELECT host_id FROM servers WHERE id = ?").bind(first.id).first<{ host_id: string }>())!.host_id).toBe(big.hostId);
    void small;

    await expectError(await create((await subscriber()).cookie, undefined, "us-central"), 409, "no_capacity");
  });

  it("names are unique and one per account", async () => {
    await onlineHost();
    const name = `taken-${crypto.randomUUID().slice(0, 6)}`;
    const alice = await subscriber();
    expect((await create(alice.cookie, name)).status).toBe(201);
    await expectError(await create(alice.cookie), 409, "server_limit");
    await expectError(await create((await subscriber()).cookie, name), 409, "name_taken");
  });
});

describe("running a homeserver", () => {
  it("stop and start go through the agent; the status follows", async () => {
    const { agent, owner, id } = await runningServer();
    const stopping = await post(`/api/servers/${id}/stop`, undefined, { cookie: owner.cookie });
    expect(stopping.status).toBe(202);
    expect(((await stopping.json()) as ServerView).status).toBe("stopping");
    await expectError(await post(`/api/servers/${id}/stop`, undefined, { cookie: owner.cookie }), 409, "invalid_state");
    const stop = await jobOf(agent, "homeserver.stop");
    expect(stop.job.payload).toEqual({ serverId: id });
    agent.send(succeeded(stop.job));
    await vi.waitFor(async () => expect((await serverView(owner.cookie, id)).status).toBe("stopped"));

    expect((await post(`/api/servers/${id}/start`, undefined, { cookie: owner.cookie })).status).toBe(202);
    const start = await jobOf(agent, "homeserver.start");
    agent.send(succeeded(start.job));
    await vi.waitFor(async () => expect((await serverView(owner.cookie, id)).status).toBe("running"));
  });

  it("is reached only through its owner", async () => {
    const { id } = await runningServer();
    const stranger = await logIn((await verifiedUser()).email);
    for (const [method, path] of [
      ["GET", `/api/servers/${id}`],
      ["POST", `/api/servers/${id}/stop`],
      ["POST", `/api/servers/${id}/start`],
      ["DELETE", `/api/servers/${id}`],
      ["GET", `/api/servers/${id}/usage`],
    ] as const) {
      await expectError(await call(path, { method, cookie: stranger }), 404, "not_found");
    }
    const list = (await (await call("/api/servers", { cookie: stranger })).json()) as { servers: unknown[] };
    expect(list.servers).toEqual([]);
  });

  it("follows billing: suspended after the grace period, resumed when paid", async () => {
    const server = await runningServer();
    const { agent, owner, id } = server;
    const cookie = await suspendedForNonPayment(server);
    await expectError(await post(`/api/servers/${id}/start`, undefined, { cookie }), 409, "invalid_state");

    await emulatorControl(`/_emulator/subscriptions/${owner.subscriptionId}/renew`);
    await deliverAll(await signedNow(await takeDeliveries(owner.customerId)));
    await vi.waitFor(async () => {
      await runCron(new Date(), "* * * * *");
      return jobOf(agent, "homeserver.resume").then((resume) => agent.send(succeeded(resume.job)));
    });
    await vi.waitFor(async () => expect((await serverView(cookie, id)).status).toBe("running"));
  });

  it("the first admin's password is set through a one-time link; only a bcrypt hash reaches the host", async () => {
    const { agent, owner, id } = await runningServer();
    const response = await post(`/api/servers/${id}/admin-password-link`, undefined, { cookie: owner.cookie });
    expect(response.status).toBe(201);
    const link = (await response.json()) as { url: string; adminUserId: string };
    expect(link.adminUserId).toMatch(/^@admin:/);
    const token = new URL(link.url).searchParams.get("token")!;
    expect(new URL(link.url).pathname).toBe(`/servers/${id}/admin-password`);

    const password = "the admin's own passphrase";
    const set = await post(`/api/servers/${id}/admin-password`, { token, password }, { cookie: owner.cookie });
    expect(set.status).toBe(202);
    const { job } = await jobOf(agent, "homeserver.set_admin_password");
    expect(job.payload).toMatchObject({ serverId: id, adminUserId: link.adminUserId, passwordHash: expect.stringMatching(/^\$2[aby]\$12\$/) });
    expect(JSON.stringify(job.payload)).not.toContain(password);
    const stored = await env.DB.prepare("SELECT payload FROM jobs WHERE id = ?").bind(job.id).first<{ payload: string }>();
    expect(stored!.payload).not.toContain(password);
    const { default: bcrypt } = await import("bcryptjs");
    expect(await bcrypt.compare(password, job.payload.passwordHash)).toBe(true);

    await expectError(await post(`/api/servers/${id}/admin-password`, { token, password }, { cookie: owner.cookie }), 400, "invalid_token");
    const stranger = await logIn((await verifiedUser()).email);
    await expectError(await post(`/api/servers/${id}/admin-password-link`, undefined, { cookie: stranger }), 404);
  });

  it("streams status changes as server-sent events", async () => {
    const { agent } = await onlineHost();
    const owner = await subscriber();
    const created = (await (await create(owner.cookie)).json()) as ServerView;
    const stream = await serverEvents(owner.cookie, created.id);
    expect((await stream.next())!.status).toBe("provisioning");
    const { job } = await jobOf(agent, "homeserver.provision");
    agent.send(succeeded(job, { synapseVersion: "1.163.2" }));
    for (let next = await stream.next(); next!.status !== "running"; next = await stream.next());
    await stream.cancel();
    await expectError(await call(`/api/servers/${created.id}/events`, { cookie: await logIn((await verifiedUser()).email) }), 404);
  });

  it("operators upgrade a running server; a failed upgrade leaves it running on the old version, saying so", async () => {
    const { agent, owner, id } = await runningServer();
    const operator = await operatorCookie();
    await expectError(await post(`/api/admin/servers/${id}/upgrade`, { image: "berth/synapse:x" }, { cookie: owner.cookie }), 403, "operator_only");
    const response = await post(`/api/admin/servers/${id}/upgrade`, { image: "berth/synapse:broken" }, { cookie: operator });
    expect(response.status).toBe(202);
    expect(((await response.json()) as ServerView).status).toBe("upgrading");
    await expectError(await post(`/api/admin/servers/${id}/upgrade`, { image: "berth/synapse:other" }, { cookie: operator }), 409, "invalid_state");
    const failed = await jobOf(agent, "homeserver.upgrade");
    expect(failed.job.payload).toEqual({ serverId: id, image: "berth/synapse:broken" });
    agent.send({ type: "job.result", id: failed.job.id, ok: false, error: "the new version failed its health check" });
    await vi.waitFor(async () =>
      expect(await serverView(owner.cookie, id)).toMatchObject({
        status: "running",
        synapseVersion: "1.163.2",
        statusReason: "the upgrade failed and was rolled back",
      }),
    );
    await post(`/api/admin/servers/${id}/upgrade`, { image: "berth/synapse:1.164.0" }, { cookie: operator });
    const good = await jobOf(agent, "homeserver.upgrade");
    agent.send(succeeded(good.job, { synapseVersion: "1.164.0" }));
    await vi.waitFor(async () =>
      expect(await serverView(owner.cookie, id)).toMatchObject({ status: "running", synapseVersion: "1.164.0", statusReason: null }),
    );
  });
});
