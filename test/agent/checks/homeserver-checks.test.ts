// homeserver.checks against a real homeserver (Docker, the locally built images), one
// provisioned for the file: encryption by default holds on a fresh one and its throwaway probe
// user is deactivated and erased afterwards, hidden from the customer's list of users; it fails,
// naming the setting, once the configuration Synapse runs with lost it; the development host's
// unencrypted disk is reported as such; a check that throws is could_not_check while the others
// still run; and the running Synapse's version and image come back for the software check.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_HOMESERVER_SETTINGS } from "../../../protocol/homeserver-settings.ts";
import { CHECK_ERROR_SUMMARY } from "../../../agent/checks/index.ts";
import { PROBE_LOCALPART_PREFIX, ROOM_ENCRYPTION_SETTING } from "../../../agent/homeserver/encryption-probe.ts";
import { writeUserLimit } from "../../../agent/homeserver/user-limit.ts";
import { PROBE_LOCALPART_FILE } from "../../../agent/homeserver/user-limit-module.ts";
import type { YamlValue } from "../../../agent/homeserver/yaml.ts";
import { sleep } from "../helpers.ts";
import { SYNAPSE_IMAGE, TestRun, dockerUsable, ensureImages } from "../homeserver/helpers.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`homeserver checks tests skipped: ${unusable}`);

interface ChecksResult {
  serverId: string;
  outcomes: Array<{ checkId: string; result: string; evidence: { summary: string; facts: Array<{ label: string; value: string }> } }>;
  synapse?: { version: string; image: string };
}

describe.skipIf(unusable)("homeserver.checks (real Synapse)", () => {
  let run: TestRun;
  let spec: ReturnType<TestRun["spec"]>;
  let dropRoomEncryption = false;
  let diskEncryptionFails = false;

  const checks = async (ids: string[]) => (await run.run("homeserver.checks", { serverId: spec.serverId, checks: ids })) as unknown as ChecksResult;
  const probeUsers = async () =>
    run.sql(spec.serverId, `SELECT name || '|' || deactivated FROM users WHERE name LIKE '@${PROBE_LOCALPART_PREFIX}%' ORDER BY name;`);

  beforeAll(async () => {
    await ensureImages();
    run = new TestRun({
      adjustSynapseConfig: (config: Record<string, YamlValue>) => {
        if (!dropRoomEncryption) return config;
        const { [ROOM_ENCRYPTION_SETTING]: _dropped, ...rest } = config;
        return rest;
      },
      diskEncryption: () => {
        if (diskEncryptionFails) throw new Error("mount table unreadable at /proc/self/mountinfo");
        return { dataRoot: run.dataRoot, encrypted: false, devices: ["test"], allowUnencrypted: true };
      },
      // what the daemon takes from its proxy's config; nothing listens on this "proxy"
      hostChecks: {
        certificates: { proxy: { host: "127.0.0.1", port: 1 }, trustedRoots: async () => undefined },
        privatePorts: [{ what: "the proxy's admin API", port: 2019 }],
      },
    });
    spec = run.spec("checks");
    await run.run("homeserver.provision", spec);
  }, 600_000);

  afterAll(async () => {
    await run?.cleanup();
  }, 180_000);

  it("a fresh homeserver encrypts private rooms by default; the probe user is deactivated and erased after, and no customer's list shows it", async () => {
    const result = await checks(["encryption-by-default", "disk-encryption"]);
    expect(result.serverId).toBe(spec.serverId);
    expect(result.outcomes[0]).toEqual({
      checkId: "encryption-by-default",
      result: "holds",
      evidence: {
        summary: "A private room created without asking for encryption was encrypted (m.megolm.v1.aes-sha2).",
        facts: [
          { label: ROOM_ENCRYPTION_SETTING, value: "invite" },
          { label: "Encryption of a new private room", value: "m.megolm.v1.aes-sha2" },
        ],
      },
    });
    expect(result.synapse).toEqual({ version: expect.stringMatching(/^\d+\.\d+\.\d+/), image: SYNAPSE_IMAGE });

    const probes = (await probeUsers()).split("\n");
    expect(probes).toHaveLength(1);
    expect(probes[0]).toMatch(new RegExp(`^@${PROBE_LOCALPART_PREFIX}[0-9a-f]{16}:.+\\|1$`));
    const probeId = probes[0]!.split("|")[0]!;
    expect(await run.sql(spec.serverId, `SELECT count(*) FROM erased_users WHERE user_id = '${probeId}';`)).toBe("1");
    // The probe's room is purged (Synapse does it in the background).
    const deadline = Date.now() + 60_000;
    while ((await run.sql(spec.serverId, `SELECT count(*) FROM rooms WHERE creator = '${probeId}';`)) !== "0") {
      if (Date.now() > deadline) throw new Error("the probe's room was not purged within 60 s");
      await sleep(500);
    }
    const listed = (await run.run("homeserver.users.list", { serverId: spec.serverId, from: 0, limit: 100 })) as { users: Array<{ userId: string }> };
    expect(listed.users.map((u) => u.userId).filter((id) => id.includes(PROBE_LOCALPART_PREFIX))).toEqual([]);
  });

  it("the development host's unencrypted disk fails the disk-encryption check, saying it is a development host", async () => {
    const [disk] = (await checks(["disk-encryption"])).outcomes;
    expect(disk).toMatchObject({
      checkId: "disk-encryption",
      result: "fails",
      evidence: { summary: "This is a development host, allowed to run without disk encryption: the data is on an unencrypted disk." },
    });
  });

  it("runs the isolation and certificates checks with the host's settings: isolation holds, and a proxy that does not answer is could not check", async () => {
    const result = await checks(["isolation", "certificates"]);
    expect(result.outcomes.map((o) => [o.checkId, o.result])).toEqual([
      ["isolation", "holds"],
      ["certificates", "could_not_check"],
    ]);
    expect(result.outcomes[0]!.evidence.facts.map((fact) => fact.label)).toEqual(expect.arrayContaining(["Synapse container", "PostgreSQL container"]));
    const hostProbe = result.outcomes[0]!.evidence.facts.find((fact) => fact.label === "Probe: host's private services")!;
    expect(hostProbe.value).toMatch(/:2019 no \(/);
    // the check's own listener on the gateway: tried too, and not reached either
    expect(hostProbe.value.split("; ").length).toBeGreaterThanOrEqual(2 * 2);
    expect(hostProbe.value).not.toContain("CONNECTED");
    expect(result.outcomes[1]!.evidence.summary).toBe(`The proxy did not complete a TLS handshake for ${spec.serverName}.`);
  });

  it("fails naming what the homeserver's network reached once its firewall rules are gone, on a host that runs nothing else", async () => {
    const names = run.names(spec.serverId);
    await run.firewall.remove({ chainId: names.chainId, tag: names.firewallTag });
    try {
      const [isolation] = (await checks(["isolation"])).outcomes;
      expect(isolation!.result).toBe("fails");
      expect(isolation!.evidence.summary).toMatch(
        /the homeserver's network reaches a listener of the host's, opened for the check on the host \([\d.]+\) at [\d.]+:\d+/,
      );
    } finally {
      await run.firewall.ensure({
        chainId: names.chainId,
        tag: names.firewallTag,
        hsBridge: names.hsBridge,
        dbBridge: names.dbBridge,
        dockerSubnets: await run.runtime.networkSubnets(),
      });
    }
    expect((await checks(["isolation"])).outcomes[0]!.result).toBe("holds");
  });

  it("a check that throws is could_not_check, without the error, while the next still runs", async () => {
    diskEncryptionFails = true;
    try {
      const result = await checks(["disk-encryption", "encryption-by-default"]);
      expect(result.outcomes.map((o) => [o.checkId, o.result])).toEqual([
        ["disk-encryption", "could_not_check"],
        ["encryption-by-default", "holds"],
      ]);
      expect(result.outcomes[0]!.evidence.summary).toBe(CHECK_ERROR_SUMMARY);
      expect(JSON.stringify(result)).not.toContain("/proc");
    } finally {
      diskEncryptionFails = false;
    }
  });

  it("fails naming encryption_enabled_by_default_for_room_type once the configuration Synapse runs with lost it", async () => {
    dropRoomEncryption = true;
    try {
      await run.run("homeserver.settings.apply", { serverId: spec.serverId, settings: DEFAULT_HOMESERVER_SETTINGS });
      const before = await probeUsers();
      const [encryption] = (await checks(["encryption-by-default"])).outcomes;
      expect(encryption).toEqual({
        checkId: "encryption-by-default",
        result: "fails",
        evidence: {
          summary: `The homeserver's configuration does not encrypt private rooms by default: ${ROOM_ENCRYPTION_SETTING} is missing.`,
          facts: [{ label: ROOM_ENCRYPTION_SETTING, value: "(not set)" }],
        },
      });
      expect(await probeUsers()).toBe(before);
    } finally {
      dropRoomEncryption = false;
      await run.run("homeserver.settings.apply", { serverId: spec.serverId, settings: DEFAULT_HOMESERVER_SETTINGS });
    }
  });

  it("at the plan's user limit the probe still runs (exempt, never counted), and a customer's registration is still refused", async () => {
    const record = run.manager.records.read(spec.serverId)!;
    writeUserLimit(run.paths(spec.serverId), record.uid, 1);
    const [encryption] = (await checks(["encryption-by-default"])).outcomes;
    expect(encryption?.result).toBe("holds");
    expect(existsSync(join(run.paths(spec.serverId).synapseModules, PROBE_LOCALPART_FILE))).toBe(false);
    const refused = await run.run("homeserver.users.create", { serverId: spec.serverId, localpart: "over", maxUsers: 1 });
    expect(refused).toMatchObject({ outcome: "user_limit", users: 1 });
  });

  it("a server this host does not run fails the job", async () => {
    await expect(run.run("homeserver.checks", { serverId: run.serverId("elsewhere"), checks: ["disk-encryption"] })).rejects.toThrow(
      /is not provisioned on this host/,
    );
  });
});
