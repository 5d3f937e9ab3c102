// A legal request's export, end to end: the product runs as `npm run dev` with its local agent and
// Caddy; a paying customer's homeserver holds an end-to-end encrypted conversation between two
// people (matrix-js-sdk with Rust crypto). An operator asks for an export of it under a reference,
// with content; the real agent exports the homeserver's database, encrypts it to the operator's age
// recipient and uploads it through the Worker, which adds its own file (account, billing, usage,
// audit). Both files download and open with the operator's identity only: the conversation is
// there as the Megolm ciphertext its clients made, its plaintext nowhere. Every step is in the
// audit log; the customer sees the request (notice given), and nothing of a second one whose
// notice the operator recorded as barred.
import { randomBytes, randomUUID } from "node:crypto";
import { Decrypter } from "age-encryption";
import type { MatrixClient, MatrixEvent } from "matrix-js-sdk";
import { Preset } from "matrix-js-sdk";
import type { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateAgeKeyPair } from "../../agent/backup/age";
import { Api, type AuditEntry, type DevServer, Fatal, runCleanups, signUpOperator, waitFor } from "./agent-helpers";
import { createLoggedInUser } from "./federation-helpers";
import {
  caddyDispatcher,
  createHomeserver,
  fetchThrough,
  homeserverDiagnostics,
  payingCustomer,
  requireHomeserverHost,
  skipAfterFirstFailure,
  startCryptoClient,
  startDevWithAgent,
  stopClient,
  stopDevWithAgent,
  Timeline,
  untilRunning,
  waitForMessage,
  type FetchFn,
  type ServerView,
} from "./homeserver-helpers";

const password = (label: string) => `berth-e2e-${label}-${randomBytes(12).toString("hex")}`;
const PLAINTEXT = `the plans are in the blue folder ${randomUUID()}`;

let dev: DevServer;
let customer: Api;
let operator: Api;
let server: ServerView | undefined;
let dispatcher: Agent | undefined;
let alice: MatrixClient | undefined;
let bob: MatrixClient | undefined;
let received: MatrixEvent;
const operatorKeys = generateAgeKeyPair();
const timeline = new Timeline();
const mark = (what: string) => timeline.mark(what);

interface ExportView {
  id: string;
  status: string;
  reference: string;
  notice: string;
  error: string | null;
  records: { homeserver: Record<string, number> | null; worker: Record<string, number> | null };
}

/** Asks for an export as the operator and waits until it is ready (failing at once if it fails). */
async function exportReady(body: Record<string, unknown>): Promise<ExportView> {
  const asked = await operator.expect<ExportView>(202, "POST", `/api/admin/servers/${server!.id}/legal-exports`, body);
  return waitFor(
    `legal export ${asked.id} to be ready`,
    async () => {
      const view = await operator.expect<ExportView>(200, "GET", `/api/admin/legal-exports/${asked.id}`);
      if (view.status === "failed") throw new Fatal(`the export failed: ${view.error}`);
      return view.status === "ready" ? view : undefined;
    },
    { timeoutMs: 180_000, intervalMs: 1_000 },
  );
}

/** One of the export's files as the operator downloads it, opened with the operator's identity. */
async function downloadAndOpen(exportId: string, file: "homeserver" | "worker"): Promise<{ ciphertext: Uint8Array; text: string }> {
  const response = await fetch(`${dev.baseUrl}/api/admin/legal-exports/${exportId}/files/${file}`, {
    headers: { cookie: operator.cookie },
    signal: AbortSignal.timeout(60_000),
  });
  expect(response.status).toBe(200);
  const ciphertext = new Uint8Array(await response.arrayBuffer());
  const decrypter = new Decrypter();
  decrypter.addIdentity(operatorKeys.identity);
  return { ciphertext, text: await decrypter.decrypt(ciphertext, "text") };
}

async function auditOf(exportId: string): Promise<AuditEntry[]> {
  const { entries } = await operator.expect<{ entries: AuditEntry[] }>(200, "GET", "/api/admin/audit?limit=1000");
  return entries.filter((entry) => (entry.detail as { exportId?: string } | null)?.exportId === exportId).reverse();
}

async function customerAuditLog(): Promise<string> {
  const data = await customer.expect<{ account: { auditLog: unknown[] } }>(200, "GET", "/api/me/export");
  return JSON.stringify(data.account.auditLog);
}

describe("a legal request's export of a homeserver with an end-to-end encrypted conversation", () => {
  beforeAll(async () => {
    await requireHomeserverHost();
    dev = await startDevWithAgent("berth-e2e-legal-export-");
    customer = new Api(dev.baseUrl);
    operator = new Api(dev.baseUrl);
    mark("dev server (Worker, Stripe emulator, Caddy, agent) answers");
  });

  afterAll(async () => {
    await Promise.all([stopClient(alice), stopClient(bob)]);
    await dispatcher?.close().catch(() => undefined);
    await stopDevWithAgent(dev, "legal export e2e");
    await runCleanups();
    console.log(`[legal export e2e] timings:\n${timeline}`);
  });

  skipAfterFirstFailure(() => homeserverDiagnostics(timeline, dev, customer, server));

  it("a paying customer's homeserver runs", { timeout: 240_000 }, async () => {
    await payingCustomer(customer, dev.baseUrl, `legal-export-${randomUUID()}@example.com`, password("account"));
    server = await createHomeserver(customer, `e2e-legal-${randomBytes(3).toString("hex")}`);
    server = await untilRunning(customer, server.id, mark);
    await signUpOperator(operator, dev);
    mark("server running; operator signed up");
  });

  it("alice and bob talk in an encrypted DM", { timeout: 240_000 }, async () => {
    dispatcher = caddyDispatcher(await dev.caddyRoot());
    const fetchHs: FetchFn = fetchThrough(dispatcher);
    const base = server!.homeserverUrl;
    const aliceLogin = await createLoggedInUser(customer, fetchHs, server!, "alice", password("alice"));
    const bobLogin = await createLoggedInUser(customer, fetchHs, server!, "bob", password("bob"));
    alice = await startCryptoClient(fetchHs, base, aliceLogin);
    bob = await startCryptoClient(fetchHs, base, bobLogin);
    await waitFor(
      "alice to see bob's device",
      async () => (await alice!.getCrypto()!.getUserDeviceInfo([bobLogin.userId], true)).get(bobLogin.userId)?.has(bobLogin.deviceId),
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    const { room_id: roomId } = await alice.createRoom({ is_direct: true, invite: [bobLogin.userId], preset: Preset.TrustedPrivateChat });
    await bob.joinRoom(roomId);
    await waitFor("alice to see the DM encrypted with bob in it", async () => alice!.getRoom(roomId)?.getMember(bobLogin.userId)?.membership === "join", {
      timeoutMs: 30_000,
      intervalMs: 200,
    });
    await alice.sendTextMessage(roomId, PLAINTEXT);
    received = await waitForMessage(bob, roomId, PLAINTEXT);
    expect(received.getWireType()).toBe("m.room.encrypted");
    mark("encrypted DM: alice wrote, bob decrypted");
  });

  let exportId: string;

  it("the operator's export completes; both files open with the operator's identity: ciphertext there, plaintext nowhere", { timeout: 300_000 }, async () => {
    const reference = `Production order ${randomUUID().slice(0, 8)}`;
    const ready = await exportReady({ reference, scope: { users: [], rooms: [], content: true }, recipient: operatorKeys.recipient });
    exportId = ready.id;
    expect(ready).toMatchObject({ notice: "given", reference });
    expect(ready.records.homeserver!.events).toBeGreaterThan(0);
    mark(`export ready: ${JSON.stringify(ready.records)}`);

    const homeserver = await downloadAndOpen(exportId, "homeserver");
    const worker = await downloadAndOpen(exportId, "worker");
    const ciphertext = received.getWireContent().ciphertext as string;
    expect(ciphertext.length).toBeGreaterThan(20);
    expect(homeserver.text).toContain(ciphertext);
    expect(homeserver.text).toContain('"type":"m.room.encrypted"');
    const lines = homeserver.text.trimEnd().split("\n");
    expect(JSON.parse(lines[0]!)).toMatchObject({ record: "export", reference });
    expect(JSON.parse(lines.at(-1)!)).toEqual({ record: "end", records: ready.records.homeserver });
    expect(worker.text).toContain(`"record":"account"`);
    for (const opened of [homeserver, worker]) {
      expect(opened.text).not.toContain(PLAINTEXT);
      expect(Buffer.from(opened.ciphertext).includes(Buffer.from(ciphertext))).toBe(false);
    }
    mark(`both files downloaded and opened (${homeserver.ciphertext.length} + ${worker.ciphertext.length} bytes)`);
  });

  it("every step left an audit entry, and the customer sees them (notice given)", { timeout: 60_000 }, async () => {
    expect((await auditOf(exportId)).map((entry) => entry.action)).toEqual([
      "legal_export.requested",
      "legal_export.completed",
      "legal_export.downloaded",
      "legal_export.downloaded",
    ]);
    const seen = await customerAuditLog();
    for (const action of ["legal_export.requested", "legal_export.completed", "legal_export.downloaded"]) expect(seen).toContain(action);
    expect(seen).not.toContain(PLAINTEXT);
  });

  it("with notice barred the export is made and audited, and the customer sees nothing of it", { timeout: 300_000 }, async () => {
    const reference = `Sealed warrant ${randomUUID().slice(0, 8)}`;
    const ready = await exportReady({
      reference,
      scope: { users: [], rooms: [], content: false },
      recipient: operatorKeys.recipient,
      noticeBarred: { reason: "non-disclosure order" },
    });
    const { text } = await downloadAndOpen(ready.id, "homeserver");
    expect(text).not.toContain(received.getWireContent().ciphertext as string);
    expect((await auditOf(ready.id)).map((entry) => entry.action)).toEqual([
      "legal_export.requested",
      "legal_export.notice_barred",
      "legal_export.completed",
      "legal_export.downloaded",
    ]);
    const seen = await customerAuditLog();
    for (const trace of [reference, ready.id, "legal_export.notice_barred"]) expect(seen).not.toContain(trace);
    expect(seen.split("legal_export.requested").length - 1).toBe(1);
    mark("barred export made, audited, invisible to the customer");
  });
});
