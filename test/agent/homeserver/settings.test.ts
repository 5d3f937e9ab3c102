// A homeserver's settings, applied by the agent to a real Synapse: registration closed by
// default and by registration token once asked for (a client registers through Synapse's
// standard token-authenticated flow with a token made by the registration-token job),
// federation, retention and the upload size in the configuration Synapse runs with, a
// change Synapse refuses rolled back to the settings that ran before, and a provisioning
// that renders the settings it is given or the record's. One homeserver, in order.
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_HOMESERVER_SETTINGS, type HomeserverSettings } from "../../../protocol/homeserver-settings.ts";
import type { YamlValue } from "../../../agent/homeserver/yaml.ts";
import { requestJson } from "../../../agent/homeserver/synapse-api.ts";
import { TestRun, dockerUsable, ensureImages, registerClient, registerClientWithToken } from "./helpers.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`homeserver settings tests skipped: ${unusable}`);

const MiB = 1024 * 1024;

describe.skipIf(unusable)("a homeserver's settings (real Synapse)", () => {
  let run: TestRun;
  let spec: ReturnType<TestRun["spec"]>;
  /** The fault the test injects: the next homeserver.yaml written is one Synapse refuses to start with (open registration without any verification). */
  let refuseNextConfig = false;

  const base = () => run.synapseBase(spec.serverId);
  const configText = () => readFileSync(join(run.paths(spec.serverId).synapse, "homeserver.yaml"), "utf8");
  const apply = (settings: HomeserverSettings) => run.run("homeserver.settings.apply", { serverId: spec.serverId, settings });
  const synapseStartedAt = async () => (await run.runtime.inspectContainer(run.names(spec.serverId).synapse))?.State.StartedAt;
  const register = async (body: Record<string, unknown>) => registerClient(await base(), body);
  const registerWithToken = async (username: string, token: string) => registerClientWithToken(await base(), username, token);
  const newToken = async () =>
    ((await run.run("homeserver.registration_tokens.create", { serverId: spec.serverId, usesAllowed: 1, maxUsers: 100 })) as { token: { token: string } }).token
      .token;

  const tokenSettings: HomeserverSettings = {
    registration: "token",
    federation: { mode: "allow_list", servers: ["friends.example.org", "matrix.partner.example:8448"] },
    messageRetentionDays: 30,
    mediaRetentionDays: 90,
    maxUploadMiB: 100,
  };

  beforeAll(async () => {
    await ensureImages();
    run = new TestRun({
      adjustSynapseConfig: (config: Record<string, YamlValue>) => {
        if (!refuseNextConfig) return config;
        refuseNextConfig = false;
        return { ...config, enable_registration: true, registration_requires_token: false };
      },
    });
    spec = run.spec("settings");
    await run.run("homeserver.provision", spec);
  }, 600_000);

  afterAll(async () => {
    await run?.cleanup();
  }, 180_000);

  it("provisioned without settings, registration is closed and federation open, as before settings existed", async () => {
    expect(run.manager.records.read(spec.serverId)?.settings).toBeUndefined();
    const refused = await register({ username: "mallory", password: "pw-mallory-1" });
    expect(refused.status).toBe(403);
    expect(refused.body.errcode).toBe("M_FORBIDDEN");
    const text = configText();
    expect(text).toContain("\nenable_registration: false\n");
    expect(text).toContain('\nmax_upload_size: "50M"\n');
    expect(text).not.toContain("federation_domain_whitelist");
    expect(text).not.toMatch(/^retention:|^media_retention:/m);
  });

  it("token mode: a client registers with a token from the registration-token job, and not without one", async () => {
    const before = await synapseStartedAt();
    expect(await apply(tokenSettings)).toEqual({ serverId: spec.serverId, settings: tokenSettings });
    expect(await synapseStartedAt()).not.toBe(before);
    expect(run.manager.records.read(spec.serverId)?.settings).toEqual(tokenSettings);

    const token = await newToken();
    const validity = await requestJson(`${await base()}/_matrix/client/v1/register/m.login.registration_token/validity?token=${token}`);
    expect(validity).toMatchObject({ status: 200, body: { valid: true } });

    const withoutToken = await register({ username: "mallory", password: "pw-mallory-1" });
    expect(withoutToken.status).toBe(401);
    // Every flow Synapse offers asks for a token: none lets anyone in without one.
    expect(withoutToken.body.flows?.length).toBeGreaterThan(0);
    for (const flow of withoutToken.body.flows ?? []) expect(flow.stages).toContain("m.login.registration_token");
    expect((await registerWithToken("mallory", "not-a-token")).status).toBe(401);

    const registered = await registerWithToken("newcomer", token);
    expect(registered.status).toBe(200);
    expect(registered.body.user_id).toBe(`@newcomer:${spec.serverName}`);
    const whoami = await requestJson(`${await base()}/_matrix/client/v3/account/whoami`, { token: registered.body.access_token! });
    expect(whoami).toMatchObject({ status: 200, body: { user_id: `@newcomer:${spec.serverName}` } });
    // The token allowed one use: it is spent.
    expect((await registerWithToken("second", token)).status).toBe(401);
  });

  it("federation, retention and the upload size are in the configuration Synapse runs with, and its proxy route and /tmp follow the upload size", async () => {
    const text = configText();
    expect(text).toMatch(/\nfederation_domain_whitelist:\n {2}- "friends\.example\.org"\n {2}- "matrix\.partner\.example:8448"\n/);
    expect(text).toMatch(/\nretention:\n {2}enabled: true\n {2}default_policy:\n {4}max_lifetime: "30d"\n {2}allowed_lifetime_max: "30d"\n/);
    expect(text).toMatch(/\nmedia_retention:\n {2}local_media_lifetime: "90d"\n {2}remote_media_lifetime: "90d"\n/);
    expect(text).toContain('\nmax_upload_size: "100M"\n');
    expect(text).toContain("\nenable_registration: true\n");
    expect(text).toContain("\nregistration_requires_token: true\n");
    // Synapse answers with the upload size it runs with.
    const admin = await run.registerUser(spec.serverId, spec.serverName, "settings-admin");
    const session = await run.login(spec.serverId, "settings-admin", admin);
    const media = await requestJson(`${await base()}/_matrix/client/v1/media/config`, { token: session.token! });
    expect(media).toMatchObject({ status: 200, body: { "m.upload.size": 100 * MiB } });
    expect(run.proxy.calls.at(-1)).toMatchObject({ op: "route", serverName: spec.serverName, limits: { maxBodyBytes: 100 * MiB } });
    const container = await run.runtime.inspectContainer(run.names(spec.serverId).synapse);
    expect(container?.HostConfig.Tmpfs?.["/tmp"]).toContain("size=200m");

    await apply({ ...tokenSettings, federation: { mode: "off" } });
    expect(configText()).toContain("\nfederation_domain_whitelist: []\n");
  });

  it("a configuration Synapse refuses is rolled back: the previous settings run again, and the job says so", async () => {
    const running = run.manager.records.read(spec.serverId)!.settings!;
    const previousConfig = configText();
    // What Synapse itself may write into its directory is not what a rollback puts back.
    writeFileSync(join(run.paths(spec.serverId).synapse, "homeserver.yaml"), `${previousConfig}enable_registration_without_verification: true\n`);
    refuseNextConfig = true;
    await expect(apply({ ...running, registration: "closed", maxUploadMiB: 20 })).rejects.toThrow(
      /rolled back to the previous settings, which are running again \(data intact\)/,
    );
    expect(refuseNextConfig).toBe(false);
    expect(run.manager.records.read(spec.serverId)?.settings).toEqual(running);
    expect(configText()).toBe(previousConfig);
    expect(run.progress.map((p) => p.message)).toContain("Synapse did not come back: putting the previous configuration back");
    // Synapse runs, with the old settings: registration still by token, the old upload size.
    const offered = await register({ username: "late", password: "pw-late-1" });
    expect(offered.status).toBe(401);
    for (const flow of offered.body.flows ?? []) expect(flow.stages).toContain("m.login.registration_token");
    expect((await registerWithToken("late", await newToken())).status).toBe(200);
    expect(run.proxy.calls.at(-1)).toMatchObject({ op: "route", limits: { maxBodyBytes: 100 * MiB } });
  });

  it("provisioning again renders the record's settings, or the ones its payload carries (a host that lost its record)", async () => {
    const kept = run.manager.records.read(spec.serverId)!.settings!;
    const before = configText();
    await run.run("homeserver.provision", spec);
    expect(run.manager.records.read(spec.serverId)?.settings).toEqual(kept);
    expect(configText()).toBe(before);

    rmSync(run.manager.records.path(spec.serverId));
    const carried: HomeserverSettings = { ...DEFAULT_HOMESERVER_SETTINGS, registration: "token", messageRetentionDays: 7 };
    await run.run("homeserver.provision", { ...spec, settings: carried });
    expect(run.manager.records.read(spec.serverId)?.settings).toEqual(carried);
    expect(configText()).toContain("\nenable_registration: true\n");
    expect(configText()).toContain('max_lifetime: "7d"');
    expect(configText()).not.toContain("federation_domain_whitelist");
    expect((await registerWithToken("after-provision", await newToken())).status).toBe(200);
  });

  it("a homeserver provisioned on a fresh data root with settings runs with them from its first start; stopped, it takes no change", async () => {
    const fresh = run.spec("fresh");
    const settings: HomeserverSettings = { ...DEFAULT_HOMESERVER_SETTINGS, federation: { mode: "off" }, mediaRetentionDays: 3, maxUploadMiB: 10 };
    await run.run("homeserver.provision", { ...fresh, settings });
    expect(run.manager.records.read(fresh.serverId)?.settings).toEqual(settings);
    const text = readFileSync(join(run.paths(fresh.serverId).synapse, "homeserver.yaml"), "utf8");
    expect(text).toContain("\nfederation_domain_whitelist: []\n");
    expect(text).toContain('\nmax_upload_size: "10M"\n');
    expect(text).toContain('local_media_lifetime: "3d"');
    expect(run.proxy.calls.at(-1)).toMatchObject({ op: "route", serverName: fresh.serverName, limits: { maxBodyBytes: 10 * MiB } });

    // Stopped (a stop overtook the change): the change is refused, and the server is not started for it.
    await run.run("homeserver.stop", { serverId: fresh.serverId });
    await expect(run.run("homeserver.settings.apply", { serverId: fresh.serverId, settings: { ...settings, registration: "token" } })).rejects.toThrow(
      /is not running: start it before changing its settings/,
    );
    expect(run.manager.records.read(fresh.serverId)?.settings).toEqual(settings);
    expect((await run.runtime.inspectContainer(run.names(fresh.serverId).synapse))?.State.Running).toBe(false);
  });
});
