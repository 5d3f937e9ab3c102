// homeserver.import against the real Docker Engine and images: a homeserver with a user, a room,
// a message and media is exported (a Berth full export) and archived as a self-hosted Synapse's
// owner archives theirs (README.md's commands), and each archive becomes a new homeserver on
// another host, where the user logs in and reads what they had. Every archive that must be
// refused is refused with its reason, and nothing of the import is left on the host: no
// container, network, firewall rule, directory, quota, record or uid.
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tarFileHeader, tarPadding, TAR_END } from "../../../agent/backup/tar.ts";
import { importStaging } from "../../../agent/homeserver/names.ts";
import { credentialsPath } from "../../../agent/homeserver/service-account.ts";
import { signingKeyFileName } from "../../../agent/homeserver/secrets.ts";
import { requestJson } from "../../../agent/homeserver/synapse-api.ts";
import { uidFilePath } from "../../../agent/homeserver/uids.ts";
import { BACKUP_MIN_PART_SIZE } from "../../../protocol/messages.ts";
import { shell } from "../backup/helpers.ts";
import { BackupTarget } from "./backup-target.ts";
import { SYNAPSE_IMAGE, TestRun, dockerUsable, ensureImages, runCommand } from "./helpers.ts";
import { expectStockHistoryAt, StockSynapse } from "./stock-synapse.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`homeserver import tests skipped: ${unusable}`);

const PASSPHRASE = `import passphrase ${randomBytes(6).toString("hex")}`;
const WRONG_PASSPHRASE = `not the passphrase ${randomBytes(6).toString("hex")}`;
const MESSAGE = `the minutes of the allotment committee ${randomBytes(4).toString("hex")}`;
const MEDIA = randomBytes(3000);

describe.skipIf(unusable)("importing a homeserver (real Docker Engine, Synapse and PostgreSQL)", () => {
  /** The host the archives come from, and the host they are imported onto. */
  let source: TestRun;
  let host: TestRun;
  let sourceTarget: BackupTarget;
  let hostTarget: BackupTarget;
  let spec: ReturnType<TestRun["spec"]>;
  let alicePassword = "";
  let roomId = "";
  let mediaUri = "";
  let exported: Buffer;
  /** Where the Synapse archive was made from (synapse.dump, the signing key, media_store). */
  let archiveDir = "";
  let synapseArchive: Buffer;
  /** The schema versions of our Synapse image, as Synapse itself says them. */
  let schema: { current: number; compat: number };

  beforeAll(async () => {
    await ensureImages();
    source = new TestRun();
    host = new TestRun();
    sourceTarget = new BackupTarget(source.agentIdentity.hostId, source.agentIdentity.privateKey);
    hostTarget = new BackupTarget(host.agentIdentity.hostId, host.agentIdentity.privateKey);
    await sourceTarget.start();
    await hostTarget.start();

    spec = source.spec("source");
    await source.run("homeserver.provision", spec);
    alicePassword = await source.registerUser(spec.serverId, spec.serverName, "alice");
    const token = (await source.login(spec.serverId, "alice", alicePassword)).token!;
    roomId = await source.roomWithMessage(spec.serverId, token, MESSAGE, "private_chat");
    mediaUri = await source.uploadMedia(spec.serverId, token, MEDIA, "minutes.bin");

    const exportId = `${source.prefix}-export`;
    await source.run("homeserver.full_export", {
      serverId: spec.serverId,
      exportId,
      passphrase: PASSPHRASE,
      partSize: BACKUP_MIN_PART_SIZE,
      uploadBase: sourceTarget.uploadBase(exportId),
    });
    exported = sourceTarget.object(exportId);

    // README.md's commands, as the owner of a Synapse in Docker runs them (the socket and password file are this PostgreSQL's).
    archiveDir = join(source.root, "self-hosted");
    mkdirSync(archiveDir);
    const postgres = source.names(spec.serverId).postgres;
    const synapseData = source.paths(spec.serverId).synapse;
    shell(
      `docker exec -e PGPASSFILE=/run/secrets/pgpass ${postgres} pg_dump --format=custom -U synapse -d synapse -h /run/postgresql > synapse.dump` +
        ` && cp ${synapseData}/${signingKeyFileName(spec.serverName)} . && cp -r ${synapseData}/media_store .`,
      archiveDir,
    );
    synapseArchive = synapseTar(`synapse.dump ${signingKeyFileName(spec.serverName)} media_store`);

    const versions = shell(
      `docker run --rm --network none --entrypoint python ${SYNAPSE_IMAGE} -c "from synapse.storage.schema import SCHEMA_VERSION, SCHEMA_COMPAT_VERSION; print(SCHEMA_VERSION, SCHEMA_COMPAT_VERSION)"`,
    );
    const [current, compat] = versions.trim().split(" ").map(Number);
    schema = { current: current!, compat: compat! };
  }, 600_000);

  afterAll(async () => {
    await sourceTarget?.stop();
    await hostTarget?.stop();
    await source?.cleanup();
    await host?.cleanup();
  }, 180_000);

  /** `tar --format=posix -czf synapse-archive.tar.gz <entries>` in the archive's directory; its bytes. */
  function synapseTar(entries: string, dir = archiveDir): Buffer {
    shell(`rm -f synapse-archive.tar.gz && tar --format=posix -czf synapse-archive.tar.gz ${entries}`, dir);
    return readFileSync(join(dir, "synapse-archive.tar.gz"));
  }

  /** A new homeserver on the import host, of the source's server name unless told otherwise. */
  function importSpec(name: string, overrides: Record<string, unknown> = {}) {
    return { ...host.spec(name), serverName: spec.serverName, publicBaseUrl: spec.publicBaseUrl, ...overrides };
  }

  /** The job's delivered payload, the archive served as the Worker serves an upload. */
  function importPayload(archive: Buffer, target: ReturnType<typeof importSpec>, passphrase?: string) {
    const importId = `${host.prefix}-${randomBytes(3).toString("hex")}`;
    hostTarget.replaceObject(importId, archive);
    return { importId, spec: target, downloadUrl: hostTarget.objectUrl(importId), ...(passphrase === undefined ? {} : { passphrase }) };
  }

  async function expectNothingLeft(serverId: string): Promise<void> {
    const names = host.names(serverId);
    const paths = host.paths(serverId);
    for (const container of [names.synapse, names.postgres, `${names.synapse}-schema`]) expect(await host.runtime.inspectContainer(container)).toBeUndefined();
    expect(await host.runtime.inspectNetwork(names.dbNetwork)).toBeUndefined();
    expect(await host.runtime.inspectNetwork(names.hsNetwork)).toBeUndefined();
    expect((await runCommand("iptables", ["-S"])).stdout).not.toContain(names.firewallTag);
    expect(existsSync(paths.root)).toBe(false);
    expect(existsSync(paths.storageImage)).toBe(false);
    expect(readFileSync("/proc/self/mounts", "utf8")).not.toContain(paths.root);
    expect(host.manager.records.read(serverId)).toBeUndefined();
    const uids = existsSync(uidFilePath(host.stateDir)) ? (JSON.parse(readFileSync(uidFilePath(host.stateDir), "utf8")) as { servers: object }).servers : {};
    expect(uids).not.toHaveProperty(serverId);
    expect(existsSync(join(host.dataRoot, "imports")) ? readdirSync(join(host.dataRoot, "imports")) : []).toEqual([]);
  }

  /** Import `importId`'s staging directory of a server on the import host, as its unpacking left it: `dump` in its synapse.dump. */
  function stagingOf(serverId: string, importId: string, dump: string): string {
    const staging = importStaging(host.paths(serverId), importId);
    mkdirSync(staging, { recursive: true });
    writeFileSync(join(staging, "synapse.dump"), dump);
    return staging;
  }

  /** What an interrupted import leaves of its server: a provisioned homeserver of its id (not the archive's), running, with bob, a user the archive does not have. */
  async function halfMade(target: ReturnType<typeof importSpec>): Promise<string> {
    await host.run("homeserver.provision", target);
    return await host.registerUser(target.serverId, target.serverName, "bob");
  }

  /**
   * Import `importId` cleaned up the leftovers of the interrupted import `interrupted`, saying so, and
   * made the archive's homeserver from nothing: alice's, bob gone, the archive's signing key, no staging left.
   */
  async function expectMadeAgain(serverId: string, bobPassword: string, { importId, interrupted }: { importId: string; interrupted: string }): Promise<void> {
    await expectAliceAt(serverId);
    expect((await host.login(serverId, "bob", bobPassword)).status).toBe(403);
    const signingKey = (dir: string) => readFileSync(join(dir, signingKeyFileName(spec.serverName)), "utf8");
    expect(signingKey(host.paths(serverId).synapse)).toBe(signingKey(archiveDir));
    expect(existsSync(host.paths(serverId).imports)).toBe(false);
    expect(host.captured.lines).toContainEqual(
      expect.objectContaining({
        level: "warn",
        importId,
        msg: `the interrupted import ${interrupted} of homeserver ${serverId} (the agent stopped during it) is being cleaned up and the import started again`,
      }),
    );
  }

  /** alice logs in on the imported server and finds her message and her upload. */
  async function expectAliceAt(serverId: string): Promise<void> {
    const login = await host.login(serverId, "alice", alicePassword);
    expect(login.status).toBe(200);
    const base = await host.synapseBase(serverId);
    const messages = await requestJson(`${base}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=50`, { token: login.token! });
    expect(messages.status).toBe(200);
    expect((messages.body as { chunk: Array<{ content: { body?: string } }> }).chunk.map((event) => event.content.body)).toContain(MESSAGE);
    const [, origin, mediaId] = /^mxc:\/\/([^/]+)\/(.+)$/.exec(mediaUri)!;
    const download = await fetch(`${base}/_matrix/client/v1/media/download/${origin}/${mediaId}`, { headers: { authorization: `Bearer ${login.token}` } });
    expect(Buffer.from(await download.arrayBuffer()).equals(MEDIA)).toBe(true);
  }

  it("a Berth full export becomes a new homeserver: alice logs in and reads her message and media; the result counts what it holds; the passphrase is said nowhere", async () => {
    const target = importSpec("from-export");
    host.progress.length = 0;
    const result = (await host.run("homeserver.import", importPayload(exported, target, PASSPHRASE))) as Record<string, unknown>;
    expect(result).toMatchObject({
      serverId: target.serverId,
      serverName: spec.serverName,
      state: "running",
      adminUserId: `@admin:${spec.serverName}`,
      counts: { rooms: 1, mediaFiles: 1 },
      schema: { found: schema.current, after: schema.current },
    });
    const counts = result.counts as { users: number; events: number };
    expect(counts.users).toBe(3); // alice, the admin and the service account
    expect(counts.events).toBeGreaterThan(5);
    expect(host.proxy.state.get(spec.serverName)).toMatchObject({ port: 8008 });
    await expectAliceAt(target.serverId);

    // The service account's token from the archive opens nothing here; the one this host made does.
    const base = await host.synapseBase(target.serverId);
    const whoami = async (token: string) => (await requestJson(`${base}/_matrix/client/v3/account/whoami`, { token })).status;
    const tokenOf = (run: TestRun, serverId: string) =>
      (JSON.parse(readFileSync(credentialsPath(run.paths(serverId)), "utf8")) as { accessToken: string }).accessToken;
    expect(await whoami(tokenOf(source, spec.serverId))).toBe(401);
    expect(await whoami(tokenOf(host, target.serverId))).toBe(200);

    expect(host.progress.map((p) => p.message)).toEqual(
      expect.arrayContaining([
        "downloading, decrypting and unpacking the archive",
        "restoring the archive's database",
        "starting Synapse (it migrates the database to its schema)",
      ]),
    );
    expect(await host.everythingSaid(target.serverId, [result])).not.toContain(PASSPHRASE);
    await host.run("homeserver.delete", { serverId: target.serverId });
  }, 600_000);

  it("a self-hosted Synapse's archive, made with README.md's commands, becomes a new homeserver: alice logs in and reads her message and media", async () => {
    const target = importSpec("from-synapse");
    const result = await host.run("homeserver.import", importPayload(synapseArchive, target));
    expect(result).toMatchObject({ serverId: target.serverId, state: "running", counts: { rooms: 1, mediaFiles: 1 }, schema: { found: schema.current } });
    await expectAliceAt(target.serverId);
    await host.run("homeserver.delete", { serverId: target.serverId });
  }, 600_000);

  it("a stock Synapse with encrypted history, archived by hand with README.md's commands, becomes a Berth homeserver: its users log in and read it, alice's encrypted part with the room keys she exported", async () => {
    // The self-hosted homeserver: stock images, Synapse's own generated configuration, users made by
    // its admin's command, an encrypted room and a public one, as its users left them.
    const serverName = `stock-${host.prefix}.test`;
    const dir = join(source.root, "stock");
    mkdirSync(dir);
    const stock = new StockSynapse(source.prefix, dir, serverName);
    stock.startPostgres();
    stock.generateConfig();
    stock.editConfig();
    const history = await stock.leaveHistory(await stock.start());
    const archive = readFileSync(stock.archiveByHand(join(dir, "archive")));

    const target = { ...host.spec("from-stock"), serverName };
    const result = await host.run("homeserver.import", importPayload(archive, target));
    expect(result).toMatchObject({ serverId: target.serverId, state: "running", counts: { rooms: 2 }, schema: { found: schema.current } });
    expect((result as { counts: { users: number } }).counts.users).toBeGreaterThanOrEqual(2);
    await expectStockHistoryAt(fetch, await host.synapseBase(target.serverId), serverName, history);
    await host.run("homeserver.delete", { serverId: target.serverId });
  }, 600_000);

  it("an import interrupted by the agent's death is started again from nothing when its job is sent again", async () => {
    // What the agent's death mid-import leaves: the job's staging directory (only the import's end
    // removes it) and a homeserver of the target's id that is not yet the archive's.
    const target = importSpec("interrupted");
    const payload = importPayload(synapseArchive, target);
    const bobPassword = await halfMade(target);
    stagingOf(target.serverId, payload.importId, "the first half of an archive");

    const result = await host.run("homeserver.import", payload);
    expect(result).toMatchObject({
      serverId: target.serverId,
      state: "running",
      counts: { users: 3, rooms: 1, mediaFiles: 1 },
      schema: { found: schema.current },
    });
    await expectMadeAgain(target.serverId, bobPassword, { importId: payload.importId, interrupted: payload.importId });
    await host.run("homeserver.delete", { serverId: target.serverId });
  }, 600_000);

  it("an interrupted import whose job expired is cleaned up by the next import of the same homeserver", async () => {
    // The Worker failed the interrupted import when its job expired (the agent down longer than its
    // timeout); its owner uploaded again: a new import, of a new id, finds the earlier one's leftovers.
    const target = importSpec("expired");
    const bobPassword = await halfMade(target);
    const expired = `${host.prefix}-expired-import`;
    stagingOf(target.serverId, expired, "the first half of an archive");
    const payload = importPayload(synapseArchive, target);

    expect(await host.run("homeserver.import", payload)).toMatchObject({ serverId: target.serverId, state: "running", counts: { users: 3, rooms: 1 } });
    await expectMadeAgain(target.serverId, bobPassword, { importId: payload.importId, interrupted: expired });
    await host.run("homeserver.delete", { serverId: target.serverId });
  }, 600_000);

  it("an import never overwrites a homeserver it finds without a staging directory of its server: its job sent again once finished, or while another server's import is staged, is refused and the homeserver is untouched", async () => {
    const target = importSpec("imported-once");
    const refused = `homeserver ${target.serverId} is on this host already: an import makes a new one`;
    const payload = importPayload(synapseArchive, target);
    await host.run("homeserver.import", payload);
    const record = host.manager.records.read(target.serverId);
    const synapse = await host.runtime.inspectContainer(host.names(target.serverId).synapse);

    await expect(host.run("homeserver.import", payload)).rejects.toThrow(new RegExp(`^${refused}$`));
    const anotherServer = host.spec("another-server").serverId;
    const another = stagingOf(anotherServer, `${host.prefix}-another-import`, "another server's archive");
    await expect(host.run("homeserver.import", payload)).rejects.toThrow(new RegExp(`^${refused}$`));

    expect(host.manager.records.read(target.serverId)).toEqual(record);
    expect(await host.runtime.inspectContainer(host.names(target.serverId).synapse)).toMatchObject({ Id: synapse!.Id, State: { Running: true } });
    await expectAliceAt(target.serverId);
    expect(readFileSync(join(another, "synapse.dump"), "utf8")).toBe("another server's archive");
    expect(existsSync(host.paths(target.serverId).imports)).toBe(false);
    rmSync(host.paths(anotherServer).imports, { recursive: true });
    await host.run("homeserver.delete", { serverId: target.serverId });
  }, 600_000);

  it("deleting a homeserver removes an interrupted import's staging, even with nothing else of it on the host, and no other server's", async () => {
    const serverId = host.spec("deleted").serverId;
    const staging = stagingOf(serverId, `${host.prefix}-cut-short`, "the owner's database");
    writeFileSync(join(staging, signingKeyFileName(spec.serverName)), "ed25519 a_key the owner's signing key");
    const anotherServer = host.spec("not-deleted").serverId;
    const another = stagingOf(anotherServer, `${host.prefix}-another-import`, "another server's archive");

    expect(await host.run("homeserver.delete", { serverId })).toEqual({ serverId, state: "deleted" });
    expect(existsSync(host.paths(serverId).imports)).toBe(false);
    expect(readFileSync(join(another, "synapse.dump"), "utf8")).toBe("another server's archive");
    rmSync(host.paths(anotherServer).imports, { recursive: true });
  });

  /** Archives refused before anything runs: what it is, how to make it, the passphrase, the refusal. */
  const refusals: Array<[string, () => Buffer, string | undefined, string | RegExp, Record<string, unknown>?]> = [
    ["of another server name", () => exported, PASSPHRASE, "", { serverName: "elsewhere.example.org" }],
    ["with a wrong passphrase", () => exported, WRONG_PASSPHRASE, "the passphrase does not open this export"],
    ["without its passphrase", () => exported, undefined, "the archive is an encrypted export: its passphrase is needed to import it"],
    ["truncated", () => exported.subarray(0, exported.length >> 1), PASSPHRASE, /^the export is truncated or corrupted \(.+\)$/],
    [
      "with a byte changed",
      () => {
        const changed = Buffer.from(exported);
        changed[changed.length >> 1]! ^= 0x01;
        return changed;
      },
      PASSPHRASE,
      /^the export is truncated or corrupted \(.+\)$/,
    ],
    [
      "holding a symbolic link",
      () => {
        symlinkSync("/etc", join(archiveDir, "media_store", "escape"));
        try {
          return synapseTar(`synapse.dump ${signingKeyFileName(spec.serverName)} media_store`);
        } finally {
          shell("rm media_store/escape", archiveDir);
        }
      },
      undefined,
      /^the archive cannot be imported: refusing symbolic link media_store\/escape: /,
    ],
    [
      "holding a ../ entry",
      () =>
        Buffer.concat([
          ...[
            ["synapse.dump", "x"],
            ["media_store/../../escaped", "x"],
          ].flatMap(([name, data]) => [tarFileHeader({ name: name!, size: data!.length, mtime: 0 }), Buffer.from(data!), tarPadding(data!.length)]),
          TAR_END,
        ]),
      undefined,
      'the archive cannot be imported: refusing entry "media_store/../../escaped": not a plain relative path inside the archive',
    ],
    [
      "without synapse.dump",
      () => synapseTar(`${signingKeyFileName(spec.serverName)} media_store`),
      undefined,
      "the archive cannot be imported: the archive holds no synapse.dump",
    ],
    [
      "in GNU tar's format",
      () => {
        shell(`rm -f gnu.tar.gz && tar --format=gnu -czf gnu.tar.gz synapse.dump ${signingKeyFileName(spec.serverName)}`, archiveDir);
        return readFileSync(join(archiveDir, "gnu.tar.gz"));
      },
      undefined,
      /make it again with tar --format=posix$/,
    ],
  ];

  it.each(refusals)("an archive %s is refused, saying why, and nothing of the import is left", async (_what, archive, passphrase, reason, overrides) => {
    const target = importSpec(`refused-${randomBytes(2).toString("hex")}`, overrides);
    const expected = reason === "" ? `the archive is of ${spec.serverName}, not ${target.serverName}` : reason;
    await expect(host.run("homeserver.import", importPayload(archive(), target, passphrase))).rejects.toThrow(
      typeof expected === "string" ? new RegExp(`^${expected.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`) : expected,
    );
    await expectNothingLeft(target.serverId);
  });

  it("a database whose schema is newer than our Synapse's is refused with both numbers, once restored, and nothing of the import is left", async () => {
    // A copy of the source's database with its schema_version row edited, dumped again.
    const postgres = source.names(spec.serverId).postgres;
    const psql = (database: string, sql: string) =>
      shell(
        `docker exec -i -e PGPASSFILE=/run/secrets/pgpass ${postgres} psql -h /run/postgresql -U synapse -d ${database} -XAtq -v ON_ERROR_STOP=1 -c "${sql}"`,
      );
    psql("postgres", "DROP DATABASE IF EXISTS newer");
    psql("postgres", "CREATE DATABASE newer TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'");
    shell(
      `docker exec -i -e PGPASSFILE=/run/secrets/pgpass ${postgres} pg_restore --no-owner -h /run/postgresql -U synapse -d newer < synapse.dump`,
      archiveDir,
    );
    psql("newer", `UPDATE schema_version SET version = ${schema.current + 5}`);
    const dir = join(source.root, "newer");
    mkdirSync(dir);
    shell(
      `docker exec -e PGPASSFILE=/run/secrets/pgpass ${postgres} pg_dump --format=custom -U synapse -d newer -h /run/postgresql > synapse.dump && cp -r ${archiveDir}/media_store ${archiveDir}/*.signing.key .`,
      dir,
    );
    psql("postgres", "DROP DATABASE newer");
    const target = importSpec("newer-schema");
    await expect(
      host.run("homeserver.import", importPayload(synapseTar(`synapse.dump ${signingKeyFileName(spec.serverName)} media_store`, dir), target)),
    ).rejects.toThrow(
      `the archive's database is at Synapse schema version ${schema.current + 5}, newer than this host's Synapse understands (${schema.current}): it can be imported once Berth runs a Synapse that new`,
    );
    await expectNothingLeft(target.serverId);
  }, 300_000);

  it("an archive with more users than the plan allows is refused, once restored, and nothing of the import is left", async () => {
    // alice and the admin; the service account is hidden from the limit
    const target = importSpec("too-many-users", { maxUsers: 1 });
    await expect(host.run("homeserver.import", importPayload(synapseArchive, target))).rejects.toThrow(
      /^the archive's homeserver has 2 users, more than the plan's limit of 1$/,
    );
    await expectNothingLeft(target.serverId);
  }, 300_000);

  it("the passphrase, wrong or right, is in no log line, progress message or error of the job", async () => {
    const target = importSpec("said-nowhere");
    const error = await host.run("homeserver.import", importPayload(exported, target, WRONG_PASSPHRASE)).catch((e: Error) => e);
    const said = JSON.stringify([host.captured.lines, host.progress, String(error), (error as Error).stack]);
    expect(said).toContain("the passphrase does not open this export");
    for (const passphrase of [PASSPHRASE, WRONG_PASSPHRASE]) expect(said).not.toContain(passphrase);
  });
});
