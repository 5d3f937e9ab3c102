import { env } from "cloudflare:workers";
import { Decrypter } from "age-encryption";
import { expect } from "vitest";
import { generateAgeKeyPair } from "../../../agent/backup/age";
import { call, post } from "../helpers";
import { operatorCookie, type DeliveredJob } from "../fleet/fleet-helpers";
import { jobOf, runningServer } from "../servers/server-helpers";
import { bytes, pathOf, sha256, signedCall, signedJson } from "../backups/backup-helpers";

// A legal export as the tests drive it: asked for by an operator, its job received by the server's
// (fake) agent, its host's file uploaded as an agent does, and its job answered.

export const SCOPE = { users: [], rooms: [], content: true };

export interface ExportUnderWay {
  server: RunningServer;
  operator: string;
  identity: string;
  exportId: string;
  job: DeliveredJob;
  /** The path the agent uploads under (…/api/agent/legal-exports/<id>). */
  base: string;
}

export type RunningServer = Awaited<ReturnType<typeof runningServer>>;

/** A running server (on a host of its own unless given) with an export asked for and its job delivered to the agent. */
export async function exportUnderWay(options: { noticeBarred?: { reason: string }; scope?: object; server?: RunningServer } = {}): Promise<ExportUnderWay> {
  const server = options.server ?? (await runningServer());
  const operator = await operatorCookie();
  const { identity, recipient } = generateAgeKeyPair();
  const body = {
    reference: `Order ${crypto.randomUUID().slice(0, 8)}`,
    scope: options.scope ?? SCOPE,
    recipient,
    ...(options.noticeBarred ? { noticeBarred: options.noticeBarred } : {}),
  };
  const response = await post(`/api/admin/servers/${server.id}/legal-exports`, body, { cookie: operator });
  expect(response.status, await response.clone().text()).toBe(202);
  const { id: exportId } = (await response.json()) as { id: string };
  const { job } = await jobOf(server.agent, "homeserver.legal_export");
  return { server, operator, identity, exportId, job, base: pathOf(job.payload.uploadBase) };
}

export const RECORDS = { users: 2, rooms: 1, memberships: 2, events: 5 };

/** Uploads `file` in one part and completes it, as the export's agent does; returns what the job then reports. */
export async function uploadExportFile({ server, base, job }: ExportUnderWay, file: Uint8Array = bytes(1000)) {
  const part = await signedCall(server.host, "PUT", `${base}/parts/1`, file);
  expect(part.status, await part.clone().text()).toBe(200);
  const uploaded = { size: file.length, sha256: await sha256(file), parts: [await part.json()] };
  const completed = await signedJson(server.host, `${base}/complete`, uploaded);
  expect(completed.status, await completed.clone().text()).toBe(200);
  return { serverId: job.payload.serverId, exportId: job.payload.exportId, records: RECORDS, ...uploaded };
}

/** The agent reports the job done with `result` (the kind's result: there is no made-up default for it). */
export function reportExport({ server, job }: ExportUnderWay, result: Record<string, unknown>) {
  server.agent.send({ type: "job.result", id: job.id, ok: true, result });
}

export async function exportRow(id: string) {
  return env.DB.prepare("SELECT * FROM legal_exports WHERE id = ?").bind(id).first<Record<string, any>>();
}

/** The export as operators read it through the API. */
export async function exportView(operator: string, id: string) {
  const response = await call(`/api/admin/legal-exports/${id}`, { cookie: operator });
  expect(response.status).toBe(200);
  return (await response.json()) as Record<string, any>;
}

/** Every audit entry about one export, wherever the notice rule put it. */
export async function exportAudit(exportId: string) {
  const rows = await env.DB.prepare("SELECT actor, action, target, detail FROM audit_log WHERE json_extract(detail, '$.exportId') = ? ORDER BY id")
    .bind(exportId)
    .all<{ actor: string; action: string; target: string; detail: string }>();
  return rows.results.map((row) => ({ ...row, detail: JSON.parse(row.detail) as Record<string, any> }));
}

/** Opens an age file with the operator's identity. */
export async function decrypt(identity: string, ciphertext: Uint8Array): Promise<string> {
  const decrypter = new Decrypter();
  decrypter.addIdentity(identity);
  return decrypter.decrypt(ciphertext, "text");
}
