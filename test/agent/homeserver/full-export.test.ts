// "Download your homeserver", run by the agent against a real Synapse: the
// export is uploaded (signed, in parts, to a stand-in for the Worker's
// endpoints), decrypted with the age CLI and the passphrase, unpacked with
// zstd and tar, and read with stock pg_restore. It holds the database, the
// media, the signing key, the settings and a README; it never holds Berth's
// secrets or configuration, and the passphrase appears nowhere the agent said
// anything. Its database is restored as its README says into the stock
// PostgreSQL image, then run on Synapse's own generated config with the
// exported signing key and media, where alice logs in with matrix-js-sdk and
// reads her history: the encrypted part with the room keys she exported.
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Preset } from "matrix-js-sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EXPORT_README, EXPORT_SETTINGS } from "../../../agent/homeserver/full-export.ts";
import { signingKeyFileName } from "../../../agent/homeserver/secrets.ts";
import { requestJson } from "../../../agent/homeserver/synapse-api.ts";
import { BACKUP_MIN_PART_SIZE } from "../../../protocol/messages.ts";
import { messageBodies, sdkPasswordLogin, startCryptoClient, stopClient } from "../../matrix-clients.ts";
import { ageCliDecryptWithPassphrase, run as runTool, shell } from "../backup/helpers.ts";
import { runCleanups, tempDir, waitFor } from "../helpers.ts";
import { BackupTarget } from "./backup-target.ts";
import { TestRun, dockerUsable, ensureImages } from "./helpers.ts";
import { StockSynapse } from "./stock-synapse.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`homeserver full export tests skipped: ${unusable}`);

const PASSPHRASE = `export passphrase ${randomBytes(6).toString("hex")}`;
const MESSAGE = "the minutes of the allotment committee";
const SECRET = `what only the committee reads ${randomBytes(4).toString("hex")}`;
const MEDIA = randomBytes(3000);

describe.skipIf(unusable)("a customer's full export (real Synapse, age CLI, stock pg_restore)", () => {
  let testRun: TestRun;
  let spec: ReturnType<TestRun["spec"]>;
  let target: BackupTarget;
  let result: { exportId: string; size: number; mediaFiles: number; parts: unknown[] };
  let unpacked: string;
  let roomId: string;
  let password: string;
  let encryptedRoomId: string;
  /** alice's room keys as Element exports them: all she needs to read her encrypted history anywhere. */
  let roomKeys: string;
  let stock: StockSynapse;

  beforeAll(async () => {
    await ensureImages();
    testRun = new TestRun();
    target = new BackupTarget(testRun.agentIdentity.hostId, testRun.agentIdentity.privateKey);
    await target.start();
    spec = testRun.spec("export");
    await testRun.run("homeserver.provision", spec);
    password = await testRun.registerUser(spec.serverId, spec.serverName, "alice");
    const token = (await testRun.login(spec.serverId, "alice", password)).token!;
    const base = await testRun.synapseBase(spec.serverId);
    roomId = await testRun.roomWithMessage(spec.serverId, token, MESSAGE);
    await testRun.uploadMedia(spec.serverId, token, MEDIA, "minutes.bin");

    // An encrypted private room, on alice's device, whose keys she exports.
    const alice = await startCryptoClient(fetch, base, await sdkPasswordLogin(fetch, base, "alice", password));
    try {
      encryptedRoomId = (await alice.createRoom({ preset: Preset.PrivateChat, name: "committee" })).room_id;
      await waitFor(
        async () => alice.getRoom(encryptedRoomId) && (await alice.getCrypto()!.isEncryptionEnabledInRoom(encryptedRoomId)),
        "the private room, encrypted by default",
        30_000,
      );
      const { event_id } = await alice.sendTextMessage(encryptedRoomId, SECRET);
      const sent = await requestJson(`${base}/_matrix/client/v3/rooms/${encodeURIComponent(encryptedRoomId)}/event/${encodeURIComponent(event_id)}`, { token });
      expect((sent.body as { type: string }).type).toBe("m.room.encrypted");
      roomKeys = await alice.getCrypto()!.exportRoomKeysAsJson();
    } finally {
      await stopClient(alice);
    }

    const exportId = `export-${randomBytes(4).toString("hex")}`;
    result = (await testRun.run("homeserver.full_export", {
      serverId: spec.serverId,
      exportId,
      passphrase: PASSPHRASE,
      partSize: BACKUP_MIN_PART_SIZE,
      uploadBase: target.uploadBase(exportId),
    })) as typeof result;
    const ciphertext = target.object(exportId);
    expect(result.size).toBe(ciphertext.length);
    unpacked = tempDir();
    writeFileSync(join(unpacked, "export.tar.zst"), ageCliDecryptWithPassphrase(ciphertext, PASSPHRASE));
    shell("mkdir export && zstd -dc export.tar.zst | tar -x -C export", unpacked);
  }, 600_000);

  afterAll(async () => {
    await target?.stop();
    await testRun?.cleanup();
    await runCleanups();
  }, 180_000);

  it("is an age file to the passphrase alone (one scrypt stanza)", () => {
    const header = target.object(result.exportId).subarray(0, 200).toString("latin1");
    expect(header).toMatch(/^age-encryption\.org\/v1\n-> scrypt \S{22} 18\n\S{43}\n--- /);
    expect(target.object(result.exportId).includes(MESSAGE)).toBe(false);
  });

  it("holds a README, the settings, the signing key and the media; never Berth's secrets or its homeserver.yaml", () => {
    const dir = join(unpacked, "export");
    const readme = readFileSync(join(dir, EXPORT_README), "utf8");
    expect(readme).toContain(`# Your homeserver ${spec.serverName}`);
    expect(readme).toMatch(/pg_restore --no-owner/);
    expect(readme).toMatch(/SYNAPSE_SERVER_NAME=/);
    expect(readFileSync(join(dir, EXPORT_SETTINGS), "utf8")).toContain(`server_name: "${spec.serverName}"`);
    const key = signingKeyFileName(spec.serverName);
    expect(readFileSync(join(dir, "synapse", key), "utf8")).toBe(readFileSync(join(testRun.paths(spec.serverId).synapse, key), "utf8"));
    expect(result.mediaFiles).toBe(1);
    const local = join(dir, "synapse", "media_store", "local_content");
    const files = shell("find . -type f", local).trim().split("\n");
    expect(files).toHaveLength(1);
    expect(readFileSync(join(local, files[0]!)).equals(MEDIA)).toBe(true);
    expect(existsSync(join(dir, "secrets"))).toBe(false);
    expect(readdirSync(join(dir, "synapse")).sort()).toEqual([key, "media_store"].sort());
    const manifest = JSON.parse(readFileSync(join(dir, "berth-backup.json"), "utf8")) as { serverName: string };
    expect(manifest.serverName).toBe(spec.serverName);
  });

  it("holds a dump stock pg_restore reads, with the users and the history", () => {
    const dump = join(unpacked, "synapse.dump");
    shell(`cat export/database/pg_dump.part-* > ${dump}`, unpacked);
    const sql = runTool("pg_restore", ["--data-only", "-f", "-", dump]).toString("utf8");
    expect(sql).toContain(`@alice:${spec.serverName}`);
    expect(sql).toContain(MESSAGE);
  });

  it("never says the passphrase: not in the result, the progress, the logs or the containers", async () => {
    const said = await testRun.everythingSaid(spec.serverId, [result]);
    expect(said).not.toContain(PASSPHRASE);
    expect(testRun.progress.some((p) => p.message?.includes("deriving the key"))).toBe(true);
  });

  it("restores as its README says into the stock PostgreSQL image: alice and her history are there", () => {
    stock = new StockSynapse(testRun.prefix, unpacked, spec.serverName);
    stock.startPostgres();
    shell(`cat export/database/pg_dump.part-* | ${stock.dbExec("pg_restore --no-owner --role=synapse -U synapse -d synapse --exit-on-error")}`, unpacked);
    expect(stock.psql("SELECT name FROM users")).toContain(`@alice:${spec.serverName}`);
    expect(stock.psql(`SELECT count(*) FROM event_json WHERE room_id = '${roomId}' AND json LIKE '%${MESSAGE}%'`)).toBe("1");
  }, 300_000);

  it("runs on stock Synapse as its README says: alice logs in with matrix-js-sdk and reads her history, the encrypted part with her exported room keys", async () => {
    // 4. Synapse generates its configuration for the same server name (the official image's
    //    `generate`; here the image's Synapse itself).
    stock.generateConfig();
    // 5. The exported signing key replaces the generated one; the media goes in place.
    const key = signingKeyFileName(spec.serverName);
    shell(
      `cp export/synapse/${key} ${stock.data}/${key} && mkdir -p ${stock.data}/media_store && cp -r export/synapse/media_store/. ${stock.data}/media_store/ && cp export/${EXPORT_SETTINGS} ${stock.data}/exported-settings.yaml`,
      unpacked,
    );
    // 6. The database section replaced and the exported settings merged in.
    stock.editConfig(['config.update(yaml.safe_load(open("/data/exported-settings.yaml")))']);
    // 7. Synapse starts on the restored database.
    const base = await stock.start();

    const login = await sdkPasswordLogin(fetch, base, "alice", password);
    expect(login.userId).toBe(`@alice:${spec.serverName}`);
    const alice = await startCryptoClient(fetch, base, login, { roomKeys });
    try {
      expect(await waitFor(async () => (await messageBodies(alice, roomId)).includes(MESSAGE), "the public room's message", 60_000)).toBe(true);
      expect(
        await waitFor(
          async () => (await messageBodies(alice, encryptedRoomId)).includes(SECRET),
          "the encrypted message, decrypted with the exported keys",
          60_000,
        ),
      ).toBe(true);
      expect(
        alice
          .getRoom(encryptedRoomId)!
          .getLiveTimeline()
          .getEvents()
          .find((event) => event.getContent().body === SECRET)
          ?.isEncrypted(),
      ).toBe(true);
    } finally {
      await stopClient(alice);
    }
  }, 600_000);
});
