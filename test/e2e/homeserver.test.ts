// The heart of the product, end to end on this machine: the Worker under
// `wrangler dev`, the Stripe emulator, Caddy with its internal CA, and the
// local berth-agent running a hardened Synapse + PostgreSQL in Docker
// (scripts/dev.mjs, started here with its agent). A paying customer creates a
// homeserver through the API; its owner sets the admin password; the admin
// makes two users; the two, with matrix-js-sdk and its Rust crypto in Node,
// reach it over HTTPS trusting only Caddy's CA, talk in a direct-message room
// that the homeserver encrypts by default, and send an encrypted attachment.
// Then, on the host, the plaintext is nowhere: not in a dump of the
// PostgreSQL database, not in the media store or any other file of the
// server's data dir, not in either container's log nor the dev processes'
// output. A message in an unencrypted public room (and an unencrypted upload)
// is the control: the same search does find those.
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Agent } from "undici";
import { EventType, MsgType, Preset, type MatrixClient, type MatrixEvent } from "matrix-js-sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Api, type DevServer, Fatal, runCleanups, waitFor } from "./agent-helpers";
import {
  bufferHaystack,
  caddyDispatcher,
  decryptAttachment,
  directoryHaystack,
  dockerLogs,
  downloadMedia,
  encryptAttachment,
  fetchThrough,
  matrixRequest,
  passwordLogin,
  payingCustomer,
  createHomeserver,
  untilRunning,
  type BackupView,
  type ServerView,
  run,
  startCryptoClient,
  stopClient,
  waitForMessage,
  requireHomeserverHost,
  homeserverDiagnostics,
  skipAfterFirstFailure,
  Timeline,
  startDevWithAgent,
  stopDevWithAgent,
  type EncryptedFile,
  type FetchFn,
  type Haystack,
  type Login,
} from "./homeserver-helpers";

/** Unique, random, and nowhere else: what must (or, for the control, must not) stay unreadable. */
const secret = (label: string) => `berth-e2e-${label}-${randomBytes(16).toString("hex")}`;
const SECRETS = {
  aliceToBob: secret("alice-to-bob"),
  bobToAlice: secret("bob-to-alice"),
  attachment: secret("attachment"),
  attachmentName: secret("attachment-name"),
};
/** Passwords: the customer's and the admin account's go to the Worker (only their hashes may be kept or go on), the users' to Synapse. */
const PASSWORDS = {
  account: secret("account-password"),
  admin: secret("admin-password"),
  alice: secret("alice-password"),
  bob: secret("bob-password"),
};
const CONTROL = {
  message: secret("control-message"),
  upload: secret("control-upload"),
};

let dev: DevServer;
let api: Api;
let server: ServerView | undefined;
let shortId: string | undefined;
let fetchHs: FetchFn;
let dispatcher: Agent | undefined;
let alice: MatrixClient | undefined;
let bob: MatrixClient | undefined;
let aliceLogin: Login;
let bobLogin: Login;
let dmRoomId: string;
let publicRoomId: string;
let attachmentCiphertext: Buffer;
let aliceRoomKeys: string;
let bobRoomKeys: string;
let backupId: string;
/** The DM's events as sent (event ids): the dump must hold them, as ciphertext. */
const dmEventIds: string[] = [];
const timeline = new Timeline();
const mark = (what: string) => timeline.mark(what);

const synapseContainer = () => `berth-${shortId}-synapse`;
const postgresContainer = () => `berth-${shortId}-postgres`;

async function serverView(): Promise<ServerView> {
  return api.expect<ServerView>(200, "GET", `/api/servers/${server!.id}`);
}

describe("a customer's homeserver: end-to-end encrypted chat over HTTPS, nothing readable on the host", () => {
  beforeAll(async () => {
    await requireHomeserverHost();

    dev = await startDevWithAgent("berth-e2e-homeserver-");
    api = new Api(dev.baseUrl);
    mark("dev server (Worker, Stripe emulator, Caddy, agent) answers");
  });

  afterAll(async () => {
    await stopClient(alice);
    await stopClient(bob);
    await dispatcher?.close().catch(() => undefined);
    await stopDevWithAgent(dev, "homeserver e2e");
    await runCleanups();
    console.log(`[homeserver e2e] timings:\n${timeline}`);
  });

  // Once a step fails, the later ones (which build on it) are skipped.
  skipAfterFirstFailure(() => homeserverDiagnostics(timeline, dev, api, server));

  it("a paying customer creates a homeserver through the API, and it runs", { timeout: 240_000 }, async () => {
    await payingCustomer(api, dev.baseUrl, `homeserver-${randomUUID()}@example.com`, PASSWORDS.account);
    expect(api.cookie).toMatch(/^__Host-berth_session=/);
    mark("subscription active");

    // The local agent comes online a few seconds after the Worker: until then there is no capacity.
    const name = `e2e-${randomBytes(4).toString("hex")}`;
    server = await createHomeserver(api, name);
    shortId = server.id.replaceAll("-", "").slice(0, 12);
    expect(server).toMatchObject({ name, status: "provisioning", serverName: `${name}.berth.localhost` });
    expect(server.homeserverUrl).toBe(`https://${name}.berth.localhost:${dev.httpsPort}`);
    mark(`server ${server.id} created (provisioning)`);

    server = await untilRunning(api, server.id, mark);
    expect(server.synapseVersion).toMatch(/^\d+\.\d+/);
    mark(`server running (Synapse ${server.synapseVersion})`);
  });

  it("the owner sets the admin password through the API; the admin makes two users over HTTPS trusting only Caddy's CA", { timeout: 120_000 }, async () => {
    const base = server!.homeserverUrl;
    const ca = await dev.caddyRoot();
    dispatcher = caddyDispatcher(ca);
    fetchHs = fetchThrough(dispatcher);

    const versions = await matrixRequest<{ versions: string[] }>(fetchHs, "GET", `${base}/_matrix/client/versions`);
    expect(versions.body.versions.length).toBeGreaterThan(0);
    // The same name and address without Caddy's CA: the certificate is refused (verification is on).
    const untrusting = new Agent({
      connect: {
        lookup: ((_host: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) =>
          options.all ? callback(null, [{ address: "127.0.0.1", family: 4 }]) : callback(null, "127.0.0.1", 4)) as never,
      },
    });
    const refused = await fetchThrough(untrusting)(`${base}/_matrix/client/versions`).then(
      (response) => `answered ${response.status}`,
      (error: Error & { cause?: { code?: string; message?: string } }) => `${error.cause?.code ?? ""} ${error.cause?.message ?? error.message}`,
    );
    await untrusting.close();
    expect(refused).toMatch(/certificate|CERT|self.signed|issuer/i);

    const { url, adminUserId } = await api.expect<{ url: string; adminUserId: string }>(201, "POST", `/api/servers/${server!.id}/admin-password-link`);
    expect(adminUserId).toMatch(new RegExp(`^@[^:]+:${server!.serverName.replaceAll(".", "\\.")}$`));
    const token = new URL(url).searchParams.get("token");
    expect(token).toBeTruthy();
    const adminPassword = PASSWORDS.admin;
    const setting = await api.expect<{ status: string; jobId: string; adminUserId: string }>(202, "POST", `/api/servers/${server!.id}/admin-password`, {
      token,
      password: adminPassword,
    });
    expect(setting).toMatchObject({ status: "setting", adminUserId });

    // The job writes the hash into Synapse's database (and may restart Synapse): log in until it works.
    const admin = await waitFor(
      `a log-in as ${adminUserId} with the new password`,
      async () => {
        const view = await serverView();
        if (view.lastJob?.kind === "homeserver.set_admin_password" && view.lastJob.status === "failed") {
          throw new Fatal(`homeserver.set_admin_password failed: ${view.lastJob.error}`);
        }
        if (view.lastJob?.kind === "homeserver.set_admin_password" && view.lastJob.status !== "succeeded") return undefined;
        const response = await fetchHs(`${base}/_matrix/client/v3/login`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: adminUserId }, password: adminPassword }),
          signal: AbortSignal.timeout(30_000),
        });
        if (response.status === 200) return (await response.json()) as { access_token: string; user_id: string };
        throw new Error(`login answered ${response.status}: ${await response.text()}`);
      },
      { timeoutMs: 90_000, intervalMs: 1_000 },
    );
    expect(admin.user_id).toBe(adminUserId);
    mark("admin password set; admin logged in over HTTPS");

    const passwords = { alice: PASSWORDS.alice, bob: PASSWORDS.bob };
    for (const [user, password] of Object.entries(passwords)) {
      const created = await matrixRequest(fetchHs, "PUT", `${base}/_synapse/admin/v2/users/${encodeURIComponent(`@${user}:${server!.serverName}`)}`, {
        token: admin.access_token,
        body: { password, displayname: user, admin: false },
        expect: [201],
      });
      expect(created.body).toMatchObject({ name: `@${user}:${server!.serverName}`, admin: false, deactivated: false });
    }
    aliceLogin = await passwordLogin(fetchHs, base, "alice", passwords.alice);
    bobLogin = await passwordLogin(fetchHs, base, "bob", passwords.bob);
    expect(aliceLogin.userId).toBe(`@alice:${server!.serverName}`);
    expect(bobLogin.userId).toBe(`@bob:${server!.serverName}`);
    mark("alice and bob created and logged in");
  });

  it("alice and bob talk in a DM the homeserver encrypts by default, and share an encrypted attachment; a public room is the unencrypted control", {
    timeout: 150_000,
  }, async () => {
    const base = server!.homeserverUrl;
    alice = await startCryptoClient(fetchHs, base, aliceLogin);
    bob = await startCryptoClient(fetchHs, base, bobLogin);
    const cryptoVersion = alice.getCrypto()!.getVersion();
    console.log(`[homeserver e2e] matrix-js-sdk crypto: ${cryptoVersion}`);
    expect(cryptoVersion).toMatch(/Rust SDK/);
    mark("both clients syncing with Rust crypto");

    // Bob's device keys are on the server before alice encrypts for him.
    await waitFor(
      "alice to see bob's device",
      async () => (await alice!.getCrypto()!.getUserDeviceInfo([bobLogin.userId], true)).get(bobLogin.userId)?.has(bobLogin.deviceId),
      { timeoutMs: 30_000, intervalMs: 500 },
    );

    // A DM as Element makes one: no encryption asked for; the homeserver turns it on (encryption_enabled_by_default_for_room_type: invite).
    const { room_id } = await alice.createRoom({ is_direct: true, invite: [bobLogin.userId], preset: Preset.TrustedPrivateChat });
    dmRoomId = room_id;
    const encryption = await alice.getStateEvent(dmRoomId, EventType.RoomEncryption, "");
    expect(encryption).toMatchObject({ algorithm: "m.megolm.v1.aes-sha2" });
    await bob.joinRoom(dmRoomId);
    for (const [client, other] of [
      [alice, bobLogin.userId],
      [bob, aliceLogin.userId],
    ] as const) {
      await waitFor(
        `${client.getUserId()} to see the DM encrypted, with ${other} in it`,
        async () =>
          client.getRoom(dmRoomId)?.getMember(other)?.membership === "join" &&
          client.getRoom(dmRoomId)?.getMember(client.getUserId()!)?.membership === "join" &&
          (await client.getCrypto()!.isEncryptionEnabledInRoom(dmRoomId)),
        { timeoutMs: 30_000, intervalMs: 200 },
      );
    }
    mark("encrypted DM joined by both");

    const expectEncryptedOnTheWire = (event: MatrixEvent, plaintext: string, sender: string) => {
      expect(event.getSender()).toBe(sender);
      expect(event.isEncrypted()).toBe(true);
      expect(event.getWireType()).toBe("m.room.encrypted");
      expect(event.getWireContent().algorithm).toBe("m.megolm.v1.aes-sha2");
      expect(typeof event.getWireContent().ciphertext).toBe("string");
      expect(JSON.stringify(event.event)).not.toContain(plaintext);
    };

    dmEventIds.push((await alice.sendTextMessage(dmRoomId, SECRETS.aliceToBob)).event_id);
    const atBob = await waitForMessage(bob, dmRoomId, SECRETS.aliceToBob);
    expectEncryptedOnTheWire(atBob, SECRETS.aliceToBob, aliceLogin.userId);
    expect(atBob.getClearContent()).toMatchObject({ msgtype: "m.text", body: SECRETS.aliceToBob });

    dmEventIds.push((await bob.sendTextMessage(dmRoomId, SECRETS.bobToAlice)).event_id);
    const atAlice = await waitForMessage(alice, dmRoomId, SECRETS.bobToAlice);
    expectEncryptedOnTheWire(atAlice, SECRETS.bobToAlice, bobLogin.userId);
    mark("messages exchanged and decrypted both ways");

    // An encrypted attachment: only ciphertext is uploaded (no file name); the key travels in the encrypted event.
    const attachmentPlaintext = Buffer.from(`${SECRETS.attachment}\n`.repeat(64), "utf8");
    const { ciphertext, info } = encryptAttachment(attachmentPlaintext);
    attachmentCiphertext = ciphertext;
    const upload = await alice.uploadContent(ciphertext, { type: "application/octet-stream", includeFilename: false });
    const file: EncryptedFile = { ...info, url: upload.content_uri };
    const sentFile = await alice.sendMessage(dmRoomId, {
      msgtype: MsgType.File,
      body: SECRETS.attachmentName,
      info: { mimetype: "text/plain", size: attachmentPlaintext.length },
      file,
    } as never);
    dmEventIds.push(sentFile.event_id);
    const fileEvent = await waitForMessage(bob, dmRoomId, SECRETS.attachmentName);
    expectEncryptedOnTheWire(fileEvent, SECRETS.attachmentName, aliceLogin.userId);
    const received = fileEvent.getContent().file as EncryptedFile;
    expect(received.url).toBe(upload.content_uri);
    const downloaded = await downloadMedia(fetchHs, base, received.url, bobLogin.accessToken);
    expect(downloaded.equals(ciphertext)).toBe(true);
    expect(decryptAttachment(downloaded, received).equals(attachmentPlaintext)).toBe(true);
    mark("encrypted attachment sent, downloaded and decrypted");

    // The control: a public room (not invite-only) is not encrypted by default; its message and an unencrypted upload are stored readable.
    const { room_id: publicRoom } = await alice.createRoom({ preset: Preset.PublicChat, name: "e2e control" });
    publicRoomId = publicRoom;
    await expect(alice.getStateEvent(publicRoomId, EventType.RoomEncryption, "")).rejects.toMatchObject({ errcode: "M_NOT_FOUND" });
    await waitFor("alice to have the public room", () => alice!.getRoom(publicRoomId)?.getMyMembership() === "join", { timeoutMs: 30_000 });
    expect(await alice.getCrypto()!.isEncryptionEnabledInRoom(publicRoomId)).toBe(false);
    await alice.sendTextMessage(publicRoomId, CONTROL.message);
    const control = await waitForMessage(alice, publicRoomId, CONTROL.message);
    expect(control.isEncrypted()).toBe(false);
    expect(control.getWireType()).toBe("m.room.message");
    await alice.uploadContent(Buffer.from(`${CONTROL.upload}\n`, "utf8"), { type: "text/plain", includeFilename: false });
    // The DM's events on the server are ciphertext (its own view, not the clients').
    const messages = await matrixRequest<{ chunk: Array<{ type: string; content: Record<string, unknown> }> }>(
      fetchHs,
      "GET",
      `${base}/_matrix/client/v3/rooms/${encodeURIComponent(dmRoomId)}/messages?dir=b&limit=50`,
      { token: bobLogin.accessToken },
    );
    const sent = messages.body.chunk.filter((event) => event.type === "m.room.encrypted" || event.type === "m.room.message");
    expect(sent.length).toBe(3);
    expect(sent.every((event) => event.type === "m.room.encrypted")).toBe(true);
    mark("control message and upload stored unencrypted");

    // Each exports its room keys (as a user would to a file or key backup): after a restore, new devices import them.
    aliceRoomKeys = await alice.getCrypto()!.exportRoomKeysAsJson();
    bobRoomKeys = await bob.getCrypto()!.exportRoomKeysAsJson();
    // Both clients stop before the host is searched.
    await stopClient(alice);
    await stopClient(bob);
    alice = bob = undefined;
  });

  it("on the host, the plaintext is nowhere: database dump, media store, data dir, container logs; the control is found", { timeout: 120_000 }, async () => {
    const dump = await run("docker", ["exec", postgresContainer(), "pg_dump", "-U", "synapse", "synapse"]);
    expect(dump.code, dump.stderr.toString("utf8")).toBe(0);
    const dumpText = dump.stdout.toString("utf8");
    expect(dumpText).toContain("CREATE TABLE public.event_json");
    // The dump holds the DM's events, as ciphertext.
    expect(dmEventIds).toHaveLength(3);
    for (const eventId of dmEventIds) {
      const row = dumpText.split("\n").find((line) => line.includes(eventId) && line.includes('"content"'));
      expect(row, `the event_json row of ${eventId}`).toBeDefined();
      expect(row).toContain('"type":"m.room.encrypted"');
      expect(row).toContain('"ciphertext"');
    }
    const dataDir = join(dev.agentDataRoot, "homeservers", server!.id);
    const mediaStore = join(dataDir, "synapse", "media_store");
    const media = directoryHaystack("media store", mediaStore);
    const everything = directoryHaystack("the server's data dir", dataDir);
    const haystacks: Haystack[] = [
      bufferHaystack("pg_dump", dump.stdout),
      media,
      everything,
      bufferHaystack(`docker logs ${synapseContainer()}`, await dockerLogs(synapseContainer())),
      bufferHaystack(`docker logs ${postgresContainer()}`, await dockerLogs(postgresContainer())),
      bufferHaystack("the dev processes' output (Worker, emulator, Caddy, agent)", Buffer.from(dev.log(), "utf8")),
      // the Worker's local D1, the agent's state and job journal, Caddy's storage, and the data dir again
      directoryHaystack("the whole dev state dir", dev.persistTo),
    ];
    console.log(
      `[homeserver e2e] searched: ${haystacks.map((h) => `${h.name} ${(h.size / 1024).toFixed(0)} KiB`).join(", ")} (${everything.files} files in the data dir, ${media.files} in the media store)`,
    );

    // The attachment is stored, as the ciphertext alice uploaded.
    expect(media.withBytes(attachmentCiphertext).length, "the encrypted attachment in the media store").toBe(1);

    const found: string[] = [];
    for (const [label, plaintext] of Object.entries(SECRETS)) {
      for (const haystack of haystacks) {
        for (const where of haystack.find(plaintext)) found.push(`${label} in ${where}`);
      }
    }
    expect(found, "plaintext of the encrypted conversation found on the host").toEqual([]);
    const leakedPasswords: string[] = [];
    for (const [label, password] of Object.entries(PASSWORDS)) {
      for (const haystack of haystacks) {
        for (const where of haystack.find(password)) leakedPasswords.push(`${label} password in ${where}`);
      }
    }
    expect(leakedPasswords, "a password stored or logged in clear").toEqual([]);

    // The control: the same search finds what was sent unencrypted.
    expect(haystacks[0]!.find(CONTROL.message), "the control message in the database dump").toEqual(["pg_dump"]);
    expect(media.find(CONTROL.upload).length, "the control upload in the media store").toBe(1);
    expect(everything.find(CONTROL.upload).length, "the control upload in the data dir").toBe(1);
    expect(everything.find(CONTROL.message).length, "the control message in PostgreSQL's files").toBeGreaterThan(0);
    mark("host searched");
  });

  it("a backup asked for through the API is listed with its size; R2 holds only ciphertext of it", { timeout: 180_000 }, async () => {
    const requested = await api.expect<{ id: string; status: string; trigger: string }>(202, "POST", `/api/servers/${server!.id}/backups`);
    expect(requested).toMatchObject({ trigger: "manual" });
    backupId = requested.id;
    const done = await waitFor(
      "the backup to succeed",
      async () => {
        const { backups } = await api.expect<{ backups: BackupView[] }>(200, "GET", `/api/servers/${server!.id}/backups`);
        const backup = backups.find((b) => b.id === backupId);
        if (backup?.status === "failed") throw new Fatal(`the backup failed: ${backup.error}`);
        return backup?.status === "succeeded" ? backup : undefined;
      },
      { timeoutMs: 150_000, intervalMs: 1_000 },
    );
    expect(done.sizeBytes).toBeGreaterThan(0);
    expect(done.keptUntil).not.toBeNull();
    mark(`backup ${backupId} succeeded (${done.sizeBytes} bytes)`);

    // The local R2 (wrangler's state directory) holds the upload; nothing in it is readable.
    const r2 = directoryHaystack("local R2", join(dev.persistTo, "v3", "r2"));
    expect(r2.size).toBeGreaterThanOrEqual(done.sizeBytes!);
    const dataDir = join(dev.agentDataRoot, "homeservers", server!.id);
    const signingKey = readFileSync(join(dataDir, "synapse", `${server!.serverName}.signing.key`), "utf8")
      .trim()
      .split(" ")[2]!;
    const readable: string[] = [];
    for (const [label, needle] of Object.entries({ ...SECRETS, ...CONTROL, alice: aliceLogin.userId, bob: bobLogin.userId, signingKey })) {
      readable.push(...r2.find(needle).map((where) => `${label} in ${where}`));
    }
    expect(readable, "plaintext in the stored backup").toEqual([]);
  });

  it("the homeserver destroyed on its host is provisioned again empty; restoring the backup brings the users and the encrypted history back", {
    timeout: 420_000,
  }, async () => {
    const base = server!.homeserverUrl;
    await run("docker", ["rm", "-f", "-v", synapseContainer(), postgresContainer()]);
    // Its data is a filesystem of its own (the storage quota): unmounted, its image deleted.
    expect((await run("umount", [join(dev.agentDataRoot, "homeservers", server!.id)])).code).toBe(0);
    rmSync(join(dev.agentDataRoot, "storage-images", `${server!.id}.ext4`));
    rmSync(join(dev.agentDataRoot, "homeservers", server!.id), { recursive: true, force: true });
    mark("containers and data destroyed on the host");

    // Reconciliation provisions it again, empty: alice no longer exists.
    await waitFor(
      "the homeserver to be provisioned again, empty",
      async () => {
        const response = await fetchHs(`${base}/_matrix/client/v3/login`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: "alice" }, password: PASSWORDS.alice }),
          signal: AbortSignal.timeout(10_000),
        });
        return response.status === 403;
      },
      { timeoutMs: 240_000, intervalMs: 2_000 },
    );
    mark("provisioned again, empty");

    await api.expect(202, "POST", `/api/servers/${server!.id}/restore`, { backupId });
    await waitFor(
      "the restore to finish",
      async () => {
        const view = await serverView();
        if (view.lastJob?.kind !== "homeserver.restore") return undefined;
        if (view.lastJob.status === "failed") throw new Fatal(`the restore failed: ${view.lastJob.error}`);
        return view.lastJob.status === "succeeded" && view.status === "running";
      },
      { timeoutMs: 150_000, intervalMs: 1_000 },
    );
    mark("restored");

    // The same users log in, on new devices; with their exported room keys the DM's history decrypts.
    alice = await startCryptoClient(fetchHs, base, await passwordLogin(fetchHs, base, "alice", PASSWORDS.alice));
    bob = await startCryptoClient(fetchHs, base, await passwordLogin(fetchHs, base, "bob", PASSWORDS.bob));
    await alice.getCrypto()!.importRoomKeysAsJson(aliceRoomKeys);
    await bob.getCrypto()!.importRoomKeysAsJson(bobRoomKeys);
    for (const client of [alice, bob]) {
      for (const text of [SECRETS.aliceToBob, SECRETS.bobToAlice]) {
        const event = await waitForMessage(client, dmRoomId, text);
        expect(event.isEncrypted()).toBe(true);
      }
    }
    const control = await waitForMessage(alice, publicRoomId, CONTROL.message);
    expect(control.isEncrypted()).toBe(false);
    mark("users back; encrypted history decrypted after the restore");
  });
});
