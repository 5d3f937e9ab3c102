// The real berth-agent against a real `wrangler dev`, over real WebSockets: this
// file starts its own dev server (scripts/dev.mjs --no-agent, fresh persist dir),
// makes an operator, enrolls agents with the CLI and runs them as processes,
// then takes things away from them — the connection, the process, the control
// plane — and checks that jobs still run exactly as often as they should.
// Host A dials through a TCP proxy in this process (so its connection can be
// cut); host B dials directly and is the target of the impersonation attempts.
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createPrivateKey, generateKeyPairSync, randomUUID, sign } from "node:crypto";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { CLOSE, PROTOCOL_VERSION, helloSigningInput } from "../../protocol/messages.ts";
import { AUTH_TIMEOUT_MS } from "../../worker/fleet/policy.ts";
import { reservePort } from "../ports.ts";
import { AgentProcess, Api, DevServer, TcpProxy, agentEnroll, signUpOperator, openRaw, runCleanups, tempRoot, waitFor, withTimeout } from "./agent-helpers.ts";

// Agent log messages (agent/connection.ts, agent/jobs.ts) the tests look for.
const LOG = {
  starting: "berth-agent starting",
  connecting: "connecting to the control plane",
  connected: "connected to the control plane",
  silence: "nothing heard from the control plane for 3 heartbeat intervals; redialling",
  lost: "connection to the control plane lost",
  unauthorized: "the control plane did not accept this host's identity (unknown host or wrong key); retrying slowly",
  replaced: "another agent with this host's identity connected and replaced this one; retrying slowly",
  revoked: "the control plane revoked this host's credential; stopping (re-enroll to bring the host back)",
  jobStarted: "job started",
  jobSucceeded: "job succeeded",
  jobFailed: "job failed",
  repeatInProgress: "repeated delivery of a job in progress: acknowledged again",
  alreadyDone: "job already done: stored result sent again",
  interrupted: "job was interrupted before it finished (agent stopped mid-job): running it again",
} as const;

/** Fast reconnects for the tests (README: backoff base/max; both allowed down to 10 ms). */
const AGENT_TUNING = { reconnectBaseMs: 100, reconnectMaxMs: 500, heartbeatIntervalMs: 5_000 };

interface Host {
  label: string;
  id: string;
  name: string;
  /** The join token it enrolled with (used up). */
  token: string;
  configDir: string;
  dataRoot: string;
  /** The connect URL enrollment gave: straight to wrangler dev. */
  directUrl: string;
  /** Every `run` process of this host, oldest first. */
  agents: AgentProcess[];
}

let root: string;
let dev: DevServer;
let api: Api;
let proxy: TcpProxy;
let A: Host;
let B: Host;

async function enroll(label: string, { viaProxy }: { viaProxy: boolean }): Promise<Host> {
  const { token } = await api.expect<{ token: string }>(201, "POST", "/api/admin/join-tokens", { region: "us-east" });
  const configDir = join(root, label, "config");
  const dataRoot = join(root, label, "data");
  const name = `e2e-${label}-${randomUUID().slice(0, 8)}`;
  const result = await agentEnroll({ url: dev.baseUrl, token, configDir, dataRoot, name });
  expect(result.code, result.stderr).toBe(0);
  expect(result.stdout + result.stderr).not.toContain(token);
  const file = join(configDir, "agent.json");
  const config = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown> & { hostId: string; connectUrl: string };
  const directUrl = config.connectUrl;
  const connectUrl = new URL(directUrl);
  if (viaProxy) connectUrl.port = String(proxy.port);
  writeFileSync(file, JSON.stringify({ ...config, ...AGENT_TUNING, connectUrl: connectUrl.toString() }, null, 2));
  return { label, id: config.hostId, name, token, configDir, dataRoot, directUrl, agents: [] };
}

function startAgent(host: Host): AgentProcess {
  const agent = new AgentProcess(`${host.label}#${host.agents.length + 1}`, host.configDir);
  host.agents.push(agent);
  return agent;
}

function current(host: Host): AgentProcess {
  const agent = host.agents.at(-1);
  if (!agent) throw new Error(`host ${host.label} has no agent process`);
  return agent;
}

/** Starts the host's agent unless one runs, and waits until the control plane has it online. */
async function ensureOnline(host: Host): Promise<AgentProcess> {
  let agent = host.agents.at(-1);
  if (!agent?.running) {
    agent = startAgent(host);
    await agent.waitLog(LOG.connected);
  }
  await api.waitHost(host.id, "online and connected", (h) => h.status === "online" && h.connection.connected);
  return agent;
}

/** How many times any process of `host` started job `jobId`. */
function timesStarted(host: Host, jobId: string): number {
  return host.agents.reduce((n, agent) => n + agent.find(LOG.jobStarted, jobId).length, 0);
}

function journalEntry(host: Host, jobId: string): Record<string, unknown> {
  const file = join(host.configDir, "state", "jobs", `job-${Buffer.from(jobId, "utf8").toString("base64url")}.json`);
  return JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
}

function markerPath(host: Host, workloadId: string): string {
  return join(host.dataRoot, "workloads", `${workloadId}.json`);
}

/** Refusals of a connection that proves nothing are counted for operators, never audited against the host it named. */
const expectNoAuditedRefusal = async (host: Host, mark: number) => {
  const after = (await api.audit()).filter((e) => e.id > mark);
  expect(after.filter((e) => e.action === "agent.auth_refused" || (e.target === host.id && e.actor === "anonymous"))).toEqual([]);
};

describe("berth-agent against wrangler dev", () => {
  beforeAll(async () => {
    root = tempRoot("berth-e2e-agent-");
    dev = new DevServer(await reservePort(), join(root, "state"), join(root, "dev.log"));
    await dev.start();
    api = new Api(dev.baseUrl);

    await signUpOperator(api, dev);
    expect(api.cookie).toMatch(/^__Host-berth_session=/);

    proxy = new TcpProxy(dev.port);
    await proxy.listen();
    A = await enroll("a", { viaProxy: true });
    B = await enroll("b", { viaProxy: false });
  });

  afterAll(async () => {
    await runCleanups();
  });

  beforeEach((context) => {
    context.onTestFailed(() => {
      const hosts = [A, B].filter(Boolean);
      const logs = hosts.flatMap((h) => h.agents.slice(-2).map((a) => `--- agent ${a.label} (pid ${a.pid}) ---\n${a.logTail(40)}`));
      console.error(`${logs.join("\n")}\n--- wrangler dev (${dev?.logFile}) ---\n${dev?.logTail(30)}`);
    });
  });

  it("1. enrollment and connection: the host comes online with its version and disk report; agent.connected is audited", async () => {
    const agent = startAgent(A);
    const starting = await agent.waitLog(LOG.starting);
    const warning = await agent.waitLog(/DATA ROOT IS NOT ENCRYPTED/);
    expect(warning.level).toBe("warn");
    const welcome = await agent.waitLog(LOG.connected);
    expect(welcome.protocol).toBe(PROTOCOL_VERSION);
    expect(proxy.accepted).toBeGreaterThanOrEqual(1);

    const host = await api.waitHost(A.id, "online", (h) => h.status === "online" && h.connection.connected);
    expect(host.name).toBe(A.name);
    expect(host.agentVersion).toMatch(/^\d+\.\d+\.\d+/);
    expect(host.agentVersion).toBe(starting.agentVersion);
    expect(host.protocolVersion).toBe(PROTOCOL_VERSION);
    expect(host.connection).toEqual({ connected: true, pending: 0, protocol: PROTOCOL_VERSION });
    expect(host.diskEncryption).toMatchObject({ encrypted: false, allowUnencrypted: true });
    expect(Array.isArray(host.diskEncryption.devices)).toBe(true);

    const connected = await api.waitAudit("agent.connected", 0, (e) => e.action === "agent.connected" && e.target === A.id);
    expect(connected.actor).toBe(`host:${A.id}`);
    expect(connected.detail).toMatchObject({
      agentVersion: host.agentVersion,
      protocol: PROTOCOL_VERSION,
      diskEncrypted: false,
      allowUnencrypted: true,
    });
    const entries = await api.audit();
    expect(entries.some((e) => e.action === "host.enrolled" && e.target === A.id)).toBe(true);
  });

  it("2. job round trip: noop and sleep succeed with their results; fail fails with its message", async () => {
    const agent = await ensureOnline(A);
    const noop = await api.enqueue(A.id, "noop");
    const nap = await api.enqueue(A.id, "sleep", { ms: 300 });
    const fail = await api.enqueue(A.id, "fail", { message: "e2e: failing on purpose" });

    const [noopDone, napDone, failDone] = await Promise.all([noop, nap, fail].map((job) => api.waitJob(job.id, ["succeeded", "failed"])));
    expect(noopDone).toMatchObject({ status: "succeeded", result: { ok: true }, error: null, attempts: 1 });
    expect(napDone).toMatchObject({ status: "succeeded", result: { sleptMs: 300 }, error: null, attempts: 1 });
    expect(failDone).toMatchObject({ status: "failed", error: "e2e: failing on purpose", result: null, attempts: 1 });
    expect(failDone?.finishedAt).not.toBeNull();

    expect(agent.find(LOG.jobSucceeded, noop.id)).toHaveLength(1);
    expect(agent.find(LOG.jobSucceeded, nap.id)).toHaveLength(1);
    expect(agent.find(LOG.jobFailed, fail.id)).toEqual([expect.objectContaining({ error: "e2e: failing on purpose" })]);
  });

  it("3a. idempotency: a job in progress, delivered again after a reconnect, is acknowledged but not run again", async () => {
    const agent = await ensureOnline(A);
    const job = await api.enqueue(A.id, "sleep", { ms: 5_000 });
    await agent.waitLog(LOG.jobStarted, { jobId: job.id });
    await api.waitJob(job.id, ["acked"], 15_000);
    const welcomes = agent.find(LOG.connected).length;

    expect(proxy.dropAll()).toBeGreaterThanOrEqual(1);
    await agent.waitLog(LOG.connected, { count: welcomes + 1 });

    const done = await api.waitJob(job.id, ["succeeded", "failed"]);
    expect(done).toMatchObject({ status: "succeeded", result: { sleptMs: 5_000 } });
    expect(done.attempts).toBeGreaterThanOrEqual(2); // the Durable Object did deliver it again
    const repeats = agent.find(LOG.repeatInProgress, job.id).length + agent.find(LOG.alreadyDone, job.id).length;
    expect(repeats).toBeGreaterThanOrEqual(1); // … and the agent saw that delivery
    expect(timesStarted(A, job.id)).toBe(1);
    expect(agent.find(LOG.jobSucceeded, job.id)).toHaveLength(1);
    expect(journalEntry(A, job.id)).toMatchObject({ state: "done", ok: true, attempt: 1, pid: agent.pid });
  });

  it("3b. idempotency: a job finished while cut off, delivered again to a fresh process, is not run again: the journal's result is sent", async () => {
    const first = await ensureOnline(A);
    const job = await api.enqueue(A.id, "sleep", { ms: 2_000 });
    await first.waitLog(LOG.jobStarted, { jobId: job.id });
    await api.waitJob(job.id, ["acked"], 15_000);

    // Cut the agent off, let the job finish (its result waits in the in-memory outbox), then kill the process.
    proxy.refusing = true;
    proxy.dropAll();
    try {
      await first.waitLog(LOG.jobSucceeded, { jobId: job.id });
      expect((await api.job(job.id)).status).toBe("acked");
      expect((await first.kill("SIGKILL")).signal).toBe("SIGKILL");
    } finally {
      proxy.refusing = false;
    }
    expect(journalEntry(A, job.id)).toMatchObject({ state: "done", ok: true, attempt: 1, pid: first.pid });

    const second = startAgent(A);
    await second.waitLog(LOG.connected);
    await second.waitLog(LOG.alreadyDone, { jobId: job.id });
    const done = await api.waitJob(job.id, ["succeeded", "failed"]);
    expect(done).toMatchObject({ status: "succeeded", result: { sleptMs: 2_000 }, error: null });
    expect(done.attempts).toBeGreaterThanOrEqual(2);
    expect(second.find(LOG.jobStarted, job.id)).toHaveLength(0);
    expect(timesStarted(A, job.id)).toBe(1);
    expect(journalEntry(A, job.id)).toMatchObject({ state: "done", attempt: 1, pid: first.pid });
  });

  it("4. kill -9 mid-job: the job is redelivered to the next process, run again, and succeeds", async () => {
    const first = await ensureOnline(A);
    const job = await api.enqueue(A.id, "sleep", { ms: 4_000 });
    await first.waitLog(LOG.jobStarted, { jobId: job.id });
    await api.waitJob(job.id, ["acked"], 15_000);
    expect(journalEntry(A, job.id)).toMatchObject({ state: "running", attempt: 1, pid: first.pid });

    expect((await first.kill("SIGKILL")).signal).toBe("SIGKILL");
    expect((await api.job(job.id)).status).not.toMatch(/succeeded|failed/);

    const second = startAgent(A);
    const rerun = await second.waitLog(LOG.interrupted, { jobId: job.id });
    expect(rerun).toMatchObject({ previousPid: first.pid, attempt: 2 });
    await second.waitLog(LOG.jobStarted, { jobId: job.id });

    const done = await api.waitJob(job.id, ["succeeded", "failed"]);
    expect(done).toMatchObject({ status: "succeeded", result: { sleptMs: 4_000 } });
    expect(done.attempts).toBeGreaterThanOrEqual(2);
    expect(timesStarted(A, job.id)).toBe(2);
    expect(journalEntry(A, job.id)).toMatchObject({ state: "done", ok: true, attempt: 2, pid: second.pid });
  });

  it("5. wrangler dev restarted mid-job: the agent reconnects by itself and flushes the job's result", async () => {
    const agent = await ensureOnline(A);
    const welcomes = agent.find(LOG.connected).length;
    const losses = agent.find(LOG.lost).length;
    const job = await api.enqueue(A.id, "sleep", { ms: 4_000 });
    await agent.waitLog(LOG.jobStarted, { jobId: job.id });
    await api.waitJob(job.id, ["acked"], 15_000);

    await dev.stop();
    await agent.waitLog(LOG.lost, { count: losses + 1 });
    // The job finishes while there is no control plane at all: its result can only wait in the outbox.
    await agent.waitLog(LOG.jobSucceeded, { jobId: job.id });
    expect(agent.running).toBe(true);

    await dev.start();
    const welcome = await agent.waitLog(LOG.connected, { count: welcomes + 1 });
    expect(welcome.flushed).toBeGreaterThanOrEqual(1);

    const done = await api.waitJob(job.id, ["succeeded", "failed"]);
    expect(done).toMatchObject({ status: "succeeded", result: { sleptMs: 4_000 }, error: null });
    expect(timesStarted(A, job.id)).toBe(1);
    await api.waitHost(A.id, "online again", (h) => h.status === "online" && h.connection.connected);
  });

  it("6. a dropped connection: the agent reconnects through the proxy, the host is back online, and the next job succeeds", async () => {
    const agent = await ensureOnline(A);
    const welcomes = agent.find(LOG.connected).length;
    const losses = agent.find(LOG.lost).length;
    const accepted = proxy.accepted;
    const mark = await api.auditMark();

    expect(proxy.dropAll()).toBeGreaterThanOrEqual(1);
    await agent.waitLog(LOG.lost, { count: losses + 1 });
    await agent.waitLog(LOG.connected, { count: welcomes + 1 });
    expect(proxy.accepted).toBeGreaterThan(accepted);
    expect(agent.running).toBe(true);

    await api.waitHost(A.id, "back online", (h) => h.status === "online" && h.connection.connected);
    await api.waitAudit("agent.connected after the drop", mark, (e) => e.action === "agent.connected" && e.target === A.id);
    const job = await api.enqueue(A.id, "noop");
    const done = await api.waitJob(job.id, ["succeeded", "failed"]);
    expect(done).toMatchObject({ status: "succeeded", result: { ok: true }, attempts: 1 });
  });

  describe("7. impersonation attempts are refused and logged", () => {
    it("7a. no credential: a socket that never says hello is closed with AUTH_TIMEOUT", async () => {
      const mark = await api.auditMark();
      const counted = await api.refusalCounts();
      const raw = await openRaw(B.directUrl);
      const challenge = await raw.next("challenge");
      expect(challenge.protocol).toBe(PROTOCOL_VERSION);
      expect(challenge.nonce).toEqual(expect.any(String));

      // Only the Durable Object's alarm closes with AUTH_TIMEOUT, once AUTH_TIMEOUT_MS have passed since
      // the socket opened (test/worker/fleet pins that time with a controlled clock). Under wrangler dev
      // a close() made in alarm() reaches the client only ~10 s later, hence the generous wait.
      const closed = await withTimeout(raw.closed, AUTH_TIMEOUT_MS + 30_000, "the control plane to close a silent socket");
      expect(closed).toMatchObject({ code: CLOSE.AUTH_TIMEOUT, reason: "no hello in time" });
      expect(raw.messages.map((m) => m.type)).toEqual(["challenge"]);

      await api.waitRefusal("agent.auth_refused", "timeout", counted);
      await expectNoAuditedRefusal(B, mark);
      expect(await api.host(B.id)).toMatchObject({ status: "offline", connection: { connected: false } });
    });

    it("7b. wrong signature: the real agent with another Ed25519 key is refused (UNAUTHORIZED); the host stays offline", async () => {
      const mark = await api.auditMark();
      const counted = await api.refusalCounts();
      const keyFile = join(B.configDir, "host-key.pem");
      const genuine = readFileSync(keyFile, "utf8");
      const forged = generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString();
      writeFileSync(keyFile, forged, { mode: 0o600 });
      chmodSync(keyFile, 0o600);
      try {
        const agent = startAgent(B);
        const refused = await agent.waitLog(LOG.unauthorized);
        expect(refused.code).toBe(CLOSE.UNAUTHORIZED);
        await api.waitRefusal("agent.auth_refused", "bad signature", counted);
        expect(agent.find(LOG.connected)).toHaveLength(0);
        expect(await api.host(B.id)).toMatchObject({ status: "offline", connection: { connected: false } });
        expect((await agent.kill("SIGTERM")).code).toBe(0);
      } finally {
        writeFileSync(keyFile, genuine, { mode: 0o600 });
        chmodSync(keyFile, 0o600);
      }
      const after = (await api.audit()).filter((e) => e.id > mark);
      expect(after.filter((e) => e.action === "agent.connected" && e.target === B.id)).toEqual([]);
      await expectNoAuditedRefusal(B, mark);
    });

    it("7c. replayed challenge: a valid hello, replayed on a second connection, is refused", async () => {
      const mark = await api.auditMark();
      const counted = await api.refusalCounts();
      const key = createPrivateKey(readFileSync(join(B.configDir, "host-key.pem")));
      const first = await openRaw(B.directUrl);
      const { nonce } = (await first.next("challenge")) as { nonce: string };
      const hello = JSON.stringify({
        type: "hello",
        protocols: [PROTOCOL_VERSION],
        hostId: B.id,
        nonce,
        signature: sign(null, Buffer.from(helloSigningInput(B.id, nonce), "utf8"), key).toString("base64url"),
        agentVersion: "0.0.0-e2e-raw",
        diskEncryption: { dataRoot: B.dataRoot, encrypted: false, devices: [], allowUnencrypted: true },
        workloads: [],
      });
      first.ws.send(hello);
      expect(await first.next("welcome")).toMatchObject({ hostId: B.id, protocol: PROTOCOL_VERSION }); // genuine: accepted

      const second = await openRaw(B.directUrl);
      const { nonce: fresh } = (await second.next("challenge")) as { nonce: string };
      expect(fresh).not.toBe(nonce);
      second.ws.send(hello); // the captured hello, byte for byte
      const closed = await withTimeout(second.closed, 20_000, "the replayed hello to be refused");
      expect(closed.code).toBe(CLOSE.UNAUTHORIZED);
      expect(second.messages.map((m) => m.type)).toEqual(["challenge"]);
      await api.waitRefusal("agent.auth_refused", "replayed or stale challenge", counted);
      await expectNoAuditedRefusal(B, mark);

      // The replay did not displace the genuine connection.
      expect(first.ws.readyState).toBe(WebSocket.OPEN);
      expect((await api.host(B.id)).connection.connected).toBe(true);
      first.ws.close(1000, "done");
      await withTimeout(first.closed, 10_000, "the genuine raw connection to close");
      await api.waitHost(B.id, "offline again", (h) => h.status === "offline" && !h.connection.connected);
    });

    it("7d. another host's identity: agent A's key with host B's id is refused, whichever host's connection it dials", async () => {
      await ensureOnline(A);
      const mark = await api.auditMark();
      const aConfig = JSON.parse(readFileSync(join(A.configDir, "agent.json"), "utf8")) as Record<string, unknown>;
      const attempts = [
        // B's own connection: the signature (A's key) does not match B's enrolled key.
        { label: "impostor-b", connectUrl: B.directUrl, dialled: B, reason: "bad signature" },
        // A's connection, claiming to be B in the hello.
        { label: "impostor-a", connectUrl: A.directUrl, dialled: A, reason: "hello names another host" },
      ];
      for (const attempt of attempts) {
        const configDir = join(root, attempt.label, "config");
        mkdirSync(configDir, { recursive: true, mode: 0o700 });
        copyFileSync(join(A.configDir, "host-key.pem"), join(configDir, "host-key.pem"));
        chmodSync(join(configDir, "host-key.pem"), 0o600);
        writeFileSync(
          join(configDir, "agent.json"),
          JSON.stringify({ ...aConfig, hostId: B.id, connectUrl: attempt.connectUrl, dataRoot: join(root, attempt.label, "data") }),
        );
        const counted = await api.refusalCounts();
        const impostor = new AgentProcess(attempt.label, configDir);
        try {
          const refused = await impostor.waitLog(LOG.unauthorized);
          expect(refused.code).toBe(CLOSE.UNAUTHORIZED);
          await api.waitRefusal("agent.auth_refused", attempt.reason, counted);
          await expectNoAuditedRefusal(attempt.dialled, mark);
          expect(impostor.find(LOG.connected)).toHaveLength(0);
        } finally {
          await impostor.kill("SIGTERM");
        }
      }
      expect(await api.host(B.id)).toMatchObject({ status: "offline", connection: { connected: false } });
      const after = (await api.audit()).filter((e) => e.id > mark);
      expect(after.filter((e) => e.action === "agent.connected")).toEqual([]);
      // A's genuine agent kept its connection throughout.
      expect(await api.host(A.id)).toMatchObject({ status: "online", connection: { connected: true } });
      expect(current(A).running).toBe(true);
      expect(current(A).find(LOG.replaced)).toHaveLength(0);
    });

    it("7e. a revoked host: its live connection is closed at once, the agent exits 3, and it cannot come back", async () => {
      const agent = startAgent(B); // with its genuine key again
      await agent.waitLog(LOG.connected);
      await api.waitHost(B.id, "online", (h) => h.status === "online" && h.connection.connected);
      const mark = await api.auditMark();
      const revokedBefore = await api.refusalCounts();

      const revoked = await api.expect(200, "POST", `/api/admin/hosts/${B.id}/revoke`);
      expect(revoked).toMatchObject({ id: B.id, status: "revoked" });
      const exit = await agent.waitExit(20_000);
      expect(exit.code).toBe(3);
      const [closedLine] = agent.find(LOG.revoked);
      expect(closedLine).toMatchObject({ code: CLOSE.REVOKED, reason: "host revoked" });
      // At once: the revocation closed the connection the agent had. It was not lost to silence, and the
      // agent did not dial again (a later hello would also be refused as revoked, and counted so).
      const connected = agent.find(LOG.connected);
      expect(connected).toHaveLength(1);
      expect(agent.lines.slice(agent.lines.indexOf(connected[0]!)).filter((l) => l.msg === LOG.connecting)).toEqual([]);
      expect(agent.find(LOG.silence)).toHaveLength(0);
      expect((await api.refusalCounts())["agent.auth_refused/revoked host"] ?? 0).toBe(revokedBefore["agent.auth_refused/revoked host"] ?? 0);

      const host = await api.waitHost(B.id, "revoked and disconnected", (h) => h.status === "revoked" && !h.connection.connected);
      expect(host.revokedAt).not.toBeNull();
      const audit = await api.waitAudit("host.revoked", mark, (e) => e.action === "host.revoked" && e.target === B.id);
      expect(audit.actor).toMatch(/^user:/);

      // Started again, it is refused at the hello and exits 3 once more.
      const counted = await api.refusalCounts();
      const again = startAgent(B);
      expect((await again.waitExit(30_000)).code).toBe(3);
      expect(again.find(LOG.connected)).toHaveLength(0);
      await api.waitRefusal("agent.auth_refused", "revoked host", counted);
      await expectNoAuditedRefusal(B, mark);
      expect((await api.host(B.id)).status).toBe("revoked");
    });

    it("7f. a reused join token: a second enroll fails with the control plane's message, without printing the token", async () => {
      const mark = await api.auditMark();
      const counted = await api.refusalCounts();
      const configDir = join(root, "reuse", "config");
      const name = `e2e-reuse-${randomUUID().slice(0, 8)}`;
      const result = await agentEnroll({ url: dev.baseUrl, token: A.token, configDir, dataRoot: join(root, "reuse", "data"), name });
      expect(result.code).toBe(1);
      expect(result.stderr).toContain("This join token is invalid, was already used, or has expired.");
      expect(result.stderr).toContain("invalid_join_token");
      expect(result.stdout + result.stderr).not.toContain(A.token);
      expect(existsSync(join(configDir, "agent.json"))).toBe(false);
      expect(existsSync(join(configDir, "host-key.pem"))).toBe(false);

      await api.waitRefusal("host.enroll_refused", "invalid join token", counted);
      const after = (await api.audit()).filter((e) => e.id > mark);
      expect(after.filter((e) => e.action === "host.enroll_refused")).toEqual([]);
      const { hosts } = await api.expect<{ hosts: Array<{ name: string }> }>(200, "GET", "/api/admin/hosts");
      expect(hosts.map((h) => h.name)).not.toContain(name);
    });
  });

  it("8. reconciliation: workloads follow the desired state live, and the gap left while the agent was stopped closes on reconnect", async () => {
    const agent = await ensureOnline(A);
    type Created = { workload: { id: string }; job: { id: string } };
    const create = () => api.expect<Created>(201, "POST", `/api/admin/hosts/${A.id}/workloads`, { kind: "test" });
    const remove = (id: string) => api.expect<{ job: { id: string } }>(202, "DELETE", `/api/admin/workloads/${id}`);
    const succeeded = async (jobId: string) => expect((await api.waitJob(jobId, ["succeeded", "failed"])).status).toBe("succeeded");

    // Live: create → marker appears; delete → marker removed.
    const w1 = await create();
    await succeeded(w1.job.id);
    expect(JSON.parse(readFileSync(markerPath(A, w1.workload.id), "utf8"))).toMatchObject({ id: w1.workload.id, kind: "test" });
    const r1 = await remove(w1.workload.id);
    await succeeded(r1.job.id);
    expect(existsSync(markerPath(A, w1.workload.id))).toBe(false);

    const w2 = await create();
    const w4 = await create();
    await succeeded(w2.job.id);
    await succeeded(w4.job.id);
    expect(existsSync(markerPath(A, w2.workload.id)) && existsSync(markerPath(A, w4.workload.id))).toBe(true);

    // The agent stops; meanwhile one workload is created, another deleted, one marker is lost
    // behind the agent's back, and a stray one appears.
    expect((await agent.kill("SIGTERM")).code).toBe(0);
    await api.waitHost(A.id, "disconnected", (h) => !h.connection.connected);
    const w3 = await create();
    const r2 = await remove(w2.workload.id);
    rmSync(markerPath(A, w4.workload.id));
    const strayId = `stray-${randomUUID()}`;
    writeFileSync(markerPath(A, strayId), JSON.stringify({ id: strayId, kind: "test", spec: {}, updatedAt: Date.now() }), { mode: 0o600 });
    expect((await api.job(w3.job.id)).status).toBe("queued");
    expect(existsSync(markerPath(A, w3.workload.id))).toBe(false);

    const restarted = startAgent(A);
    await restarted.waitLog(LOG.connected);
    await waitFor(
      "the workloads to converge after the reconnect",
      () =>
        existsSync(markerPath(A, w3.workload.id)) &&
        !existsSync(markerPath(A, w2.workload.id)) &&
        existsSync(markerPath(A, w4.workload.id)) &&
        !existsSync(markerPath(A, strayId)),
      { timeoutMs: 60_000, intervalMs: 100 },
    );
    await succeeded(w3.job.id);
    await succeeded(r2.job.id);

    // The lost and the stray marker were found by reconciliation (jobs the control plane made itself).
    const { jobs } = await api.expect<{ jobs: Array<{ kind: string; status: string; payload: { id?: string } }> }>(200, "GET", `/api/admin/hosts/${A.id}/jobs`);
    const forWorkload = (kind: string, id: string) => jobs.filter((j) => j.kind === kind && j.payload?.id === id);
    expect(forWorkload("workload.ensure", w4.workload.id).map((j) => j.status)).toContain("succeeded");
    expect(forWorkload("workload.ensure", w4.workload.id).length).toBeGreaterThanOrEqual(2);
    expect(forWorkload("workload.remove", strayId).map((j) => j.status)).toContain("succeeded");
    expect(existsSync(markerPath(A, w1.workload.id))).toBe(false);
  });
});
