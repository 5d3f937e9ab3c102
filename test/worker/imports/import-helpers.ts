import { env } from "cloudflare:workers";
import { expect } from "vitest";
import { subscriber } from "../billing/stripe-helpers";
import { succeeded, type DeliveredJob, type FakeAgent } from "../fleet/fleet-helpers";
import { call, post } from "../helpers";
import { jobOf, onlineHost, type ServerView } from "../servers/server-helpers";
import { bytes, sha256 } from "../backups/backup-helpers";

// An import from the outside: a waiting homeserver on its owner's domain, an archive uploaded into it
// through the API in parts, and the host's delegation check answered by a fake agent.

export interface ImportView {
  id: string;
  status: string;
  sizeBytes: number;
  partSize: number;
  parts: number;
  missingParts: number[];
  progress: { partsReceived: number; fraction: number | null };
  counts: Record<string, number> | null;
  error: string | null;
  uploadedAt: string | null;
  finishedAt: string | null;
}

/** A customer's new homeserver named by their domain, waiting, with the first delegation check its host received. */
export async function waitingServer() {
  const { agent, host } = await onlineHost();
  const owner = await subscriber();
  const serverName = `acme-${crypto.randomUUID().slice(0, 8)}.test`;
  const response = await post("/api/servers", { name: `hs-${crypto.randomUUID().slice(0, 8)}`, region: "us-east", serverName }, { cookie: owner.cookie });
  expect(response.status).toBe(201);
  const view = (await response.json()) as ServerView;
  const check = (await jobOf(agent, "homeserver.delegation_check")).job;
  return { agent, host, owner, serverName, view, check };
}

export type Waiting = Awaited<ReturnType<typeof waitingServer>>;

export function answerCheck(agent: FakeAgent, job: DeliveredJob, result: "holds" | "fails") {
  agent.send(succeeded(job, { outcome: { result, evidence: { summary: `The delegation ${result}.`, facts: [] } } }));
}

export const importOf = async (cookie: string, serverId: string) => call(`/api/servers/${serverId}/import`, { cookie });

export const startImport = (cookie: string, serverId: string, sizeBytes: number) => post(`/api/servers/${serverId}/import`, { sizeBytes }, { cookie });

export function sendPart(cookie: string, serverId: string, partNumber: number, body: Uint8Array, headers: Record<string, string> = {}) {
  return call(`/api/servers/${serverId}/import/parts/${partNumber}`, { method: "PUT", rawBody: body, cookie, headers });
}

/** Sends `archive` in the import's parts, each with its SHA-256, and completes it (with the passphrase, if any). */
export async function uploadArchive(cookie: string, serverId: string, archive: Uint8Array, passphrase?: string): Promise<ImportView> {
  const started = await startImport(cookie, serverId, archive.length);
  expect(started.status, await started.clone().text()).toBe(201);
  const view = (await started.json()) as ImportView;
  for (let part = 1; part <= view.parts; part++) {
    const chunk = archive.subarray((part - 1) * view.partSize, part * view.partSize);
    const sent = await sendPart(cookie, serverId, part, chunk, { "x-part-sha256": await sha256(chunk) });
    expect(sent.status, await sent.clone().text()).toBe(200);
  }
  const completed = await post(`/api/servers/${serverId}/import/complete`, passphrase ? { passphrase } : {}, { cookie });
  expect(completed.status, await completed.clone().text()).toBe(200);
  return completed.json();
}

export const importRow = (id: string) => env.DB.prepare("SELECT * FROM server_imports WHERE id = ?").bind(id).first<Record<string, any>>();

/** A waiting server whose owner uploaded a small archive, and the import job its host got once the delegation held. */
export async function importing(passphrase?: string) {
  const waiting = await waitingServer();
  const archive = bytes(1000, 3);
  const imported = await uploadArchive(waiting.owner.cookie, waiting.view.id, archive, passphrase);
  answerCheck(waiting.agent, waiting.check, "holds");
  const { job } = await jobOf(waiting.agent, "homeserver.import");
  return { ...waiting, archive, imported, job };
}
