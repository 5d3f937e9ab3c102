// A move to another host as the agents see it (the Worker's side: worker/servers/migration.ts):
// the source stopped, its final backup taken with Synapse stopped, then on another host (its own
// data root, state and identity) the homeserver provisioned fresh under the same name and the
// backup restored into it, and started as the move's health check. Its name, signing key, users
// and media carry over; the target's own fresh signing key is dropped. Both "hosts" share one
// Docker Engine here, where container names come from the server id, so the source is destroyed
// before the target provisions (between real hosts it is destroyed last).
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateAgeKeyPair } from "../../../agent/backup/age.ts";
import { signingKeyFileName } from "../../../agent/homeserver/secrets.ts";
import { requestJson } from "../../../agent/homeserver/synapse-api.ts";
import { BACKUP_MIN_PART_SIZE } from "../../../protocol/messages.ts";
import { BackupTarget } from "./backup-target.ts";
import { TestRun, dockerUsable, ensureImages } from "./helpers.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`homeserver migration tests skipped: ${unusable}`);

describe.skipIf(unusable)("moving a homeserver to another host (real Docker Engine)", () => {
  let source: TestRun;
  let target: TestRun;
  let sourceWorker: BackupTarget;
  let targetWorker: BackupTarget;
  const keys = generateAgeKeyPair();

  beforeAll(async () => {
    await ensureImages();
    source = new TestRun();
    target = new TestRun();
    sourceWorker = new BackupTarget(source.agentIdentity.hostId, source.agentIdentity.privateKey);
    targetWorker = new BackupTarget(target.agentIdentity.hostId, target.agentIdentity.privateKey);
    await sourceWorker.start();
    await targetWorker.start();
  }, 600_000);

  afterAll(async () => {
    await sourceWorker?.stop();
    await targetWorker?.stop();
    await source?.cleanup();
    await target?.cleanup();
  }, 180_000);

  it("keeps the server name, the signing key, the users and their media", async () => {
    const spec = source.spec("moving");
    target.serverIds.add(spec.serverId);
    const keyFile = (run: TestRun) => readFileSync(join(run.paths(spec.serverId).synapse, signingKeyFileName(spec.serverName)), "utf8");
    await source.run("homeserver.provision", spec);
    const password = await source.registerUser(spec.serverId, spec.serverName, "alice");
    const login = await source.login(spec.serverId, "alice", password);
    const media = randomBytes(64 * 1024);
    const upload = await fetch(`${await source.synapseBase(spec.serverId)}/_matrix/media/v3/upload?filename=before-the-move.bin`, {
      method: "POST",
      headers: { authorization: `Bearer ${login.token}`, "content-type": "application/octet-stream" },
      body: media,
    });
    expect(upload.status).toBe(200);
    const mediaUri = ((await upload.json()) as { content_uri: string }).content_uri;
    const signingKey = keyFile(source);

    // The source: stopped, then backed up as it is (PostgreSQL started for the dump only).
    await source.run("homeserver.stop", { serverId: spec.serverId });
    const backupId = `${source.prefix}-move`;
    await source.run("homeserver.backup", {
      serverId: spec.serverId,
      backupId,
      recipient: keys.recipient,
      partSize: BACKUP_MIN_PART_SIZE,
      uploadBase: sourceWorker.uploadBase(backupId),
    });
    expect((await source.runtime.inspectContainer(source.names(spec.serverId).synapse))?.State.Running).toBe(false);
    await source.run("homeserver.delete", { serverId: spec.serverId });

    // The target: a fresh homeserver under the same name (a key of its own), then the backup restored into it.
    targetWorker.replaceObject(backupId, sourceWorker.object(backupId));
    await target.run("homeserver.provision", spec);
    expect(keyFile(target)).not.toBe(signingKey);
    const restored = await target.run("homeserver.restore", {
      serverId: spec.serverId,
      backupId,
      identity: keys.identity,
      downloadUrl: targetWorker.objectUrl(backupId),
    });
    expect(restored).toMatchObject({ serverId: spec.serverId, serverName: spec.serverName, state: "running" });
    expect(await target.run("homeserver.start", { serverId: spec.serverId })).toMatchObject({ state: "running" });

    expect(keyFile(target)).toBe(signingKey);
    const base = await target.synapseBase(spec.serverId);
    const published = await requestJson(`${base}/_matrix/key/v2/server`, {});
    const keyId = signingKey.trim().split(/\s+/).slice(0, 2).join(":");
    expect(Object.keys((published.body as { verify_keys: Record<string, unknown> }).verify_keys)).toEqual([keyId]);
    const moved = await target.login(spec.serverId, "alice", password);
    expect(moved.status).toBe(200);
    const [, origin, mediaId] = /^mxc:\/\/([^/]+)\/(.+)$/.exec(mediaUri)!;
    const download = await fetch(`${base}/_matrix/client/v1/media/download/${origin}/${mediaId}`, { headers: { authorization: `Bearer ${moved.token}` } });
    expect(Buffer.from(await download.arrayBuffer()).equals(media)).toBe(true);
  }, 900_000);
});
