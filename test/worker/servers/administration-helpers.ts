import { env } from "cloudflare:workers";
import { succeeded, type DeliveredJob, type FakeAgent } from "../fleet/fleet-helpers";
import { runningServer, serverView } from "./server-helpers";

// A homeserver whose users and registration tokens its owner administers, with a fake agent that
// answers each administration job as the test says: shared by the users and tokens tests.

export interface AdministeredServer {
  agent: FakeAgent;
  owner: { cookie: string; email: string };
  id: string;
  serverName: string;
  /** Ids of jobs answered: the host's Durable Object resends a job until acknowledged, and a resend is not a new job. */
  answered: Set<string>;
}

export async function administeredServer(): Promise<AdministeredServer> {
  const { agent, owner, id } = await runningServer();
  return { agent, owner, id, serverName: (await serverView(owner.cookie, id)).serverName, answered: new Set() };
}

/** The next job of `kind` the agent was sent that it has not answered yet. */
export async function nextJob(server: AdministeredServer, kind: string): Promise<DeliveredJob> {
  const { job } = await server.agent.next<{ job: DeliveredJob }>(
    (message) => message?.type === "job" && message.job.kind === kind && !server.answered.has(message.job.id),
  );
  server.answered.add(job.id);
  return job;
}

/**
 * Sends a request, answers the job of `kind` it makes (with `fields` over the kind's usual result,
 * or with a failure), and returns the response with the job the agent received.
 */
export async function answered(
  server: AdministeredServer,
  request: Promise<Response>,
  kind: string,
  answer: { fields?: Record<string, unknown> } | { error: string } = {},
): Promise<{ response: Response; job: DeliveredJob }> {
  const job = await nextJob(server, kind);
  server.agent.send("error" in answer ? { type: "job.result", id: job.id, ok: false, error: answer.error } : succeeded(job, answer.fields));
  return { response: await request, job };
}

/** How many jobs of `kind` were ever written for this server. */
export async function jobCount(serverId: string, kind: string): Promise<number> {
  const row = await env.DB.prepare("SELECT count(*) AS n FROM jobs WHERE server_id = ? AND kind = ?").bind(serverId, kind).first<{ n: number }>();
  return row!.n;
}

/** The server's audit entries of `action`, newest last. */
export async function auditEntries(serverId: string, action: string) {
  const rows = await env.DB.prepare("SELECT actor, action, target, detail FROM audit_log WHERE target = ? AND action = ? ORDER BY id")
    .bind(serverId, action)
    .all<{ actor: string; action: string; target: string; detail: string | null }>();
  return rows.results.map((row) => ({ ...row, detail: row.detail === null ? null : (JSON.parse(row.detail) as Record<string, unknown>) }));
}

/** Every audit entry about this server, as stored. */
export async function auditText(serverId: string): Promise<string> {
  const rows = await env.DB.prepare("SELECT actor, action, detail FROM audit_log WHERE target = ?").bind(serverId).all();
  return JSON.stringify(rows.results);
}

export async function userIdOf(email: string): Promise<string> {
  return (await env.DB.prepare("SELECT id FROM users WHERE email = ?").bind(email).first<{ id: string }>())!.id;
}
