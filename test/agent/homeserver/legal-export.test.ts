// A legal request's export, run by the agent against a real Synapse: an
// end-to-end encrypted conversation and an unencrypted room, exported, uploaded
// (signed, in parts, to a stand-in for the Worker's endpoints) and decrypted
// here with the operator's age identity. The export holds the encrypted room's
// events as the ciphertext they are and never their plaintext, the unencrypted
// room's events as they are, only metadata without content, and exactly what
// the scope narrows it to by user, room and time.
import { createCipheriv, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgeDecryptStream, generateAgeKeyPair } from "../../../agent/backup/age.ts";
import { requestJson } from "../../../agent/homeserver/synapse-api.ts";
import { BACKUP_MIN_PART_SIZE } from "../../../protocol/messages.ts";
import { BackupTarget } from "./backup-target.ts";
import { TestRun, dockerUsable, ensureImages } from "./helpers.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`homeserver legal export tests skipped: ${unusable}`);

interface ExportLine {
  record: "export" | "user" | "room" | "membership" | "event" | "end";
  [field: string]: unknown;
}
interface EventLine extends ExportLine {
  eventId: string;
  roomId: string;
  type: string;
  sender: string;
  originServerTs: number;
  stored?: { content: Record<string, unknown>; event_id?: string; sender: string; type: string };
}
interface Scope {
  users?: string[];
  rooms?: string[];
  from?: number;
  until?: number;
  content?: boolean;
}

const E2EE_PLAINTEXT = "meet at the north gate at midnight";
const E2EE_REPLY = "bring the documents, not the phone";
const PUBLIC_MESSAGE = "the bakery opens at seven";

/** Ciphertext as a Megolm client would send it: made on the client with a key the server never sees. */
function clientCiphertext(plaintext: string): string {
  const cipher = createCipheriv("aes-256-gcm", randomBytes(32), randomBytes(12));
  return Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final(), cipher.getAuthTag()])
    .toString("base64")
    .replace(/=+$/, "");
}

describe.skipIf(unusable)("a legal request's export (real Synapse)", () => {
  let run: TestRun;
  let spec: ReturnType<TestRun["spec"]>;
  let target: BackupTarget;
  const operator = generateAgeKeyPair();
  let alice: string;
  let bob: string;
  let aliceId: string;
  let bobId: string;
  let conversation: string;
  let square: string;
  let notes: string;
  const ciphertexts: string[] = [];
  let later: number;

  const client = async (token: string, method: string, path: string, body?: unknown) =>
    requestJson(`${await run.synapseBase(spec.serverId)}/_matrix/client/v3${path}`, { method, token, ...(body === undefined ? {} : { body }) });
  const createRoom = async (token: string, body: Record<string, unknown>) => {
    const answer = await client(token, "POST", "/createRoom", body);
    expect(answer.status).toBe(200);
    return (answer.body as { room_id: string }).room_id;
  };
  const send = async (token: string, roomId: string, type: string, content: Record<string, unknown>) => {
    const answer = await client(token, "PUT", `/rooms/${encodeURIComponent(roomId)}/send/${type}/${randomBytes(8).toString("hex")}`, content);
    expect(answer.status).toBe(200);
    return (answer.body as { event_id: string }).event_id;
  };
  const sendEncrypted = async (token: string, roomId: string, plaintext: string) => {
    const ciphertext = clientCiphertext(plaintext);
    ciphertexts.push(ciphertext);
    return send(token, roomId, "m.room.encrypted", {
      algorithm: "m.megolm.v1.aes-sha2",
      ciphertext,
      sender_key: randomBytes(32).toString("base64").replace(/=+$/, ""),
      session_id: randomBytes(32).toString("base64").replace(/=+$/, ""),
      device_id: "TESTDEVICE",
    });
  };

  /** Runs the export job, then downloads what it uploaded and decrypts it with the operator's identity. */
  const exportOf = async (scope: Scope) => {
    const exportId = `legal-${randomBytes(4).toString("hex")}`;
    const result = (await run.run("homeserver.legal_export", {
      serverId: spec.serverId,
      exportId,
      reference: "Court order 2026/117",
      scope: { users: [], rooms: [], content: true, ...scope },
      recipient: operator.recipient,
      partSize: BACKUP_MIN_PART_SIZE,
      uploadBase: target.uploadBase(exportId),
    })) as { exportId: string; records: Record<string, number>; size: number };
    const ciphertext = target.object(exportId);
    expect(result.size).toBe(ciphertext.length);
    const text = Buffer.concat(await Readable.from([ciphertext]).pipe(new AgeDecryptStream(operator.identity)).toArray()).toString("utf8");
    const lines: ExportLine[] = text
      .trimEnd()
      .split("\n")
      .map((line: string) => JSON.parse(line) as ExportLine);
    const of = <T extends ExportLine = ExportLine>(record: ExportLine["record"]) => lines.filter((line) => line.record === record) as T[];
    return { result, ciphertext, text, lines, of, events: of<EventLine>("event") };
  };

  beforeAll(async () => {
    await ensureImages();
    run = new TestRun();
    target = new BackupTarget(run.agentIdentity.hostId, run.agentIdentity.privateKey);
    await target.start();
    spec = run.spec("legal");
    await run.run("homeserver.provision", spec);
    alice = (await run.login(spec.serverId, "alice", await run.registerUser(spec.serverId, spec.serverName, "alice"))).token!;
    bob = (await run.login(spec.serverId, "bob", await run.registerUser(spec.serverId, spec.serverName, "bob"))).token!;
    aliceId = `@alice:${spec.serverName}`;
    bobId = `@bob:${spec.serverName}`;
    // Private rooms are encrypted by the generated configuration.
    conversation = await createRoom(alice, { preset: "private_chat", invite: [bobId] });
    expect((await client(bob, "POST", `/join/${encodeURIComponent(conversation)}`, {})).status).toBe(200);
    square = await createRoom(alice, { preset: "public_chat" });
    expect((await client(bob, "POST", `/join/${encodeURIComponent(square)}`, {})).status).toBe(200);
    notes = await createRoom(alice, { preset: "public_chat" });
    await sendEncrypted(alice, conversation, E2EE_PLAINTEXT);
    await send(alice, square, "m.room.message", { msgtype: "m.text", body: PUBLIC_MESSAGE });
    await send(alice, notes, "m.room.message", { msgtype: "m.text", body: "alice's own notes" });
    // Everything after this instant, and nothing before it, is in a time-bounded export.
    later = Date.now() + 1;
    while (Date.now() < later) await new Promise((resolve) => setImmediate(resolve));
    await sendEncrypted(bob, conversation, E2EE_REPLY);
    await send(bob, square, "m.room.message", { msgtype: "m.text", body: "see you there" });
  }, 600_000);

  afterAll(async () => {
    await target?.stop();
    await run?.cleanup();
  }, 180_000);

  it("with content: the encrypted conversation as its ciphertext and nothing of its plaintext, the unencrypted room as it is", async () => {
    const exported = await exportOf({});
    // The operator's recipient is the only one: the file is no plaintext, and nobody else opens it.
    expect(exported.ciphertext.subarray(0, 22).toString()).toBe("age-encryption.org/v1\n");
    expect(exported.ciphertext.includes(PUBLIC_MESSAGE)).toBe(false);
    await expect(Readable.from([exported.ciphertext]).pipe(new AgeDecryptStream(generateAgeKeyPair().identity)).toArray()).rejects.toThrow(
      /no identity matches/,
    );

    const [first] = exported.lines;
    expect(first).toMatchObject({ record: "export", format: 1, reference: "Court order 2026/117", serverName: spec.serverName, scope: { content: true } });
    expect(exported.lines.at(-1)).toEqual({ record: "end", records: exported.result.records });
    expect(exported.result.records).toEqual({
      users: exported.of("user").length,
      rooms: 3,
      memberships: exported.of("membership").length,
      events: exported.events.length,
    });
    expect(exported.of("room")).toContainEqual(expect.objectContaining({ roomId: conversation, encryption: "m.megolm.v1.aes-sha2" }));
    expect(exported.of("room")).toContainEqual(expect.objectContaining({ roomId: square, encryption: null }));

    const encrypted = exported.events.filter((event) => event.roomId === conversation && event.type === "m.room.encrypted");
    expect(encrypted.map((event) => event.stored?.content.ciphertext)).toEqual(ciphertexts);
    expect(encrypted.map((event) => event.sender)).toEqual([aliceId, bobId]);
    for (const plaintext of [E2EE_PLAINTEXT, E2EE_REPLY]) expect(exported.text).not.toContain(plaintext);

    const message = exported.events.find((event) => event.roomId === square && event.stored?.content.body === PUBLIC_MESSAGE);
    expect(message?.stored).toMatchObject({ type: "m.room.message", sender: aliceId, content: { msgtype: "m.text", body: PUBLIC_MESSAGE } });
  });

  it("without content: metadata only (rooms, members, who sent what type of event when), no event's content", async () => {
    const exported = await exportOf({ content: false });
    expect(exported.events.length).toBeGreaterThan(0);
    expect(exported.events.every((event) => event.stored === undefined)).toBe(true);
    expect(exported.text).not.toContain(PUBLIC_MESSAGE);
    for (const ciphertext of ciphertexts) expect(exported.text).not.toContain(ciphertext);
    expect(exported.events.filter((event) => event.type === "m.room.encrypted").map((event) => event.sender)).toEqual([aliceId, bobId]);
    expect(exported.of("membership")).toContainEqual(expect.objectContaining({ roomId: conversation, userId: bobId, membership: "join" }));
  });

  it("a user narrows it to that user: their account, the rooms they were in, their memberships and the events they sent", async () => {
    const exported = await exportOf({ users: [bobId] });
    expect(exported.of("user").map((user) => user.userId)).toEqual([bobId]);
    expect(new Set(exported.of("room").map((room) => room.roomId))).toEqual(new Set([conversation, square]));
    expect(new Set(exported.of("membership").map((membership) => membership.userId))).toEqual(new Set([bobId]));
    expect(new Set(exported.events.map((event) => event.sender))).toEqual(new Set([bobId]));
    expect(exported.events.map((event) => event.stored?.content.ciphertext).filter(Boolean)).toEqual([ciphertexts[1]]);
    expect(exported.text).not.toContain(PUBLIC_MESSAGE);
  });

  it("a room narrows it to that room and its members", async () => {
    const exported = await exportOf({ rooms: [square] });
    expect(exported.of("room").map((room) => room.roomId)).toEqual([square]);
    expect(new Set(exported.events.map((event) => event.roomId))).toEqual(new Set([square]));
    expect(new Set(exported.of("user").map((user) => user.userId))).toEqual(new Set([aliceId, bobId]));
    expect(exported.text).toContain(PUBLIC_MESSAGE);
    for (const ciphertext of ciphertexts) expect(exported.text).not.toContain(ciphertext);
  });

  it("a time range narrows events and memberships to those sent within it", async () => {
    const after = await exportOf({ from: later });
    expect(after.events.length).toBe(2);
    expect(after.events.every((event) => event.originServerTs >= later && event.sender === bobId)).toBe(true);
    expect(after.events.map((event) => event.stored?.content.ciphertext).filter(Boolean)).toEqual([ciphertexts[1]]);
    expect(after.of("membership")).toEqual([]);

    const before = await exportOf({ until: later });
    expect(before.events.every((event) => event.originServerTs < later)).toBe(true);
    expect(before.events.map((event) => event.stored?.content.ciphertext).filter(Boolean)).toEqual([ciphertexts[0]]);
    expect(before.text).toContain(PUBLIC_MESSAGE);
  });

  it("refuses a scope that is not Matrix ids (nothing of it reaches SQL), and an inverted time range", async () => {
    const payload = (scope: Record<string, unknown>) => ({
      serverId: spec.serverId,
      exportId: "legal-refused",
      reference: "x",
      scope: { users: [], rooms: [], content: true, ...scope },
      recipient: operator.recipient,
      partSize: BACKUP_MIN_PART_SIZE,
      uploadBase: target.uploadBase("legal-refused"),
    });
    await expect(run.run("homeserver.legal_export", payload({ users: ["@x:y') OR true; --"] }))).rejects.toThrow(/a Matrix user id/);
    await expect(run.run("homeserver.legal_export", payload({ rooms: ["!r:x'"] }))).rejects.toThrow(/a Matrix room id/);
    await expect(run.run("homeserver.legal_export", payload({ from: 2, until: 1 }))).rejects.toThrow(/from must come before until/);
    expect(target.backups.has("legal-refused")).toBe(false);
  });
});
