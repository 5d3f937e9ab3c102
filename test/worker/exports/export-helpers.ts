import { env } from "cloudflare:workers";
import { expect, vi } from "vitest";
import { pathOf, sha256, uploadBackup } from "../backups/backup-helpers";
import { call, post } from "../helpers";
import { jobOf, runningServer } from "../servers/server-helpers";

// A customer's full export from the outside: asked for with a passphrase, made by a fake agent that
// uploads a file as the real one does, and read back through the API.

export interface ExportView {
  id: string;
  status: string;
  progress: { bytesUploaded: number; fraction: number | null };
  sizeBytes: number | null;
  error: string | null;
  createdAt: string;
  readyAt: string | null;
  expiresAt: string | null;
  downloadUrl: string | null;
}

/** A passphrase that passes the strength rule and appears nowhere else. */
export const strongPassphrase = () => `otter quarry ${crypto.randomUUID()}`;

export const askForExport = (cookie: string, serverId: string, passphrase: string) => post(`/api/servers/${serverId}/exports`, { passphrase }, { cookie });

export async function exportsOf(cookie: string, serverId: string): Promise<ExportView[]> {
  const response = await call(`/api/servers/${serverId}/exports`, { cookie });
  expect(response.status).toBe(200);
  return ((await response.json()) as { exports: ExportView[] }).exports;
}

export async function exportRow(id: string) {
  return env.DB.prepare("SELECT * FROM server_exports WHERE id = ?").bind(id).first<Record<string, any>>();
}

export type Server = Awaited<ReturnType<typeof runningServer>>;

/** `server`'s owner asks for an export; returns it with the `homeserver.full_export` job its agent received. */
export async function exportOf(server: Server, passphrase = strongPassphrase()) {
  const response = await askForExport(server.owner.cookie, server.id, passphrase);
  expect(response.status, await response.clone().text()).toBe(202);
  const view = (await response.json()) as ExportView;
  const { job } = await jobOf(server.agent, "homeserver.full_export");
  expect(job.payload.exportId).toBe(view.id);
  return { server, passphrase, view, exportId: view.id, job, base: pathOf(String(job.payload.uploadBase)) };
}

/** A running server whose owner asked for an export, its job received by the agent. */
export async function exportUnderWay(passphrase = strongPassphrase()) {
  return exportOf(await runningServer(), passphrase);
}

export type UnderWay = Awaited<ReturnType<typeof exportUnderWay>>;

/** The host uploads `chunks` as the export's parts and completes it, as its agent does. */
export async function uploadExport({ server, job }: UnderWay, chunks: Uint8Array[]) {
  const completed = await uploadBackup(server.host, String(job.payload.uploadBase), chunks);
  expect(completed.status, await completed.clone().text()).toBe(200);
}

/** The agent reports the job done, with the file it uploaded. */
export async function reportExported({ server, job, exportId }: UnderWay, file: Uint8Array) {
  const digest = await sha256(file);
  server.agent.send({ type: "job.ack", id: job.id });
  server.agent.send({
    type: "job.result",
    id: job.id,
    ok: true,
    result: { serverId: server.id, exportId, mediaFiles: 3, size: file.length, sha256: digest, parts: [{ partNumber: 1, size: file.length, sha256: digest }] },
  });
}

export function reportFailed({ server, job }: UnderWay, error: string) {
  server.agent.send({ type: "job.ack", id: job.id });
  server.agent.send({ type: "job.result", id: job.id, ok: false, error });
}

/** Waits until the export's row matches (outcomes are applied by the host's Durable Object). */
export async function waitForExport(id: string, expected: Record<string, unknown>) {
  await vi.waitFor(async () => expect(await exportRow(id)).toMatchObject(expected));
}

/** A ready export of `file` (one part). */
export async function readyExport(file: Uint8Array, passphrase = strongPassphrase()) {
  const underWay = await exportUnderWay(passphrase);
  await uploadExport(underWay, [file]);
  await reportExported(underWay, file);
  await waitForExport(underWay.exportId, { status: "ready" });
  return underWay;
}
