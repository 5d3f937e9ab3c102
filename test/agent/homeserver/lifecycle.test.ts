// The homeserver job handlers end to end against the real Docker Engine and the
// locally built images: provision (hardening, data, admin account, signing key),
// idempotency, the admin password, stop/start, suspend/resume, upgrade with
// rollback, a plan change, deletion. One server goes through all of it, in order.
import { existsSync, readFileSync, readdirSync, statSync, statfsSync } from "node:fs";
import { join } from "node:path";
import bcrypt from "bcryptjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { homeserverHandlers } from "../../../agent/handlers/homeserver.ts";
import { signingKeyFileName, parseSigningKey } from "../../../agent/homeserver/secrets.ts";
import { SERVICE_LOCALPART } from "../../../agent/homeserver/config.ts";
import { requestJson } from "../../../agent/homeserver/synapse-api.ts";
import { WorkloadInventory, listHomeserverWorkloads } from "../../../agent/inventory.ts";
import { POSTGRES_IMAGE, SYNAPSE_IMAGE, TestRun, dockerUsable, ensureImages, runCommand } from "./helpers.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`homeserver lifecycle tests skipped: ${unusable}`);

const MiB = 1024 * 1024;

describe.skipIf(unusable)("homeserver lifecycle (real Docker Engine)", () => {
  let run: TestRun;
  let spec: ReturnType<TestRun["spec"]>;
  let first: Record<string, unknown>;
  let provisionMs = 0;

  const names = () => run.names(spec.serverId);
  const inspect = async (name: string) => (await run.runtime.inspectContainer(name))!;
  const psql = async (sql: string) => {
    const result = await run.runtime.exec(names().postgres, ["psql", "-h", "/run/postgresql", "-U", "synapse", "-d", "synapse", "-XAtq"], { stdin: sql });
    expect(result.exitCode, result.stderr).toBe(0);
    return result.stdout.trim();
  };
  const state = async () => (await listHomeserverWorkloads(run.runtime)).find((w) => w.id === spec.serverId)?.state;

  beforeAll(async () => {
    await ensureImages();
    run = new TestRun({ timeouts: { upgradeHealthyMs: 20_000 } });
    spec = run.spec("alpha");
    const started = Date.now();
    first = (await run.run("homeserver.provision", spec)) as Record<string, unknown>;
    provisionMs = Date.now() - started;
  }, 600_000);

  afterAll(async () => {
    await run?.cleanup();
  }, 180_000);

  it("provisions a hardened pair: Synapse healthy and answering, PostgreSQL only on the internal network", async () => {
    console.info(`provisioned in ${provisionMs} ms`);
    const n = names();
    expect(first).toMatchObject({
      serverId: spec.serverId,
      serverName: spec.serverName,
      state: "running",
      synapseVersion: "1.163.2",
      adminUserId: `@admin:${spec.serverName}`,
      image: SYNAPSE_IMAGE,
      containers: { synapse: { name: n.synapse }, postgres: { name: n.postgres } },
    });
    const ip = first.ipAddress as string;
    expect(run.proxy.calls).toEqual([
      { op: "route", serverName: spec.serverName, upstream: { host: ip, port: 8008 }, limits: { maxBodyBytes: 50 * 1024 * 1024 } },
    ]);
    expect(run.progress.at(-1)).toEqual({ progress: 1, message: "running Synapse 1.163.2" });
    const values = run.progress.map((p) => p.progress);
    expect(values).toEqual([...values].sort((a, b) => a - b));

    const uid = JSON.parse(readFileSync(join(run.stateDir, "homeserver-uids.json"), "utf8")).servers[spec.serverId] as number;
    expect(uid).toBeGreaterThanOrEqual(200_000);
    expect(uid).toBeLessThanOrEqual(299_999);

    // The agent went on once the healthchecks' own tests passed; Docker's verdict follows at its next check.
    for (const name of [n.synapse, n.postgres]) await run.runtime.waitHealthy(name, { timeoutMs: 60_000 });
    const synapse = await inspect(n.synapse);
    const postgres = await inspect(n.postgres);
    for (const [info, role, memoryMiB, nanoCpus] of [
      [synapse, "synapse", 768, 670_000_000],
      [postgres, "postgres", 256, 330_000_000],
    ] as const) {
      expect(info.Config.User).toBe(`${uid}:${uid}`);
      expect(info.HostConfig).toMatchObject({
        ReadonlyRootfs: true,
        CapDrop: ["ALL"],
        SecurityOpt: ["no-new-privileges"],
        PidsLimit: 200,
        Memory: memoryMiB * MiB,
        NanoCpus: nanoCpus,
        RestartPolicy: { Name: "unless-stopped" },
        LogConfig: { Type: "json-file", Config: { "max-size": "10m", "max-file": "3" } },
        Privileged: false,
      });
      expect(info.HostConfig.CapAdd ?? []).toEqual([]);
      expect(info.Config.Labels).toMatchObject({ "berth.workload": spec.serverId, "berth.kind": "homeserver", "berth.role": role });
      expect(info.State.Health?.Status).toBe("healthy");
      expect(info.Mounts.map((m) => m.Source).join(" ")).not.toMatch(/docker|containerd/);
      // the processes themselves run as the uid
      const status = await run.runtime.exec(info.Name.slice(1), ["cat", "/proc/1/status"]);
      expect(status.stdout).toMatch(new RegExp(`\\nUid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}\\n`));
      const write = await run.runtime.exec(info.Name.slice(1), ["sh", "-c", "echo x > /usr/berth-write-test"]);
      expect(write.exitCode).not.toBe(0); // read-only root filesystem
    }
    // PostgreSQL runs with the settings derived from its 256 MiB (tuning.ts), Synapse with jemalloc's
    const settings = ["max_connections", "shared_buffers", "work_mem", "maintenance_work_mem", "jit"];
    const shown = await run.sql(spec.serverId, `SELECT concat_ws(' ', ${settings.map((name) => `current_setting('${name}')`).join(", ")});`);
    expect(shown).toBe("14 32MB 4MB 16MB off");
    expect((await run.runtime.exec(n.synapse, ["sh", "-c", "echo $MALLOC_CONF"])).stdout.trim()).toBe(
      "narenas:1,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0",
    );
    expect(Object.keys(postgres.NetworkSettings.Networks)).toEqual([n.dbNetwork]);
    expect(Object.keys(synapse.NetworkSettings.Networks).sort()).toEqual([n.dbNetwork, n.hsNetwork].sort());
    expect(synapse.NetworkSettings.Networks[n.hsNetwork]!.IPAddress).toBe(ip);
    expect(Object.keys(postgres.NetworkSettings.Ports ?? {}).filter((p) => (postgres.NetworkSettings.Ports[p] ?? []).length)).toEqual([]);
    const db = await run.runtime.inspectNetwork(n.dbNetwork);
    const hs = await run.runtime.inspectNetwork(n.hsNetwork);
    expect([db?.internal, db?.bridge, hs?.internal, hs?.bridge]).toEqual([true, n.dbBridge, false, n.hsBridge]);

    // data directories and files: the uid's, owner-only
    const paths = run.paths(spec.serverId);
    for (const dir of [paths.synapse, paths.postgres, paths.secrets]) {
      const st = statSync(dir);
      expect([dir, st.mode & 0o777, st.uid, st.gid]).toEqual([dir, 0o700, uid, uid]);
    }
    for (const file of [
      ...readdirSync(paths.secrets).map((f) => join(paths.secrets, f)),
      join(paths.synapse, "homeserver.yaml"),
      join(paths.synapse, "log.config"),
    ]) {
      const st = statSync(file);
      expect([file, st.mode & 0o777, st.uid]).toEqual([file, 0o600, uid]);
    }

    // from the host, via the container's bridge address (as the proxy reaches it)
    const versions = await requestJson(`http://${ip}:8008/_matrix/client/versions`);
    expect(versions.status).toBe(200);
    expect((versions.body as { versions: string[] }).versions.length).toBeGreaterThan(0);

    expect(await state()).toBe("running");
    const inventory = new WorkloadInventory({ dataRoot: run.dataRoot, runtime: run.runtime });
    expect(await inventory.refresh()).toBe(true);
    expect(inventory.list()).toContainEqual({ id: spec.serverId, kind: "homeserver", state: "running" });
  });

  it("Synapse serves the signing key the agent generated, and reads the generated YAML as meant", async () => {
    const paths = run.paths(spec.serverId);
    const key = parseSigningKey(readFileSync(join(paths.synapse, signingKeyFileName(spec.serverName)), "utf8"));
    const answer = await requestJson(`${await run.synapseBase(spec.serverId)}/_matrix/key/v2/server`);
    expect(answer.status).toBe(200);
    const body = answer.body as { server_name: string; verify_keys: Record<string, { key: string }> };
    expect(body.server_name).toBe(spec.serverName);
    expect(body.verify_keys).toEqual({ [`ed25519:${key.version}`]: { key: key.publicKey } });

    const parsed = await run.runtime.exec(names().synapse, [
      "python",
      "-c",
      "import json, yaml; print(json.dumps(yaml.safe_load(open('/data/homeserver.yaml'))))",
    ]);
    const config = JSON.parse(parsed.stdout) as Record<string, unknown>;
    expect(config).toMatchObject({
      server_name: spec.serverName,
      enable_registration: false,
      report_stats: false,
      // a Starter's Synapse (768 MiB): no presence, no URL previews, a pool of 4 for its 256 MiB PostgreSQL
      url_preview_enabled: false,
      presence: { enabled: false },
      database: { args: { cp_min: 1, cp_max: 4 } },
      encryption_enabled_by_default_for_room_type: "invite",
      caches: { global_factor: 0.38, cache_autotuning: { max_cache_memory_usage: "460M" } },
      registration_shared_secret: run.registrationSecret(spec.serverId),
    });
    expect(config.ip_range_blacklist).toContain("169.254.0.0/16");
    // Without the development flag --allow-local-federation, as in production: no exception to the
    // block list, no CA but the system's for federation, and Docker's own /etc/hosts.
    expect(config).not.toHaveProperty("ip_range_whitelist");
    expect(config).not.toHaveProperty("federation_custom_ca_list");
    // Docker leaves out a false ReadOnly.
    expect((await inspect(names().synapse)).HostConfig.Mounts?.map((m) => [m.Type, m.Source, m.Target, m.ReadOnly === true])).toEqual([
      ["bind", paths.synapse, "/data", false],
      ["bind", paths.synapseModules, "/usr/local/lib/berth-synapse-modules", true],
    ]);
    expect(existsSync(join(paths.synapse, "local-federation-ca.pem"))).toBe(false);
  });

  it("made the admin account with a password that appears nowhere, and ended the registration's session", async () => {
    const adminUserId = `@admin:${spec.serverName}`;
    expect(await psql(`SELECT name || '|' || admin FROM users WHERE name = '${adminUserId}';`)).toBe(`${adminUserId}|1`);
    expect(await psql(`SELECT count(*) FROM access_tokens WHERE user_id = '${adminUserId}';`)).toBe("0");
    expect(run.passwords).toHaveLength(1);
    const password = run.passwords[0]!;
    const said = await run.everythingSaid(spec.serverId, [first]);
    expect(said).not.toContain(password);
    for (const dir of [run.stateDir, run.paths(spec.serverId).secrets, join(run.paths(spec.serverId).synapse)]) {
      for (const file of readdirSync(dir, { recursive: true }) as string[]) {
        const path = join(dir, file);
        if (statSync(path).isFile()) expect(readFileSync(path, "utf8")).not.toContain(password);
      }
    }
  });

  it("provisioning again converges: same containers, networks and rules, no duplicates", async () => {
    const n = names();
    const before = {
      synapse: (await inspect(n.synapse)).Id,
      postgres: (await inspect(n.postgres)).Id,
      rules: await run.firewall.list(n.firewallTag),
      uids: readFileSync(join(run.stateDir, "homeserver-uids.json"), "utf8"),
      secrets: readdirSync(run.paths(spec.serverId).secrets).map((f) => readFileSync(join(run.paths(spec.serverId).secrets, f), "utf8")),
    };
    const again = (await run.run("homeserver.provision", spec)) as Record<string, unknown>;
    expect(again).toMatchObject({ adminUserId: first.adminUserId, containers: first.containers, synapseVersion: "1.163.2" });
    expect((await inspect(n.synapse)).Id).toBe(before.synapse);
    expect((await inspect(n.postgres)).Id).toBe(before.postgres);
    expect(await run.firewall.list(n.firewallTag)).toEqual(before.rules);
    expect(before.rules.length).toBeGreaterThan(20);
    expect(readFileSync(join(run.stateDir, "homeserver-uids.json"), "utf8")).toBe(before.uids);
    expect(readdirSync(run.paths(spec.serverId).secrets).map((f) => readFileSync(join(run.paths(spec.serverId).secrets, f), "utf8"))).toEqual(before.secrets);
    const containers = await run.runtime.listContainers({ "berth.workload": spec.serverId });
    expect(containers.map((c) => c.Names[0]).sort()).toEqual([`/${n.postgres}`, `/${n.synapse}`]);
    const networks = await run.runtime.listNetworks({ "berth.workload": spec.serverId });
    expect(networks.map((x) => x.name).sort()).toEqual([n.dbNetwork, n.hsNetwork]);
    expect(run.proxy.calls.at(-1)).toEqual({
      op: "route",
      serverName: spec.serverName,
      upstream: { host: first.ipAddress, port: 8008 },
      limits: { maxBodyBytes: 50 * 1024 * 1024 },
    });
  });

  it("after a host reboot (storage quota unmounted, containers down, iptables rules lost), restoreHostState mounts the quota, starts the containers and puts the rules and the route back", async () => {
    const n = names();
    const paths = run.paths(spec.serverId);
    const rules = await run.firewall.list(n.firewallTag);
    await run.runtime.stopContainer(n.synapse);
    await run.runtime.stopContainer(n.postgres);
    expect((await runCommand("umount", [paths.root])).code).toBe(0);
    await run.firewall.remove({ chainId: n.chainId, tag: n.firewallTag });
    expect(await run.firewall.list(n.firewallTag)).toEqual([]);
    run.proxy.state.clear();
    // What Docker does at boot, before the agent runs: the data is not there, so it refuses to start (and does not create it on the host's disk).
    await expect(run.runtime.startContainer(n.postgres)).rejects.toThrow(/bind source path does not exist/);
    expect(readdirSync(paths.root)).toEqual([]);

    await run.manager.restoreHostState(run.dataRoot);
    expect((await runCommand("findmnt", ["--noheadings", "--output", "SOURCE", "--mountpoint", paths.root])).stdout).toMatch(/^\/dev\/loop\d+/);
    expect((await inspect(n.postgres)).State.Health?.Status).toBe("healthy");
    expect((await inspect(n.synapse)).State.Running).toBe(true);
    expect(await run.firewall.list(n.firewallTag)).toEqual(rules);
    const ip = new URL(await run.synapseBase(spec.serverId)).hostname;
    expect(run.proxy.state.get(spec.serverName)).toEqual({ host: ip, port: 8008 });
    expect((await requestJson(`${await run.synapseBase(spec.serverId)}/_matrix/client/versions`)).status).toBe(200);
  });

  it("homeserver.set_admin_password writes the bcrypt hash and ends the admin's sessions, for the admin account only", async () => {
    const adminUserId = first.adminUserId as string;
    const one = "correct horse battery staple 1";
    const two = "correct horse battery staple 2";
    const hashOne = bcrypt.hashSync(one, 4);
    const hashTwo = bcrypt.hashSync(two, 4);
    expect(await run.run("homeserver.set_admin_password", { serverId: spec.serverId, adminUserId, passwordHash: hashOne })).toEqual({
      serverId: spec.serverId,
      adminUserId,
      sessionsEnded: 0,
    });
    const session = await run.login(spec.serverId, "admin", one);
    expect(session.status).toBe(200);
    expect((await run.login(spec.serverId, "admin", run.passwords[0]!)).status).toBe(403);

    const result = (await run.run("homeserver.set_admin_password", { serverId: spec.serverId, adminUserId, passwordHash: hashTwo })) as {
      sessionsEnded: number;
    };
    expect(result.sessionsEnded).toBe(1);
    const whoami = await requestJson(`${await run.synapseBase(spec.serverId)}/_matrix/client/v3/account/whoami`, { token: session.token! });
    expect(whoami.status).toBe(401);
    expect((await run.login(spec.serverId, "admin", one)).status).toBe(403);
    expect((await run.login(spec.serverId, "admin", two)).status).toBe(200);
    // the hash went to psql on stdin: in no log, no progress message, no exec's command line
    const n = names();
    const said = await run.everythingSaid(spec.serverId);
    expect(said).not.toContain(hashTwo);
    for (const id of (await inspect(n.postgres)).ExecIDs ?? []) {
      const exec = await run.docker
        .getExec(id)
        .inspect()
        .catch(() => undefined);
      expect(JSON.stringify(exec ?? {})).not.toContain(hashTwo);
    }
    await expect(run.run("homeserver.set_admin_password", { serverId: spec.serverId, adminUserId, passwordHash: "plain-text" })).rejects.toThrow(
      /^homeserver.set_admin_password: invalid payload: passwordHash: a bcrypt hash$/,
    );
    await expect(
      run.run("homeserver.set_admin_password", { serverId: spec.serverId, adminUserId: "@someone:else.example", passwordHash: hashOne }),
    ).rejects.toThrow(/is not a user of/);
    // Only the account the server was provisioned with: any other user's password is homeserver.users.set_password's.
    await expect(
      run.run("homeserver.set_admin_password", { serverId: spec.serverId, adminUserId: `@bob:${spec.serverName}`, passwordHash: hashOne }),
    ).rejects.toThrow(/is not this homeserver's admin account/);
    await expect(
      run.run("homeserver.set_admin_password", { serverId: spec.serverId, adminUserId: `@${SERVICE_LOCALPART}:${spec.serverName}`, passwordHash: hashOne }),
    ).rejects.toThrow(/is the host's service account/);
  });

  it("stop and start keep the data: a user registered before can log in after", async () => {
    const password = await run.registerUser(spec.serverId, spec.serverName, "bob");
    expect(await run.run("homeserver.stop", { serverId: spec.serverId })).toEqual({ serverId: spec.serverId, state: "stopped" });
    expect((await inspect(names().synapse)).State.Running).toBe(false);
    expect((await inspect(names().postgres)).State.Running).toBe(false);
    expect(await state()).toBe("stopped");
    expect(await run.run("homeserver.stop", { serverId: spec.serverId })).toEqual({ serverId: spec.serverId, state: "stopped" }); // again: fine
    // A reboot while stopped (its quota unmounted): the start-up restore mounts the quota and leaves it stopped.
    expect((await runCommand("umount", [run.paths(spec.serverId).root])).code).toBe(0);
    await run.manager.restoreHostState(run.dataRoot);
    expect(run.manager.records.read(spec.serverId)?.stopped).toBe(true);
    expect((await inspect(names().postgres)).State.Running).toBe(false);
    expect(await state()).toBe("stopped");
    // A record from before `stopped` existed: only a start Docker refused is made again, so it stays stopped too.
    const { stopped: _stopped, ...older } = run.manager.records.read(spec.serverId)!;
    run.manager.records.write(older);
    await run.manager.restoreHostState(run.dataRoot);
    expect((await inspect(names().postgres)).State.Running).toBe(false);

    const started = (await run.run("homeserver.start", { serverId: spec.serverId })) as Record<string, unknown>;
    expect(started).toMatchObject({ state: "running", synapseVersion: "1.163.2" });
    expect(run.proxy.state.get(spec.serverName)).toEqual({ host: started.ipAddress, port: 8008 });
    expect((await run.login(spec.serverId, "bob", password)).status).toBe(200);
    expect(await state()).toBe("running");
    expect(run.manager.records.read(spec.serverId)?.stopped).toBe(false);
    bobPassword = password;
  });

  let bobPassword = "";

  it('suspend answers "suspended" through the proxy and stops both; resume brings it back', async () => {
    expect(await run.run("homeserver.suspend", { serverId: spec.serverId })).toEqual({ serverId: spec.serverId, state: "suspended" });
    expect(run.proxy.state.get(spec.serverName)).toBe("suspended");
    expect((await inspect(names().synapse)).State.Running).toBe(false);
    expect((await inspect(names().postgres)).State.Running).toBe(false);
    expect(run.manager.records.read(spec.serverId)?.suspended).toBe(true);
    await expect(run.run("homeserver.upgrade", { serverId: spec.serverId, image: SYNAPSE_IMAGE })).rejects.toThrow(/suspended: resume it/);

    const resumed = (await run.run("homeserver.resume", { serverId: spec.serverId })) as Record<string, unknown>;
    expect(resumed).toMatchObject({ state: "running" });
    expect(run.proxy.state.get(spec.serverName)).toEqual({ host: resumed.ipAddress, port: 8008 });
    expect(run.manager.records.read(spec.serverId)?.suspended).toBe(false);
    expect((await run.login(spec.serverId, "bob", bobPassword)).status).toBe(200);
  });

  it("an upgrade to an image that never turns healthy is rolled back, the job failing clearly, data intact", async () => {
    const broken = await run.buildImage("unhealthy", 'HEALTHCHECK --interval=1s --timeout=2s --retries=1 CMD ["/bin/false"]');
    const before = (await inspect(names().synapse)).Id;
    const started = Date.now();
    await expect(run.run("homeserver.upgrade", { serverId: spec.serverId, image: broken })).rejects.toThrow(
      new RegExp(
        `upgrade to ${broken} failed: container ${names().synapse} did not become healthy within 20 s.*; rolled back to ${SYNAPSE_IMAGE}, which is running again`,
      ),
    );
    console.info(`unhealthy upgrade rolled back in ${Date.now() - started} ms`);
    // The agent judged it ready by its healthcheck's own test; Docker's verdict follows at its next check.
    await run.runtime.waitHealthy(names().synapse, { timeoutMs: 60_000 });
    const after = await inspect(names().synapse);
    expect(after.Id).toBe(before);
    expect(after.Config.Image).toBe(SYNAPSE_IMAGE);
    expect(after.State.Health?.Status).toBe("healthy");
    expect(await run.runtime.inspectContainer(names().synapsePrevious)).toBeUndefined();
    expect(run.manager.records.read(spec.serverId)?.images.synapse).toBe(SYNAPSE_IMAGE);
    expect(run.manager.records.read(spec.serverId)?.upgrade).toBeUndefined();
    expect(run.proxy.state.get(spec.serverName)).toEqual({ host: after.NetworkSettings.Networks[names().hsNetwork]!.IPAddress, port: 8008 });
    expect((await run.login(spec.serverId, "bob", bobPassword)).status).toBe(200);
    expect(await state()).toBe("running");
  });

  it("an upgrade to an image whose Synapse exits is rolled back at once", async () => {
    const broken = await run.buildImage("exits", 'ENTRYPOINT ["/bin/sh", "-c", "echo broken on purpose >&2; exit 3"]');
    const started = Date.now();
    const failure = await run.run("homeserver.upgrade", { serverId: spec.serverId, image: broken }).then(
      () => expect.fail("the upgrade succeeded"),
      (error: Error) => error.message,
    );
    console.info(`exiting upgrade rolled back in ${Date.now() - started} ms`);
    // Rolled back on the exit itself, not after waiting out the health timeout.
    expect(failure).toMatch(
      new RegExp(`upgrade to ${broken} failed: container ${names().synapse} (keeps exiting|is exited) \\(exit code 3\\).*rolled back to ${SYNAPSE_IMAGE}`),
    );
    expect(failure).not.toMatch(/did not become healthy/);
    expect((await inspect(names().synapse)).Config.Image).toBe(SYNAPSE_IMAGE);
    expect((await run.login(spec.serverId, "bob", bobPassword)).status).toBe(200);
  });

  it("an upgrade to a missing image fails before touching anything", async () => {
    const before = (await inspect(names().synapse)).Id;
    await expect(run.run("homeserver.upgrade", { serverId: spec.serverId, image: `berth-test/nothing:${run.prefix}` })).rejects.toThrow(
      /image berth-test\/nothing:\S+ is not on this host/,
    );
    expect((await inspect(names().synapse)).Id).toBe(before);
  });

  it("an upgrade to a good image replaces the container and reports the running version", async () => {
    const before = (await inspect(names().synapse)).Id;
    const result = (await run.run("homeserver.upgrade", { serverId: spec.serverId, image: SYNAPSE_IMAGE })) as Record<string, unknown>;
    expect(result).toMatchObject({ state: "running", synapseVersion: "1.163.2", image: SYNAPSE_IMAGE, previousImage: SYNAPSE_IMAGE });
    const after = await inspect(names().synapse);
    expect(after.Id).not.toBe(before);
    expect(after.State.Health?.Status).toBe("healthy");
    expect(await run.runtime.inspectContainer(names().synapsePrevious)).toBeUndefined();
    expect(run.proxy.state.get(spec.serverName)).toEqual({ host: result.ipAddress, port: 8008 });
    expect((await run.login(spec.serverId, "bob", bobPassword)).status).toBe(200);
  });

  it("a plan change (homeserver.resize) grows the storage quota and gives both containers the new limits in place, without a restart, and is kept for the next provisioning", async () => {
    const before = { synapse: await inspect(names().synapse), postgres: await inspect(names().postgres) };
    const team = { memoryMiB: 2048, cpus: 2, storageGiB: 50 };
    expect(await run.run("homeserver.resize", { serverId: spec.serverId, planId: "team", resources: team, maxUsers: 250 })).toEqual({
      serverId: spec.serverId,
      resources: team,
    });
    for (const [role, memoryMiB, nanoCpus] of [
      ["synapse", 1536, 1_330_000_000],
      ["postgres", 512, 670_000_000],
    ] as const) {
      const after = await inspect(names()[role]);
      expect(after.HostConfig).toMatchObject({ Memory: memoryMiB * MiB, MemorySwap: memoryMiB * MiB, NanoCpus: nanoCpus });
      // The same container, never restarted: customers keep their connections. Growing ext4 online needs
      // CAP_SYS_RESOURCE (a host's root has it); without it the quota grows with the containers stopped a moment.
      expect([after.Id, after.State.Running]).toEqual([before[role].Id, true]);
      if (onlineResizePossible()) expect(after.State.StartedAt).toBe(before[role].State.StartedAt);
    }
    expect(run.captured.has(onlineResizePossible() ? /^storage quota grown online$/ : /^storage quota grown offline$/)).toBe(true);
    const quota = statfsSync(run.paths(spec.serverId).root);
    expect(quota.blocks * quota.bsize).toBeGreaterThan(49 * 1024 * MiB);
    expect(quota.blocks * quota.bsize).toBeLessThanOrEqual(50 * 1024 * MiB);
    expect(run.manager.records.read(spec.serverId)?.resources).toEqual(team);
    // the new plan's bound on users, for Synapse's own check (read at each registration: no restart)
    expect(readFileSync(join(run.paths(spec.serverId).synapse, "user-limit"), "utf8")).toBe("250\n");
    expect((await run.login(spec.serverId, "bob", bobPassword)).status).toBe(200);
    await expect(run.run("homeserver.resize", { serverId: spec.serverId, planId: "team", resources: { ...team, memoryMiB: 1 } })).rejects.toThrow(
      /invalid payload/,
    );
  });

  it("refuses bad payloads, unknown servers and an unencrypted data root", async () => {
    await expect(run.run("homeserver.provision", { ...spec, serverName: "not a name" })).rejects.toThrow(/invalid payload: serverName/);
    await expect(run.run("homeserver.stop", { serverId: "../etc" })).rejects.toThrow(/invalid payload/);
    await expect(run.run("homeserver.start", { serverId: `${run.prefix}-nobody` })).rejects.toThrow(/is not provisioned on this host/);
    const { handlers } = homeserverHandlers(
      run.handlerOptions({ diskEncryption: () => ({ dataRoot: run.dataRoot, encrypted: false, devices: ["vda"], allowUnencrypted: false }) }),
    );
    const refused = run.spec("refused");
    await expect(handlers["homeserver.provision"](refused, run.ctx())).rejects.toThrow(/refusing to place customer data/);
    expect(await run.runtime.listContainers({ "berth.workload": refused.serverId })).toEqual([]);
    expect(POSTGRES_IMAGE).toBe("berth/postgres:15");
  });

  it("homeserver.delete (sent after a final backup) removes the route, containers, networks, rules, data and record; a rerun is a no-op", async () => {
    const n = names();
    const paths = run.paths(spec.serverId);
    expect(await run.firewall.list(n.firewallTag)).not.toEqual([]);
    expect(await run.run("homeserver.delete", { serverId: spec.serverId })).toEqual({ serverId: spec.serverId, state: "deleted" });
    for (const container of [n.synapse, n.synapsePrevious, n.postgres]) expect(await run.runtime.inspectContainer(container)).toBeUndefined();
    for (const network of [n.hsNetwork, n.dbNetwork]) expect(await run.runtime.inspectNetwork(network)).toBeUndefined();
    expect(await run.firewall.list(n.firewallTag)).toEqual([]);
    expect(run.proxy.state.has(spec.serverName)).toBe(false);
    expect(existsSync(paths.root)).toBe(false);
    expect(run.manager.records.read(spec.serverId)).toBeUndefined();
    expect(await state()).toBeUndefined();
    await expect(run.run("homeserver.delete", { serverId: spec.serverId })).resolves.toEqual({ serverId: spec.serverId, state: "deleted" });
  });
});

/** Whether this process may grow a mounted ext4 (CAP_SYS_RESOURCE, bit 24 of the effective capabilities). */
function onlineResizePossible(): boolean {
  const effective = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1] ?? "0";
  return (BigInt(`0x${effective}`) & (1n << 24n)) !== 0n;
}
