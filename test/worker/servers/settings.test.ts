import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_HOMESERVER_SETTINGS } from "../../../protocol/homeserver-settings";
import { call, expectError, type CallOptions } from "../helpers";
import { succeeded } from "../fleet/fleet-helpers";
import { administeredServer, answered, auditEntries, jobCount, nextJob, userIdOf, type AdministeredServer } from "./administration-helpers";

const settingsOf = (server: { id: string }) => `/api/servers/${server.id}/settings`;
const patch = (server: AdministeredServer, body: unknown, cookie: string | null = server.owner.cookie) =>
  call(settingsOf(server), { method: "PATCH", body, cookie } satisfies CallOptions);
const APPLY = "homeserver.settings.apply";

/** The refusal's message, once its status and code are checked. */
async function refusal(response: Response, status: number, code: string): Promise<string> {
  const { error } = (await response.clone().json()) as { error: { message: string } };
  await expectError(response, status, code);
  return error.message;
}

async function storedSettings(serverId: string) {
  const row = await env.DB.prepare("SELECT settings FROM servers WHERE id = ?").bind(serverId).first<{ settings: string | null }>();
  return row!.settings === null ? null : JSON.parse(row!.settings);
}

async function workloadSpec(serverId: string) {
  const row = await env.DB.prepare("SELECT spec FROM workloads WHERE id = ?").bind(serverId).first<{ spec: string }>();
  return JSON.parse(row!.spec) as Record<string, unknown>;
}

describe("a homeserver's settings: who may see and change them", () => {
  let server: AdministeredServer;
  let stranger: string;

  beforeAll(async () => {
    server = await administeredServer();
    stranger = (await administeredServer()).owner.cookie;
  });

  it("are the owner's only: another customer gets the same 404 as an id of nothing, and no job is sent", async () => {
    const missing = crypto.randomUUID();
    for (const [method, body] of [
      ["GET", undefined],
      ["PATCH", { registration: "token" }],
    ] as const) {
      const theirs = await call(settingsOf(server), { method, body, cookie: stranger });
      const nothing = await call(settingsOf({ id: missing }), { method, body, cookie: stranger });
      expect([method, theirs.status]).toEqual([method, 404]);
      expect(await theirs.json()).toEqual(await nothing.json());
      await expectError(await call(settingsOf(server), { method, body, cookie: null }), 401, "unauthorized");
    }
    expect(await jobCount(server.id, APPLY)).toBe(0);
  });

  it("start as what every homeserver ran with before settings existed, with the plan's upload ceiling", async () => {
    const response = await call(settingsOf(server), { cookie: server.owner.cookie });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      settings: { registration: "closed", federation: { mode: "on" }, messageRetentionDays: null, mediaRetentionDays: null, maxUploadMiB: 50 },
      plan: { id: "starter", name: "Starter", maxUploadMiB: 100 },
      change: null,
    });
  });

  it("refuse bad input with 400 in the error shape, without sending a job", async () => {
    for (const body of [
      { registration: "open" },
      { federation: "off" },
      { federation: { mode: "allow_list", servers: [] } },
      { federation: { mode: "allow_list", servers: ["*.example.org"] } },
      { federation: { mode: "allow_list", servers: ["example"] } },
      { federation: { mode: "allow_list", servers: ["exa mple.org"] } },
      { federation: { mode: "allow_list", servers: ["example.org:0"] } },
      { federation: { mode: "allow_list", servers: ["example.org:70000"] } },
      { federation: { mode: "allow_list", servers: ["https://example.org"] } },
      { federation: { mode: "allow_list", servers: ["10.0.0.1"] } },
      { federation: { mode: "allow_list", servers: ["a.example.org", "A.example.org"] } },
      { federation: { mode: "allow_list", servers: Array.from({ length: 101 }, (_, i) => `s${i}.example.org`) } },
      { federation: { mode: "off", servers: ["example.org"] } },
      { messageRetentionDays: 0 },
      { messageRetentionDays: 3651 },
      { mediaRetentionDays: 1.5 },
      { mediaRetentionDays: "30" },
      { maxUploadMiB: 0 },
      { maxUploadMiB: 10.5 },
      { enableRegistrationWithoutVerification: true },
      [],
    ]) {
      await expectError(await patch(server, body), 400, "validation_failed");
    }
    expect(await jobCount(server.id, APPLY)).toBe(0);
  });

  it("refuse an upload size above the plan's ceiling with 400 upload_size_above_plan naming it", async () => {
    const message = await refusal(await patch(server, { maxUploadMiB: 101 }), 400, "upload_size_above_plan");
    expect(message).toContain("Starter plan allows uploads of up to 100 MiB");
    await expectError(await patch(server, { maxUploadMiB: 5000 }), 400, "upload_size_above_plan");
    expect(await jobCount(server.id, APPLY)).toBe(0);
  });

  it("need an account that billing lets run homeservers (403 not_entitled) and a running homeserver (409 invalid_state)", async () => {
    const unpaid = await administeredServer();
    await env.DB.prepare("UPDATE entitlements SET state = 'suspended' WHERE user_id = ?")
      .bind(await userIdOf(unpaid.owner.email))
      .run();
    await expectError(await patch(unpaid, { registration: "token" }), 403, "not_entitled");
    const stopped = await administeredServer();
    await env.DB.prepare("UPDATE servers SET status = 'stopped' WHERE id = ?").bind(stopped.id).run();
    await expectError(await patch(stopped, { registration: "token" }), 409, "invalid_state");
    // Reading them needs neither.
    expect((await call(settingsOf(stopped), { cookie: stopped.owner.cookie })).status).toBe(200);
    expect((await call(settingsOf(unpaid), { cookie: unpaid.owner.cookie })).status).toBe(200);
    expect([await jobCount(unpaid.id, APPLY), await jobCount(stopped.id, APPLY)]).toEqual([0, 0]);
  });
});

describe("a homeserver's settings: a change", () => {
  let server: AdministeredServer;

  beforeAll(async () => {
    server = await administeredServer();
  });

  it("is sent whole to the host, recorded once the host applied it, audited by what changed, and given to a host that provisions the server again", async () => {
    const change = {
      registration: "token",
      federation: { mode: "allow_list", servers: ["Friends.Example.org", "matrix.partner.example:8448"] },
      messageRetentionDays: 30,
    };
    const { response, job } = await answered(server, patch(server, change), APPLY);
    const expected = {
      ...DEFAULT_HOMESERVER_SETTINGS,
      registration: "token",
      federation: { mode: "allow_list", servers: ["friends.example.org", "matrix.partner.example:8448"] },
      messageRetentionDays: 30,
    };
    expect(job.payload).toEqual({ serverId: server.id, settings: expected });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ settings: expected });
    expect(await storedSettings(server.id)).toEqual(expected);
    expect((await workloadSpec(server.id)).settings).toEqual(expected);

    const ownerId = await userIdOf(server.owner.email);
    expect(await auditEntries(server.id, "server.settings_change_requested")).toEqual([
      {
        actor: `user:${ownerId}`,
        action: "server.settings_change_requested",
        target: server.id,
        detail: { changed: { registration: "token", federation: "allow_list of 2", messageRetentionDays: 30 }, jobId: job.id },
      },
    ]);
    expect(await auditEntries(server.id, "server.settings_applied")).toEqual([
      { actor: "system", action: "server.settings_applied", target: server.id, detail: { jobId: job.id } },
    ]);

    // What the owner reads now.
    const view = (await (await call(settingsOf(server), { cookie: server.owner.cookie })).json()) as { settings: unknown; change: unknown };
    expect(view).toMatchObject({ settings: expected, change: null });

    // The fields left out stay as they are.
    const second = await answered(server, patch(server, { maxUploadMiB: 100 }), APPLY);
    expect(second.job.payload.settings).toEqual({ ...expected, maxUploadMiB: 100 });
  });

  it("that changes nothing sends no job", async () => {
    const before = await jobCount(server.id, APPLY);
    const response = await patch(server, { registration: "token" });
    expect(response.status).toBe(200);
    expect(await jobCount(server.id, APPLY)).toBe(before);
  });

  it("that the host fails leaves the settings as they were, and the owner reads why (rolled back, in our words)", async () => {
    const before = await storedSettings(server.id);
    const { response } = await answered(server, patch(server, { registration: "closed", mediaRetentionDays: 7 }), APPLY, {
      error:
        "applying the settings failed: container berth-x-synapse keeps exiting; rolled back to the previous settings, which are running again (data intact)",
    });
    const message = await refusal(response, 502, "settings_rolled_back");
    expect(message).toContain("the previous settings were put back");
    expect(message).not.toContain("berth-x");
    expect(await storedSettings(server.id)).toEqual(before);
    expect((await workloadSpec(server.id)).settings).toEqual(before);

    const view = (await (await call(settingsOf(server), { cookie: server.owner.cookie })).json()) as {
      settings: unknown;
      change: { requested: { registration: string }; job: { status: string; error: { code: string } } };
    };
    expect(view.settings).toEqual(before);
    expect(view.change).toMatchObject({
      requested: { registration: "closed", mediaRetentionDays: 7 },
      job: { status: "failed", error: { code: "settings_rolled_back" } },
    });
    expect(await auditEntries(server.id, "server.settings_change_failed")).toHaveLength(1);

    const other = await answered(server, patch(server, { mediaRetentionDays: 14 }), APPLY, { error: "docker said no" });
    await expectError(other.response, 502, "homeserver_error");
    expect(await storedSettings(server.id)).toEqual(before);
  });

  it("answers 202 with the job while the host works, shows it pending, refuses another change meanwhile (409 settings_pending), and records it when done", async () => {
    const request = patch(server, { mediaRetentionDays: 90 });
    const job = await nextJob(server, APPLY);
    const response = await request;
    expect(response.status).toBe(202);
    const { job: pending } = (await response.json()) as { job: { id: string; status: string; poll: string } };
    expect(pending).toMatchObject({ id: job.id, status: "pending", poll: `/api/servers/${server.id}/jobs/${job.id}` });

    const view = (await (await call(settingsOf(server), { cookie: server.owner.cookie })).json()) as { change: unknown };
    expect(view.change).toMatchObject({ requested: { mediaRetentionDays: 90 }, job: { status: "pending" } });
    await expectError(await patch(server, { mediaRetentionDays: 30 }), 409, "settings_pending");

    server.agent.send(succeeded(job));
    let polled: { job: { status: string; result: { settings: { mediaRetentionDays: number } } | null } };
    do {
      polled = (await (await call(pending.poll, { cookie: server.owner.cookie })).json()) as typeof polled;
    } while (polled.job.status === "pending");
    expect(polled.job).toMatchObject({ status: "succeeded", result: { settings: { mediaRetentionDays: 90 } } });
    expect((await storedSettings(server.id)).mediaRetentionDays).toBe(90);
  });
});

describe("a homeserver's settings and its plan", () => {
  it("a new server's provisioning carries no settings (the host's defaults); an upload size above a smaller plan's ceiling is lowered to it", async () => {
    const server = await administeredServer();
    expect((await workloadSpec(server.id)).settings).toBeUndefined();
    await env.DB.prepare("UPDATE servers SET plan_id = 'team' WHERE id = ?").bind(server.id).run();
    const { job } = await answered(server, patch(server, { maxUploadMiB: 250 }), APPLY);
    expect(job.payload.settings.maxUploadMiB).toBe(250);

    // Back on Starter (100 MiB): the next change sends the ceiling, and so does a provisioning.
    await env.DB.prepare("UPDATE servers SET plan_id = 'starter' WHERE id = ?").bind(server.id).run();
    const view = (await (await call(settingsOf(server), { cookie: server.owner.cookie })).json()) as { settings: { maxUploadMiB: number } };
    expect(view.settings.maxUploadMiB).toBe(250);
    const next = await answered(server, patch(server, { registration: "token" }), APPLY);
    expect(next.job.payload.settings).toMatchObject({ registration: "token", maxUploadMiB: 100 });
    expect((await workloadSpec(server.id)).settings).toMatchObject({ maxUploadMiB: 100 });
    const [entry] = (await auditEntries(server.id, "server.settings_change_requested")).slice(-1);
    expect(entry!.detail).toMatchObject({ changed: { registration: "token", maxUploadMiB: 100 } });
  });

  it("the plans list each plan's upload ceiling", async () => {
    const { plans } = (await (await call("/api/billing/plans")).json()) as { plans: Array<{ id: string; maxUploadMiB: number }> };
    expect(plans.map((plan) => [plan.id, plan.maxUploadMiB])).toEqual([
      ["starter", 100],
      ["team", 250],
    ]);
  });
});
