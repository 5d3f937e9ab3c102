import { env } from "cloudflare:workers";
import { Encrypter } from "age-encryption";
import { expect, vi } from "vitest";
import { signAgentRequest } from "../../../protocol/agent-requests";
import type { JobPayload } from "../../../protocol/jobs";
import { hex } from "../../../worker/crypto/bytes";
import { dailyBackupHour } from "../../../worker/backups/maintenance";
import { HOUR, call, expectError, post, setNow } from "../helpers";
import { succeeded, type FakeAgent, type HostIdentity } from "../fleet/fleet-helpers";
import { jobOf, runningServer } from "../servers/server-helpers";

// An agent's side of backups: requests signed as the contract says, and the jobs that start them.

export interface SigningOptions {
  /** Sign with this host's key instead (while still naming `host`). */
  key?: CryptoKeyPair;
  /** The signer's clock; now by default. */
  issuedAt?: Date;
  /** Claim this body digest instead of the body's own. */
  contentSha256?: string;
  contentType?: string;
  /** Send this token instead of signing a new one (a replay). */
  token?: string;
}

export async function sha256(bytes: Uint8Array): Promise<string> {
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)));
}

/** `host`'s agent's token for one request, made as the agent makes it (protocol/agent-requests.ts). */
export async function signedToken(host: HostIdentity, method: string, path: string, body: Uint8Array, options: SigningOptions = {}) {
  return signAgentRequest((options.key ?? host.keys).privateKey, {
    hostId: host.hostId,
    method,
    path,
    bodySha256: options.contentSha256 ?? (await sha256(body)),
    ...(options.issuedAt ? { issuedAt: options.issuedAt } : {}),
  });
}

/** The Authorization header of `host`'s agent for one request. */
export async function signedHeaders(host: HostIdentity, method: string, path: string, body: Uint8Array, options: SigningOptions = {}) {
  return { authorization: `Bearer ${options.token ?? (await signedToken(host, method, path, body, options))}` };
}

/** A request from `host`'s agent, signed as the contract says. */
export async function signedCall(host: HostIdentity, method: string, path: string, body: Uint8Array = new Uint8Array(), options: SigningOptions = {}) {
  const headers: Record<string, string> = await signedHeaders(host, method, path, body, options);
  if (body.length > 0) headers["content-type"] = options.contentType ?? "application/octet-stream";
  return call(path, { method, rawBody: body.length > 0 ? body : undefined, headers });
}

export function signedJson(host: HostIdentity, path: string, value: unknown, options: SigningOptions = {}) {
  return signedCall(host, "POST", path, new TextEncoder().encode(JSON.stringify(value)), { contentType: "application/json", ...options });
}

/** The path part of a job's uploadBase (the tests reach the Worker in-process). */
export const pathOf = (url: string) => new URL(url).pathname;

export interface BackupJob {
  id: string;
  kind: "homeserver.backup";
  payload: JobPayload<"homeserver.backup">;
}

/** Asks for a backup as the owner and returns the `homeserver.backup` job its agent receives. */
export async function manualBackup(cookie: string, serverId: string, agent: FakeAgent): Promise<BackupJob> {
  const response = await post(`/api/servers/${serverId}/backups`, undefined, { cookie });
  expect(response.status, await response.clone().text()).toBe(202);
  const { job } = await jobOf(agent, "homeserver.backup");
  return { id: job.id, kind: "homeserver.backup", payload: job.payload as BackupJob["payload"] };
}

/** `size` bytes of a pattern that differs per `seed`. */
export function bytes(size: number, seed = 0): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i * 31 + seed * 7 + (i >>> 8)) & 0xff;
  return out;
}

export function concat(...chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** Uploads `chunks` as parts 1…n to a backup job's `uploadBase` and completes the backup, as an agent does. */
export async function uploadBackup(host: HostIdentity, uploadBase: string, chunks: Uint8Array[]) {
  const base = pathOf(uploadBase);
  const parts = [];
  for (const [index, chunk] of chunks.entries()) {
    const response = await signedCall(host, "PUT", `${base}/parts/${index + 1}`, chunk);
    expect(response.status, await response.clone().text()).toBe(200);
    parts.push(await response.json());
  }
  const whole = concat(...chunks);
  return signedJson(host, `${base}/complete`, { parts, size: whole.length, sha256: await sha256(whole) });
}

export interface BackupView {
  id: string;
  trigger: string;
  status: string;
  sizeBytes: number | null;
  progressBytes: number;
  error: string | null;
  createdAt: string;
  completedAt: string | null;
  keptUntil: string | null;
}

export async function backupsOf(cookie: string, serverId: string): Promise<BackupView[]> {
  const response = await call(`/api/servers/${serverId}/backups`, { cookie });
  expect(response.status).toBe(200);
  return ((await response.json()) as { backups: BackupView[] }).backups;
}

export async function backupRow(id: string) {
  return env.DB.prepare("SELECT * FROM backups WHERE id = ?").bind(id).first<Record<string, any>>();
}

/** Waits until the backup's row matches (outcomes are applied asynchronously, by the host's Durable Object). */
export async function waitForBackup(id: string, expected: Record<string, unknown>) {
  await vi.waitFor(async () => expect(await backupRow(id)).toMatchObject(expected));
}

/** Moves the clock off the server's daily backup hour, so that the hourly cron starts no backup of its own in the test. */
export function avoidDailyBackupHour(serverId: string) {
  if (new Date().getUTCHours() === dailyBackupHour(serverId)) setNow(Date.now() + HOUR);
}

export const BACKUP_PLAINTEXT = "berth-backup.json and a database dump, as far as this test is concerned";

/** A server with one successful backup: an age file encrypted, as its host would, to the recipient in the job. */
export async function serverWithBackup() {
  const server = await runningServer();
  const job = await manualBackup(server.owner.cookie, server.id, server.agent);
  const encrypter = new Encrypter();
  encrypter.addRecipient(job.payload.recipient);
  const ciphertext = await encrypter.encrypt(BACKUP_PLAINTEXT);
  expect((await uploadBackup(server.host, job.payload.uploadBase, [ciphertext])).status).toBe(200);
  server.agent.send(succeeded(job));
  return { ...server, job, backupId: job.payload.backupId, ciphertext };
}

/** `host` can neither write a part, complete nor abort the upload at `base`: each answer is a 404, as for no upload at all. */
export async function expectUploadRefused(host: HostIdentity, base: string) {
  const file = bytes(1000);
  const parts = [{ partNumber: 1, size: file.length, sha256: await sha256(file) }];
  await expectError(await signedCall(host, "PUT", `${base}/parts/1`, file), 404);
  await expectError(await signedJson(host, `${base}/complete`, { parts, size: file.length, sha256: parts[0]!.sha256 }), 404);
  await expectError(await signedJson(host, `${base}/abort`, { reason: "not mine" }), 404);
}
