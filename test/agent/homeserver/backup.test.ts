// homeserver.backup and homeserver.restore against the real Docker Engine and
// images: a real Synapse's database and media, dumped, archived, compressed,
// encrypted and uploaded in signed parts; verified in a throwaway sandbox
// (homeserver.restore_verify); restored into a fresh database and
// swapped in (the service account's token rotated: the backup's no longer
// works); and every way a restore must fail without touching the server.
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statfsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { DEFAULT_HOMESERVER_SETTINGS } from "../../../protocol/homeserver-settings.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateAgeKeyPair } from "../../../agent/backup/age.ts";
import { restoreStream } from "../../../agent/backup/backup.ts";
import { restoreSandboxNames } from "../../../agent/homeserver/names.ts";
import { credentialsPath } from "../../../agent/homeserver/service-account.ts";
import { COUNT_ROWS_SQL } from "../../../agent/homeserver/snapshot.ts";
import { requestJson } from "../../../agent/homeserver/synapse-api.ts";
import { BACKUP_MIN_PART_SIZE } from "../../../protocol/messages.ts";
import { BackupTarget } from "./backup-target.ts";
import { waitFor } from "../helpers.ts";
import { TestRun, dockerUsable, ensureImages, runCommand } from "./helpers.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`homeserver backup tests skipped: ${unusable}`);

const MiB = 1024 * 1024;

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)))
    .sort();
}

describe.skipIf(unusable)("homeserver backup and restore (real Docker Engine)", () => {
  let run: TestRun;
  let target: BackupTarget;
  let spec: ReturnType<TestRun["spec"]>;
  const keys = generateAgeKeyPair();
  const marker = `berth-backup-marker-${randomBytes(12).toString("hex")}`;
  const media = randomBytes(12 * MiB);
  let alicePassword = "";
  let mediaUri = "";
  let backupId = "";
  let backupCounts: unknown;

  const base = () => run.synapseBase(spec.serverId);
  const backupPayload = (id: string) => ({
    serverId: spec.serverId,
    backupId: id,
    recipient: keys.recipient,
    partSize: BACKUP_MIN_PART_SIZE,
    uploadBase: target.uploadBase(id),
  });
  const restorePayload = (id: string, identity = keys.identity) => ({ serverId: spec.serverId, backupId: id, identity, downloadUrl: target.objectUrl(id) });
  /** Backups a restore must refuse, each the first backup's object under a new id, spoiled: what it is, its payload, how it is spoiled, the error. */
  const unreadableBackups: Array<[string, (id: string) => ReturnType<typeof restorePayload>, (id: string) => void, RegExp]> = [
    ["a wrong key", (id: string) => restorePayload(id, generateAgeKeyPair().identity), () => undefined, /no identity matches/i],
    [
      "a truncated backup",
      (id: string) => restorePayload(id),
      (id: string) => target.replaceObject(id, target.object(backupId).subarray(0, 5 * MiB)),
      /truncated|does not authenticate/i,
    ],
    [
      "a corrupted backup",
      (id: string) => restorePayload(id),
      (id: string) => {
        const bytes = Buffer.from(target.object(backupId));
        bytes[bytes.length >> 1]! ^= 0xff;
        target.replaceObject(id, bytes);
      },
      /corrupt|authenticat|tamper/i,
    ],
  ];
  const aliceToken = async () => (await run.login(spec.serverId, "alice", alicePassword)).token!;
  const serviceToken = () => (JSON.parse(readFileSync(credentialsPath(run.paths(spec.serverId)), "utf8")) as { accessToken: string }).accessToken;
  const whoami = async (token: string) => (await requestJson(`${await base()}/_matrix/client/v3/account/whoami`, { token })).status;

  beforeAll(async () => {
    await ensureImages();
    run = new TestRun();
    target = new BackupTarget(run.agentIdentity.hostId, run.agentIdentity.privateKey);
    await target.start();
    spec = run.spec("backup");
    await run.run("homeserver.provision", spec);
    alicePassword = await run.registerUser(spec.serverId, spec.serverName, "alice");
    const token = await aliceToken();
    const upload = await fetch(`${await base()}/_matrix/media/v3/upload?filename=random.bin`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/octet-stream" },
      body: media,
    });
    expect(upload.status).toBe(200);
    mediaUri = ((await upload.json()) as { content_uri: string }).content_uri;
    const room = await requestJson(`${await base()}/_matrix/client/v3/createRoom`, { method: "POST", token, body: { preset: "public_chat" } });
    const roomId = (room.body as { room_id: string }).room_id;
    const sent = await requestJson(`${await base()}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t1`, {
      method: "PUT",
      token,
      body: { msgtype: "m.text", body: marker },
    });
    expect(sent.status).toBe(200);
  }, 600_000);

  afterAll(async () => {
    await target?.stop();
    await run?.cleanup();
  }, 180_000);

  it("uploads the snapshot in signed parts of the fixed size, retrying a failed part; only ciphertext leaves the host", async () => {
    backupId = `${run.prefix}-b1`;
    target.failures.push({ match: /PUT .*\/parts\/2$/, status: 503 });
    const result = (await run.run("homeserver.backup", backupPayload(backupId))) as { size: number; parts: Array<{ size: number }>; counts: unknown };
    const stored = target.backups.get(backupId)!;
    expect(stored.aborted).toBeUndefined();
    expect(stored.completed).toMatchObject({ size: result.size });
    expect(result.parts.length).toBeGreaterThanOrEqual(3);
    expect(result.parts.slice(0, -1).every((part) => part.size === BACKUP_MIN_PART_SIZE)).toBe(true);
    expect(target.requests.filter((r) => r.endsWith("/parts/2"))).toHaveLength(2);

    const object = target.object(backupId);
    expect(object.subarray(0, 21).toString("utf8")).toBe("age-encryption.org/v1");
    for (const plaintext of [marker, "@alice:", spec.serverName, "BEGIN", "ed25519 a_"]) expect(object.includes(Buffer.from(plaintext))).toBe(false);
    expect(object.includes(media.subarray(0, 64))).toBe(false);

    const dir = mkdtempSync(join(tmpdir(), "berth-backup-look-"));
    try {
      const extracted = await restoreStream(Readable.from([object]), keys.identity, join(dir, "x"));
      expect(extracted.manifest).toMatchObject({ format: 1, serverId: spec.serverId, serverName: spec.serverName });
      const files = filesUnder(join(dir, "x"));
      expect(files).toEqual(
        expect.arrayContaining([
          "berth-backup.json",
          "database/pg_dump",
          `synapse/${spec.serverName}.signing.key`,
          "synapse/homeserver.yaml",
          "secrets/registration-shared-secret",
        ]),
      );
      expect(files.some((f) => f.startsWith("synapse/media_store/local_content/"))).toBe(true);
      expect(files.some((f) => /remote_content|url_cache/.test(f))).toBe(false);
      // The manifest: the database's rows as the dump holds them (nothing wrote since), the media files as archived.
      const [users, rooms, events] = (await run.sql(spec.serverId, COUNT_ROWS_SQL)).trim().split("|").map(Number);
      const mediaFiles = files.filter((f) => f.startsWith("synapse/media_store/")).length;
      expect(result.counts).toEqual({ users, rooms, events, mediaFiles });
      backupCounts = result.counts;
      expect(users).toBeGreaterThanOrEqual(1);
      expect(rooms).toBe(1);
      expect(mediaFiles).toBeGreaterThanOrEqual(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("verifies the backup in a sandbox beside the running server: Synapse starts on it, it holds what the manifest counted, and the sandbox is gone afterwards", async () => {
    const live = (await run.runtime.inspectContainer(run.names(spec.serverId).synapse))!;
    run.progress.length = 0;
    const result = (await run.run("homeserver.restore_verify", restorePayload(backupId))) as {
      counts: unknown;
      synapseStarted: boolean;
      timings: { databaseRestoreMs: number; synapseStartMs: number; totalMs: number };
    };
    console.info("restore verification measured", JSON.stringify(result.timings));
    expect(result).toMatchObject({ serverId: spec.serverId, backupId, synapseStarted: true });
    expect(result.counts).toEqual(backupCounts);
    expect(result.timings.totalMs).toBeGreaterThanOrEqual(result.timings.databaseRestoreMs + result.timings.synapseStartMs);
    expect(run.progress.map((p) => p.message)).toEqual(
      expect.arrayContaining([
        "restoring the database",
        "starting Synapse on the restored data",
        expect.stringMatching(/^restored and started in a sandbox: /),
      ]),
    );
    // the live server ran throughout, and nothing of the sandbox is left: containers, network, files
    const after = (await run.runtime.inspectContainer(run.names(spec.serverId).synapse))!;
    expect(after.State.StartedAt).toBe(live.State.StartedAt);
    const sandbox = restoreSandboxNames(spec.serverId, run.hostNamespace);
    expect(await run.runtime.inspectContainer(sandbox.synapse)).toBeUndefined();
    expect(await run.runtime.inspectContainer(sandbox.postgres)).toBeUndefined();
    expect(await run.runtime.inspectNetwork(sandbox.dbNetwork)).toBeUndefined();
    expect(readdirSync(join(run.dataRoot, "restore-verify"))).toEqual([]);
    expect((await run.login(spec.serverId, "alice", alicePassword)).status).toBe(200);
  });

  it.each(unreadableBackups)("%s fails its verification, saying why, and leaves no sandbox", async (_what, payload, prepare, message) => {
    const id = `${run.prefix}-${randomBytes(3).toString("hex")}`;
    target.replaceObject(id, target.object(backupId));
    prepare(id);
    await expect(run.run("homeserver.restore_verify", payload(id))).rejects.toThrow(message);
    const sandbox = restoreSandboxNames(spec.serverId, run.hostNamespace);
    expect(await run.runtime.inspectContainer(sandbox.postgres)).toBeUndefined();
    expect(await run.runtime.inspectNetwork(sandbox.dbNetwork)).toBeUndefined();
    expect(readdirSync(join(run.dataRoot, "restore-verify"))).toEqual([]);
  });

  it("a part the Worker refuses aborts the upload: nothing is completed", async () => {
    const id = `${run.prefix}-refused`;
    target.failures.push({ match: /PUT .*\/parts\/1$/, status: 400 });
    await expect(run.run("homeserver.backup", backupPayload(id))).rejects.toThrow(/part 1 failed after 1 attempt: PUT part 1 answered 400/);
    expect(target.backups.get(id)).toMatchObject({ aborted: expect.stringContaining("400") });
    expect(target.backups.get(id)?.completed).toBeUndefined();
  });

  it("a table dropped while the dump waits to lock it (as Synapse drops a finished background update's) does not fail the backup: the dump starts again on a new snapshot", async () => {
    const n = run.names(spec.serverId);
    await run.sql(spec.serverId, "CREATE TABLE _temp_berth_dropped (x int); INSERT INTO _temp_berth_dropped VALUES (1);");
    const holder = new PassThrough();
    const session = await run.runtime.execStreaming(n.postgres, ["psql", "-h", "/run/postgresql", "-U", "synapse", "-d", "synapse", "-XAtq"], {
      stdin: holder,
      env: ["PGPASSFILE=/run/secrets/pgpass"],
    });
    let said = "";
    session.stdout.on("data", (chunk: Buffer) => {
      said += chunk.toString("utf8");
    });
    holder.write("BEGIN;\nLOCK TABLE _temp_berth_dropped IN ACCESS EXCLUSIVE MODE;\nSELECT 'locked';\n");
    await waitFor(() => said.includes("locked"), "the lock held", 30_000);
    const id = `${run.prefix}-dropped`;
    const backup = run.run("homeserver.backup", backupPayload(id));
    const waiting = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = '_temp_berth_dropped' AND NOT l.granted;";
    await waitFor(async () => (await run.sql(spec.serverId, waiting)) === "1", "pg_dump waiting for the lock", 60_000);
    holder.end("DROP TABLE _temp_berth_dropped;\nCOMMIT;\n");
    expect((await session.finished).exitCode).toBe(0);
    await backup;
    expect(target.backups.get(id)?.completed).toBeDefined();
    expect(target.backups.get(id)?.aborted).toBeUndefined();
  });

  // (A dump failing midway fails the archive's stream, and so its upload: test/agent/backup.)
  it("a database that cannot be read fails the backup before anything is uploaded, saying why", async () => {
    const n = run.names(spec.serverId);
    const admin = (sql: string) => run.runtime.exec(n.postgres, ["psql", "-h", "/run/postgresql", "-U", "synapse", "-d", "postgres", "-XAtqc", sql]);
    await run.run("homeserver.stop", { serverId: spec.serverId });
    try {
      await run.runtime.startContainer(n.postgres);
      await run.runtime.waitHealthy(n.postgres, { timeoutMs: 60_000 });
      expect((await admin("ALTER DATABASE synapse RENAME TO synapse_hidden")).exitCode).toBe(0);
      const id = `${run.prefix}-nodump`;
      await expect(run.run("homeserver.backup", backupPayload(id))).rejects.toThrow(/counting the snapshot's rows failed: .*database "synapse" does not exist/);
      expect(target.backups.get(id)).toBeUndefined();
    } finally {
      await admin("ALTER DATABASE synapse_hidden RENAME TO synapse");
      await run.run("homeserver.start", { serverId: spec.serverId });
    }
  });

  it("restores into a fresh database: what came after the backup is gone, what was in it is back", async () => {
    const laterPassword = await run.registerUser(spec.serverId, spec.serverName, "later");
    expect((await run.login(spec.serverId, "later", laterPassword)).status).toBe(200);
    // Settings changed after the backup are the owner's current ones: the restore keeps them.
    const settings = { ...DEFAULT_HOMESERVER_SETTINGS, registration: "token" as const, messageRetentionDays: 7 };
    await run.run("homeserver.settings.apply", { serverId: spec.serverId, settings });
    const serviceTokenBefore = serviceToken();
    const result = await run.run("homeserver.restore", restorePayload(backupId));
    expect(result).toMatchObject({ serverId: spec.serverId, state: "running", backupId });
    expect(run.manager.records.read(spec.serverId)?.settings).toEqual(settings);
    const config = readFileSync(join(run.paths(spec.serverId).synapse, "homeserver.yaml"), "utf8");
    expect(config).toContain("\nenable_registration: true\n");
    expect(config).toContain('max_lifetime: "7d"');

    // The backup's database held the service account's token: it is dead, a new one works.
    expect(await whoami(serviceTokenBefore)).toBe(401);
    expect(serviceToken()).not.toBe(serviceTokenBefore);
    const self = await requestJson(`${await base()}/_synapse/admin/v2/users/${encodeURIComponent(`@berth-service:${spec.serverName}`)}`, {
      token: serviceToken(),
    });
    expect(self).toMatchObject({ status: 200, body: { admin: true, deactivated: false, user_type: "support" } });
    // rotated in the restored database before Synapse started on it, not taken back afterwards
    expect(run.captured.has("taking it back")).toBe(false);

    expect((await run.login(spec.serverId, "later", laterPassword)).status).toBe(403);
    const token = await aliceToken();
    const [, serverName, mediaId] = /^mxc:\/\/([^/]+)\/(.+)$/.exec(mediaUri)!;
    const download = await fetch(`${await base()}/_matrix/client/v1/media/download/${serverName}/${mediaId}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(Buffer.from(await download.arrayBuffer()).equals(media)).toBe(true);
    const databases = await run.runtime.exec(run.names(spec.serverId).postgres, [
      "psql",
      "-h",
      "/run/postgresql",
      "-U",
      "synapse",
      "-d",
      "postgres",
      "-XAtqc",
      "SELECT datname FROM pg_database WHERE datname LIKE 'synapse%' ORDER BY 1",
    ]);
    expect(databases.stdout.trim()).toBe("synapse");
    expect(readdirSync(join(run.paths(spec.serverId).root, "restore"))).toEqual([]);
    expect(existsSync(join(run.paths(spec.serverId).synapse, "media_store.before-restore"))).toBe(false);
  });

  it.each(unreadableBackups)("%s fails clearly and leaves the running homeserver untouched", async (_what, payload, prepare, message) => {
    const id = `${run.prefix}-${randomBytes(3).toString("hex")}`;
    target.replaceObject(id, target.object(backupId));
    prepare(id);
    const before = (await run.runtime.inspectContainer(run.names(spec.serverId).synapse))!;
    const serviceTokenBefore = serviceToken();
    await expect(run.run("homeserver.restore", payload(id))).rejects.toThrow(message);
    const after = (await run.runtime.inspectContainer(run.names(spec.serverId).synapse))!;
    expect(after.Id).toBe(before.Id);
    expect(after.State.StartedAt).toBe(before.State.StartedAt);
    expect(serviceToken()).toBe(serviceTokenBefore);
    expect(await whoami(serviceTokenBefore)).toBe(200);
    expect((await run.login(spec.serverId, "alice", alicePassword)).status).toBe(200);
    expect(readdirSync(join(run.paths(spec.serverId).root, "restore"))).toEqual([]);
  });

  it("a backup that does not fit beside the live data in the storage quota fails the restore, saying so; the running homeserver is untouched", async () => {
    // The quota filled from the host but for 4 MiB: the backup's 12 MiB of media do not fit.
    const root = run.paths(spec.serverId).root;
    const quota = statfsSync(root);
    const filler = join(root, "filler");
    const filled = await runCommand("fallocate", ["-l", String(quota.bavail * quota.bsize - 4 * 1024 * 1024), filler]);
    expect(filled.code, filled.stderr).toBe(0);
    try {
      const before = (await run.runtime.inspectContainer(run.names(spec.serverId).synapse))!;
      await expect(run.run("homeserver.restore", restorePayload(backupId))).rejects.toThrow(
        /the backup does not fit beside the live data in the homeserver's storage \(\d+ MiB\): .*nothing was changed.*(ENOSPC|no space left)/i,
      );
      const after = (await run.runtime.inspectContainer(run.names(spec.serverId).synapse))!;
      expect(after.State.StartedAt).toBe(before.State.StartedAt);
      expect(readdirSync(join(root, "restore"))).toEqual([]);
      expect(await requestJson(`${await base()}/health`)).toEqual({ status: 200, body: "OK" });
    } finally {
      rmSync(filler, { force: true });
    }
  });
});
