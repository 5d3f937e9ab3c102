import { env } from "cloudflare:workers";
import { expect, vi } from "vitest";
import { call, post } from "../helpers";
import { subscriber } from "../billing/stripe-helpers";
import { bytes, signedCall, uploadBackup } from "../backups/backup-helpers";
import { connectedAgent, enrolledHost, operatorCookie, succeeded, type FakeAgent, type HostIdentity } from "../fleet/fleet-helpers";
import { create, serverView, type JobMessage, type ServerView } from "./server-helpers";

// Moves between hosts, with fake agents playing the source and the target.

export interface Side {
  host: HostIdentity;
  agent: FakeAgent;
}

/** A second connected host of `region`, enrolled by `cookie` (an operator's). */
export async function anotherHost(cookie: string, region = "us-east"): Promise<Side> {
  const host = await enrolledHost(cookie, region);
  return { host, agent: await connectedAgent(host) };
}

/** `count` customers' running homeservers on one host of `region`, and a second host there to move them to. */
export async function hostWithServers(count: number, region: string) {
  const operator = await operatorCookie();
  const source = await anotherHost(operator, region);
  const servers: { id: string; cookie: string }[] = [];
  for (let i = 0; i < count; i++) {
    const owner = await subscriber();
    const created = (await (await create(owner.cookie, undefined, region)).json()) as ServerView;
    source.agent.send(succeeded((await jobFor(source.agent, "homeserver.provision", created.id)).job));
    await vi.waitFor(async () => expect((await serverView(owner.cookie, created.id)).status).toBe("running"));
    servers.push({ id: created.id, cookie: owner.cookie });
  }
  const target = await anotherHost(operator, region);
  return { operator, source, target, servers };
}

/** The next job of `kind` about `serverId` that `agent` receives. */
export function jobFor(agent: FakeAgent, kind: string, serverId: string) {
  return agent.next<JobMessage>((message) => message?.type === "job" && message.job.kind === kind && message.job.payload.serverId === serverId);
}

export function migrate(cookie: string, serverId: string, targetHostId: string) {
  return post(`/api/admin/servers/${serverId}/migrate`, { targetHostId }, { cookie });
}

export interface MigrationView {
  id: string;
  serverId: string;
  sourceHostId: string;
  targetHostId: string;
  drainId: string | null;
  phase: string;
  error: string | null;
  sourceStoppedAt: string | null;
  switchedAt: string | null;
  servingAt: string | null;
  finishedAt: string | null;
  downtimeMs: number | null;
}

export async function migrationsOf(cookie: string, query: string): Promise<MigrationView[]> {
  const response = await call(`/api/admin/migrations?${query}`, { cookie });
  expect(response.status).toBe(200);
  return ((await response.json()) as { migrations: MigrationView[] }).migrations;
}

export async function waitForPhase(cookie: string, serverId: string, phase: string): Promise<MigrationView> {
  let latest: MigrationView | undefined;
  await vi.waitFor(async () => {
    [latest] = await migrationsOf(cookie, `serverId=${serverId}`);
    expect(latest?.phase).toBe(phase);
  });
  return latest!;
}

export const fail = (job: JobMessage["job"], error = "it broke on the host") => ({ type: "job.result", id: job.id, ok: false, error });

/** The target provisions the homeserver, and the source stops for its final backup. */
export async function provisionAndStop(serverId: string, source: Side, target: Side) {
  const provision = await jobFor(target.agent, "homeserver.provision", serverId);
  target.agent.send(succeeded(provision.job));
  const stop = await jobFor(source.agent, "homeserver.stop", serverId);
  source.agent.send(succeeded(stop.job));
}

/** The source takes the final backup (uploading it as an agent does); returns its id. */
export async function finalBackup(serverId: string, source: Side): Promise<string> {
  const { job } = await jobFor(source.agent, "homeserver.backup", serverId);
  expect((await uploadBackup(source.host, job.payload.uploadBase, [bytes(2000)])).status).toBe(200);
  source.agent.send(succeeded(job));
  return job.payload.backupId;
}

/** The target restores the backup, which it may download (and only for that restore job). */
export async function restoreOnTarget(serverId: string, target: Side, backupId: string) {
  const { job } = await jobFor(target.agent, "homeserver.restore", serverId);
  expect(job.payload.backupId).toBe(backupId);
  expect(job.payload.identity).toMatch(/^AGE-SECRET-KEY-1/);
  expect((await signedCall(target.host, "GET", `/api/agent/backups/${backupId}/object`)).status).toBe(200);
  target.agent.send(succeeded(job));
}

/** Every step of a move that succeeds, the source destroyed last. */
export async function completeMove(serverId: string, source: Side, target: Side) {
  await provisionAndStop(serverId, source, target);
  await restoreOnTarget(serverId, target, await finalBackup(serverId, source));
  const check = await jobFor(target.agent, "homeserver.start", serverId);
  target.agent.send(succeeded(check.job));
  const destroy = await jobFor(source.agent, "homeserver.delete", serverId);
  source.agent.send(succeeded(destroy.job));
}

export async function serverRow(id: string) {
  return env.DB.prepare("SELECT status, status_reason, host_id, reserved_on_host_id FROM servers WHERE id = ?").bind(id).first<Record<string, unknown>>();
}

export async function workloadHost(id: string) {
  return (await env.DB.prepare("SELECT host_id FROM workloads WHERE id = ?").bind(id).first<{ host_id: string }>())?.host_id;
}
