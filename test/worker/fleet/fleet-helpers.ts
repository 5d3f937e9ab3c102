import { SELF } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { expect } from "vitest";
import { helloSigningInput, PROTOCOL_VERSION, type DiskEncryption, type PublicAddresses, type ReportedWorkload } from "../../../protocol/messages";
import { base64UrlEncode } from "../../../worker/crypto/bytes";
import { runningHomeserver } from "../../job-results";
import { call, logIn, post, randomIp, verifiedUser } from "../helpers";

// A fake agent speaking the real protocol from inside workerd, with a real Ed25519 key.

export async function operatorCookie(): Promise<string> {
  const { email } = await verifiedUser();
  await env.DB.prepare("UPDATE users SET role = 'operator' WHERE email = ?").bind(email).run();
  return logIn(email);
}

export async function joinToken(cookie: string, region = "us-east"): Promise<string> {
  const response = await post("/api/admin/join-tokens", { region }, { cookie });
  expect(response.status).toBe(201);
  return ((await response.json()) as { token: string }).token;
}

export interface HostIdentity {
  hostId: string;
  name: string;
  keys: CryptoKeyPair;
  publicKey: string;
}

export async function newKeys() {
  const keys = (await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"])) as CryptoKeyPair;
  const raw = new Uint8Array((await crypto.subtle.exportKey("raw", keys.publicKey)) as ArrayBuffer);
  return { keys, publicKey: base64UrlEncode(raw) };
}

export function enrollBody(token: string, publicKey: string, name = `host-${crypto.randomUUID().slice(0, 8)}`) {
  return { joinToken: token, publicKey, name, capacity: { memoryMiB: 8192, cpus: 4, diskGiB: 200 }, agentVersion: "0.1.0" };
}

export async function enrolledHost(cookie: string, region = "us-east"): Promise<HostIdentity> {
  const { keys, publicKey } = await newKeys();
  const body = enrollBody(await joinToken(cookie, region), publicKey);
  const response = await post("/api/agent/enroll", body);
  expect(response.status, await response.clone().text()).toBe(201);
  const { hostId } = (await response.json()) as { hostId: string };
  return { hostId, name: body.name, keys, publicKey };
}

export async function sign(keys: CryptoKeyPair, hostId: string, nonce: string): Promise<string> {
  const signature = await crypto.subtle.sign({ name: "Ed25519" }, keys.privateKey, new TextEncoder().encode(helloSigningInput(hostId, nonce)));
  return base64UrlEncode(new Uint8Array(signature));
}

export interface Closed {
  code: number;
  reason: string;
}

/** One WebSocket to /api/agent/connect, with the messages and close it receives. */
export class FakeAgent {
  readonly messages: unknown[] = [];
  closed: Closed | null = null;
  private waiters: (() => void)[] = [];
  private answer: ((job: DeliveredJob) => unknown) | null = null;

  private constructor(readonly ws: WebSocket) {
    ws.addEventListener("message", (event) => {
      const message = typeof event.data === "string" && event.data.startsWith("{") ? JSON.parse(event.data) : event.data;
      const reply = message?.type === "job" ? this.answer?.(message.job) : undefined;
      if (reply) this.send(reply);
      else this.messages.push(message);
      this.wake();
    });
    ws.addEventListener("close", (event) => {
      this.closed = { code: event.code, reason: event.reason };
      this.wake();
    });
  }

  /** Dials from `ip` (a fresh random address by default, so tests don't share rate limits). */
  static async connect(hostId: string, ip = randomIp()): Promise<FakeAgent> {
    const response = await SELF.fetch(`http://localhost/api/agent/connect?host=${hostId}`, { headers: { upgrade: "websocket", "cf-connecting-ip": ip } });
    expect(response.status).toBe(101);
    const ws = response.webSocket!;
    ws.accept();
    return new FakeAgent(ws);
  }

  /** From now on, answers each job as it arrives with what `answer` returns for it (none: the job is queued for the test as usual). */
  answerJobs(answer: (job: DeliveredJob) => unknown) {
    this.answer = answer;
  }

  private wake() {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  /** Waits (up to `ms`) for a message matching `predicate`, and removes it from the queue. */
  async next<T = Record<string, unknown>>(predicate: (message: any) => boolean, ms = 5000): Promise<T> {
    const deadline = performance.now() + ms;
    for (;;) {
      const index = this.messages.findIndex(predicate);
      if (index >= 0) return this.messages.splice(index, 1)[0] as T;
      if (this.closed) throw new Error(`closed (${this.closed.code} ${this.closed.reason}) while waiting`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no matching message; have ${JSON.stringify(this.messages)}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, left);
      });
    }
  }

  nextOfType<T = Record<string, unknown>>(type: string, ms?: number) {
    return this.next<T>((message) => message?.type === type, ms);
  }

  async waitClosed(ms = 5000): Promise<Closed> {
    const deadline = performance.now() + ms;
    while (!this.closed) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error("not closed");
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, left);
      });
    }
    return this.closed;
  }

  send(message: unknown) {
    this.ws.send(typeof message === "string" ? message : JSON.stringify(message));
  }
}

export const NO_ENCRYPTION: DiskEncryption = { dataRoot: "/var/lib/berth", encrypted: false, devices: ["vda"], allowUnencrypted: true };

export function helloFor(
  host: HostIdentity,
  nonce: string,
  signature: string,
  extra: { workloads?: ReportedWorkload[]; protocols?: number[]; publicAddresses?: unknown } = {},
) {
  return {
    type: "hello",
    protocols: extra.protocols ?? [PROTOCOL_VERSION],
    hostId: host.hostId,
    nonce,
    signature,
    agentVersion: "0.1.0",
    diskEncryption: NO_ENCRYPTION,
    ...(extra.publicAddresses === undefined ? {} : { publicAddresses: extra.publicAddresses }),
    workloads: extra.workloads ?? [],
  };
}

/** Connects and authenticates as `host`; resolves once welcomed. */
export async function connectedAgent(host: HostIdentity, workloads: ReportedWorkload[] = [], publicAddresses?: PublicAddresses): Promise<FakeAgent> {
  const agent = await FakeAgent.connect(host.hostId);
  const { nonce } = await agent.nextOfType<{ nonce: string }>("challenge");
  agent.send(helloFor(host, nonce, await sign(host.keys, host.hostId, nonce), { workloads, publicAddresses }));
  await agent.nextOfType("welcome");
  return agent;
}

export async function hostView(cookie: string, hostId: string) {
  const response = await call(`/api/admin/hosts/${hostId}`, { cookie });
  expect(response.status).toBe(200);
  return (await response.json()) as {
    status: string;
    connection: { connected: boolean };
    diskEncryption: { encrypted: boolean; allowUnencrypted: boolean };
    agentVersion: string;
    publicAddresses: { ipv4: string; ipv6: string | null } | null;
    placement: Record<string, number | boolean | string | null>;
  };
}

export async function auditActions(hostId: string): Promise<string[]> {
  const rows = await env.DB.prepare("SELECT action, detail FROM audit_log WHERE target = ? ORDER BY id").bind(hostId).all<{ action: string; detail: string }>();
  return rows.results.map((row) => `${row.action}${row.detail && JSON.parse(row.detail).reason ? `:${JSON.parse(row.detail).reason}` : ""}`);
}

export function hostStub(hostId: string) {
  return env.HOSTS.get(env.HOSTS.idFromName(hostId));
}

/** How many refusals of `kind` D1 has counted so far, per reason (summed over hours). */
export async function refusalCounts(kind: string): Promise<Record<string, number>> {
  const rows = await env.DB.prepare("SELECT reason, sum(count) AS n FROM refusal_counts WHERE kind = ? GROUP BY reason")
    .bind(kind)
    .all<{ reason: string; n: number }>();
  return Object.fromEntries(rows.results.map((row) => [row.reason, row.n]));
}

/** Starts counting refusals of `kind`: the returned function gives those counted since, per reason. */
export async function refusalsSince(kind: string): Promise<() => Promise<Record<string, number>>> {
  const start = await refusalCounts(kind);
  return async () => {
    const now = await refusalCounts(kind);
    return Object.fromEntries(Object.entries(now).flatMap(([reason, n]) => (n > (start[reason] ?? 0) ? [[reason, n - (start[reason] ?? 0)]] : [])));
  };
}

/** A delivered job, as a fake agent reads it from a `job` message. */
export interface DeliveredJob {
  id: string;
  kind: string;
  payload: Record<string, any>;
}

/**
 * The `job.result` a real agent sends when `job` succeeded: its kind's result (protocol/jobs.ts), made from its
 * payload, with `fields` in place of the defaults. The Worker refuses a result that is not its kind's.
 */
export function succeeded(job: DeliveredJob, fields: Record<string, unknown> = {}) {
  const { serverId, backupId } = job.payload;
  const running = runningHomeserver(String(serverId), `${serverId}.berth.test`);
  const results: Record<string, unknown> = {
    noop: { ok: true },
    sleep: { sleptMs: job.payload.ms },
    "workload.ensure": { id: job.payload.id, kind: job.payload.kind, state: "running", changed: true },
    "workload.remove": { id: job.payload.id, removed: true },
    "homeserver.provision": { ...running, serverName: job.payload.serverName, adminUserId: `@admin:${job.payload.serverName}` },
    "homeserver.stop": { serverId, state: "stopped" },
    "homeserver.start": running,
    "homeserver.suspend": { serverId, state: "suspended" },
    "homeserver.resume": running,
    "homeserver.upgrade": { ...running, image: job.payload.image, previousImage: "berth/synapse:previous" },
    "homeserver.delete": { serverId, state: "deleted" },
    "homeserver.set_admin_password": { serverId, adminUserId: job.payload.adminUserId, sessionsEnded: 0 },
    "homeserver.resize": { serverId, resources: job.payload.resources },
    "homeserver.backup": { serverId, backupId, size: 1, sha256: "0".repeat(64), parts: [{ partNumber: 1, size: 1, sha256: "0".repeat(64) }] },
    "homeserver.restore": { ...running, backupId, restoredFrom: "2025-01-01T00:00:00.000Z" },
    "homeserver.import": job.payload.spec && {
      ...runningHomeserver(String(job.payload.spec.serverId), String(job.payload.spec.serverName)),
      adminUserId: `@admin:${job.payload.spec.serverName}`,
      importId: job.payload.importId,
      counts: { users: 3, rooms: 2, events: 40, mediaFiles: 1 },
      schema: { found: 88, after: 94 },
    },
    "homeserver.restore_verify": {
      serverId,
      backupId,
      counts: { users: 0, rooms: 0, events: 0, mediaFiles: 0 },
      synapseStarted: true,
      timings: { downloadAndUnpackMs: 0, databaseRestoreMs: 0, synapseStartMs: 0, totalMs: 0 },
    },
    "homeserver.users.list": { users: [], total: 0, nextFrom: null },
    "homeserver.users.create": { outcome: "created", userId: `@${job.payload.localpart}:${serverId}.berth.test` },
    "homeserver.users.set_password": { serverId, userId: job.payload.userId, sessionsEnded: 2 },
    "homeserver.users.update": {
      serverId,
      user: {
        userId: job.payload.userId,
        displayName: null,
        admin: job.payload.action === "make_admin",
        deactivated: String(job.payload.action).startsWith("deactivate"),
        createdAt: 1_700_000_000_000,
        lastSeenAt: null,
        devices: 0,
        mediaBytes: 0,
      },
      devicesLoggedOut: 3,
    },
    "homeserver.registration_tokens.list": { tokens: [] },
    "homeserver.registration_tokens.create": {
      outcome: "created",
      token: { token: "Tk3nAbCdEfGhIjKl", usesAllowed: job.payload.usesAllowed, pending: 0, completed: 0, expiresAt: job.payload.expiresAt ?? null },
    },
    "homeserver.registration_tokens.revoke": { serverId, token: job.payload.token, revoked: true },
    "homeserver.rooms.list": { rooms: [], total: 0, nextFrom: null },
    "homeserver.rooms.block": { outcome: "done", roomId: job.payload.roomId, blocked: job.payload.blocked },
    "homeserver.rooms.purge": { outcome: "purged", roomId: job.payload.roomId, membersRemoved: 2, membersNotRemoved: 0 },
    "homeserver.settings.apply": { serverId, settings: job.payload.settings },
    "homeserver.delegation_check": {
      serverId,
      serverName: job.payload.serverName,
      outcome: { result: "holds", evidence: { summary: `${job.payload.serverName} delegates to its served host.`, facts: [] } },
    },
    "homeserver.checks": {
      serverId,
      outcomes: (job.payload.checks ?? []).map((checkId: string) => ({
        checkId,
        result: "holds",
        evidence: { summary: `The ${checkId} check holds.`, facts: [{ label: "Checked by", value: "the test agent" }] },
      })),
      synapse: { version: "1.163.2", image: "berth/synapse:latest" },
    },
    "homeserver.upkeep": {
      serverId,
      before: { databaseBytes: 20_000_000, stateGroupsStateRows: 1166, mediaBytes: 5_000_000 },
      after: { databaseBytes: 19_000_000, stateGroupsStateRows: 710, mediaBytes: 4_000_000 },
      remoteMediaDeleted: 3,
      compressorMs: 950,
    },
  };
  if (!(job.kind in results)) throw new Error(`no result for ${job.kind} jobs: they never succeed`);
  return { type: "job.result", id: job.id, ok: true, result: { ...(results[job.kind] as object), ...fields } };
}
