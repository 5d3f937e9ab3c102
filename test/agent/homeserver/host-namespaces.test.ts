// Two agents on one Docker Engine, each with a host namespace and a data root of its own (as
// `npm run dev -- --hosts N` runs them), against the real Docker Engine, iptables and images.
// First what one agent must never do to the other: count, measure, stop or delete the other's
// containers, networks and firewall rules, also when both run the same server (a migration),
// and also from the development reset. Then the basis of a migration: a backup made on one
// restores on the other, the server's signing key and users with it, owned by the second's uids.
import { randomInt } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateAgeKeyPair } from "../../../agent/backup/age.ts";
import { writeConfig } from "../../../agent/config.ts";
import { HOST_NAMESPACE_LABEL } from "../../../agent/homeserver/names.ts";
import { signingKeyFileName } from "../../../agent/homeserver/secrets.ts";
import { requestJson } from "../../../agent/homeserver/synapse-api.ts";
import { uidRangeOf } from "../../../agent/homeserver/uids.ts";
import { listHomeserverWorkloads } from "../../../agent/inventory.ts";
import { ContainerStatsCollector } from "../../../agent/metrics.ts";
import { silentLogger } from "../../../agent/log.ts";
import { BACKUP_MIN_PART_SIZE } from "../../../protocol/messages.ts";
import { destroyAgentHomeservers } from "../../../scripts/dev-reset.mjs";
import { BackupTarget } from "./backup-target.ts";
import { TestRun, dockerUsable, ensureImages } from "./helpers.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`host namespace tests skipped: ${unusable}`);

/** Two namespaces no other test process is likely to use at the same time (a letter g–z, then a letter or digit). */
function twoNamespaces(): [string, string] {
  const pick = () => `${"ghijklmnopqrstuvwxyz"[randomInt(20)]}${"abcdefghijklmnopqrstuvwxyz0123456789"[randomInt(36)]}`;
  const first = pick();
  let second = pick();
  while (second === first) second = pick();
  return [first, second];
}

describe.skipIf(unusable)("two agents on one Docker Engine (host namespaces)", { timeout: 300_000 }, () => {
  const [nsA, nsB] = twoNamespaces();
  let a: TestRun;
  let b: TestRun;
  /** The server that moves from a to b; `staying` is b's own. */
  let moving: ReturnType<TestRun["spec"]>;
  let staying: ReturnType<TestRun["spec"]>;
  let alicePassword = "";

  const containersOf = async (run: TestRun, serverId: string) =>
    (await run.runtime.listContainers({ "berth.workload": serverId })).filter((c) => c.Labels[HOST_NAMESPACE_LABEL] === run.hostNamespace);
  const running = async (run: TestRun, serverId: string) => (await containersOf(run, serverId)).map((c) => `${c.Names[0]} ${c.State}`).sort();

  beforeAll(async () => {
    await ensureImages();
    a = new TestRun({ hostNamespace: nsA });
    b = new TestRun({ hostNamespace: nsB });
    moving = a.spec("moving");
    staying = b.spec("staying");
    b.serverIds.add(moving.serverId); // b runs it too, later: its cleanup removes b's copy
    await Promise.all([a.run("homeserver.provision", moving), b.run("homeserver.provision", staying)]);
    alicePassword = await a.registerUser(moving.serverId, moving.serverName, "alice");
  }, 600_000);

  afterAll(async () => {
    await a?.cleanup();
    await b?.cleanup();
  }, 180_000);

  it("each agent's containers and networks carry its namespace in their names and labels, and its tenants uids of its own range", async () => {
    for (const [run, spec] of [
      [a, moving],
      [b, staying],
    ] as const) {
      const names = run.names(spec.serverId);
      const containers = await containersOf(run, spec.serverId);
      expect(containers.map((c) => c.Names[0]).sort()).toEqual([`/${names.postgres}`, `/${names.synapse}`]);
      expect(names.synapse).toBe(`berth-${run.hostNamespace}-${names.shortId}-synapse`);
      const networks = await run.runtime.listNetworks({ "berth.workload": spec.serverId, [HOST_NAMESPACE_LABEL]: run.hostNamespace! });
      expect(networks.map((n) => n.name).sort()).toEqual([names.dbNetwork, names.hsNetwork]);
      const uid = run.manager.records.read(spec.serverId)!.uid;
      const range = uidRangeOf(run.hostNamespace);
      expect(uid).toBeGreaterThanOrEqual(range.first);
      expect(uid).toBeLessThanOrEqual(range.last);
      expect((await run.runtime.inspectContainer(names.synapse))!.Config.User).toBe(`${uid}:${uid}`);
      expect(await run.firewall.list(names.firewallTag)).not.toEqual([]);
    }
  });

  it("an agent's inventory and container stats hold only its own homeservers; the default agent's neither's", async () => {
    const inventoryIds = async (ns: string | undefined) => (await listHomeserverWorkloads(a.runtime, ns)).map((w) => w.id);
    expect(await inventoryIds(nsA)).toContain(moving.serverId);
    expect(await inventoryIds(nsA)).not.toContain(staying.serverId);
    expect(await inventoryIds(nsB)).toContain(staying.serverId);
    expect(await inventoryIds(nsB)).not.toContain(moving.serverId);
    expect(await inventoryIds(undefined)).not.toContain(moving.serverId);
    expect(await inventoryIds(undefined)).not.toContain(staying.serverId);

    const statsIds = async (ns: string | undefined) =>
      new Set((await new ContainerStatsCollector({ hostNamespace: ns, log: silentLogger }).collect()).map((c) => c.workloadId));
    expect([...(await statsIds(nsA))]).toContain(moving.serverId);
    expect([...(await statsIds(nsA))]).not.toContain(staying.serverId);
    expect([...(await statsIds(nsB))]).toContain(staying.serverId);
    expect([...(await statsIds(nsB))]).not.toContain(moving.serverId);
    expect([...(await statsIds(undefined))]).not.toContain(moving.serverId);
  });

  it("an agent told to stop or delete a server it does not run touches nothing of the other agent's that runs it", async () => {
    const before = await running(a, moving.serverId);
    expect(before.every((line) => line.endsWith(" running"))).toBe(true);
    await expect(b.run("homeserver.stop", { serverId: moving.serverId })).rejects.toThrow(/not provisioned on this host/);
    await b.manager.destroy(moving.serverId, b.ctx());
    expect(await running(a, moving.serverId)).toEqual(before);
    const names = a.names(moving.serverId);
    expect((await a.runtime.listNetworks({ "berth.workload": moving.serverId })).map((n) => n.name).sort()).toEqual([names.dbNetwork, names.hsNetwork]);
    expect(await a.firewall.list(names.firewallTag)).not.toEqual([]);
    expect((await a.login(moving.serverId, "alice", alicePassword)).status).toBe(200);
  });

  it("a backup made on one agent restores on the other: the same server name, signing key and users, owned by the second agent's uid", async () => {
    const keys = generateAgeKeyPair();
    const backupId = `${a.prefix}-move`;
    const targetA = new BackupTarget(a.agentIdentity.hostId, a.agentIdentity.privateKey);
    const targetB = new BackupTarget(b.agentIdentity.hostId, b.agentIdentity.privateKey);
    await targetA.start();
    await targetB.start();
    try {
      await a.run("homeserver.backup", {
        serverId: moving.serverId,
        backupId,
        recipient: keys.recipient,
        partSize: BACKUP_MIN_PART_SIZE,
        uploadBase: targetA.uploadBase(backupId),
      });
      // The control plane hands the target host the same object, signed for its own identity.
      targetB.replaceObject(backupId, targetA.object(backupId));

      // The same server, provisioned on b beside a's (which keeps running), then restored from a's backup.
      await b.run("homeserver.provision", moving);
      expect(
        await b.run("homeserver.restore", { serverId: moving.serverId, backupId, identity: keys.identity, downloadUrl: targetB.objectUrl(backupId) }),
      ).toMatchObject({
        serverId: moving.serverId,
        serverName: moving.serverName,
        state: "running",
      });
    } finally {
      await targetA.stop();
      await targetB.stop();
    }

    const keyFile = (run: TestRun) => join(run.paths(moving.serverId).synapse, signingKeyFileName(moving.serverName));
    expect(readFileSync(keyFile(b), "utf8")).toBe(readFileSync(keyFile(a), "utf8"));
    const published = async (run: TestRun) =>
      ((await requestJson(`${await run.synapseBase(moving.serverId)}/_matrix/key/v2/server`)).body as { verify_keys: Record<string, unknown> }).verify_keys;
    expect(Object.keys(await published(b))).toEqual(Object.keys(await published(a)));
    expect(await published(b)).toEqual(await published(a));
    expect((await b.login(moving.serverId, "alice", alicePassword)).status).toBe(200);

    const uidB = b.manager.records.read(moving.serverId)!.uid;
    expect(uidB).not.toBe(a.manager.records.read(moving.serverId)!.uid);
    expect(statSync(keyFile(b)).uid).toBe(uidB);
    // Both agents run the server now, each its own containers: each inventory lists it once, from its own.
    for (const run of [a, b]) {
      expect((await listHomeserverWorkloads(run.runtime, run.hostNamespace)).filter((w) => w.id === moving.serverId)).toEqual([
        { id: moving.serverId, kind: "homeserver", state: "running" },
      ]);
    }
  });

  it("the development reset of one agent destroys all of its homeservers and nothing of the other's", async () => {
    const configDir = mkdtempSync(join(tmpdir(), "berth-ns-config-"));
    try {
      writeConfig(configDir, {
        controlPlaneUrl: "http://127.0.0.1:9",
        hostId: b.agentIdentity.hostId,
        connectUrl: "ws://127.0.0.1:9/agent",
        dataRoot: b.dataRoot,
        stateDir: b.stateDir,
        hostNamespace: nsB,
      });
      expect((await destroyAgentHomeservers(configDir)).sort()).toEqual([moving.serverId, staying.serverId].sort());
    } finally {
      rmSync(configDir, { recursive: true, force: true });
    }
    expect(await containersOf(b, moving.serverId)).toEqual([]);
    expect(await containersOf(b, staying.serverId)).toEqual([]);
    expect(await b.firewall.list(b.names(staying.serverId).firewallTag)).toEqual([]);
    expect(await b.firewall.list(b.names(moving.serverId).firewallTag)).toEqual([]);

    expect((await running(a, moving.serverId)).every((line) => line.endsWith(" running"))).toBe(true);
    expect(await a.firewall.list(a.names(moving.serverId).firewallTag)).not.toEqual([]);
    expect((await a.login(moving.serverId, "alice", alicePassword)).status).toBe(200);
  });
});
