import { afterEach, describe, expect, it } from "vitest";
import { CLOSE, PROTOCOL_VERSION, type UsageSample } from "../../protocol/messages.ts";
import { AgentConnection, EXIT_PROTOCOL_TOO_OLD, EXIT_REVOKED, type ReconnectEvent } from "../../agent/connection.ts";
import { generateHostKey, publicKeyBase64url } from "../../agent/credentials.ts";
import { builtinHandlers } from "../../agent/handlers/index.ts";
import { listWorkloads } from "../../agent/inventory.ts";
import { JobRunner } from "../../agent/jobs.ts";
import { Journal } from "../../agent/journal.ts";
import { UsageReporter } from "../../agent/metrics.ts";
import { reservePort } from "../ports.ts";
import { ControlPlane, captureLog, onCleanup, runCleanups, sleep, tempDir, waitFor } from "./helpers.ts";

afterEach(runCleanups);

const HOST = "host_test";

interface AgentOptions {
  heartbeatIntervalMs?: number;
  reconnectBaseMs?: number;
  reconnectMaxMs?: number;
  random?: () => number;
  /** Register a different key with the control plane than the one the agent holds. */
  wrongKey?: boolean;
}

function startAgent(cp: ControlPlane, options: AgentOptions = {}) {
  const privateKey = generateHostKey();
  cp.hosts.set(HOST, publicKeyBase64url(options.wrongKey ? generateHostKey() : privateKey));
  const dataRoot = tempDir();
  const captured = captureLog();
  const fatal: Array<{ code: number; reason: string }> = [];
  const reconnects: Array<ReconnectEvent & { at: number }> = [];
  const diskEncryption = () => ({ dataRoot, encrypted: false, devices: ["vda"], allowUnencrypted: true });
  let connection: AgentConnection;
  const runner = new JobRunner({
    journal: new Journal(tempDir()),
    handlers: builtinHandlers({
      diskEncryption,
      onInventoryChanged: () => connection.send({ type: "inventory", workloads: listWorkloads(dataRoot) }),
    }),
    send: (m) => connection.send(m),
    dataRoot,
    log: captured.log,
  });
  const usage = new UsageReporter({
    collect: async () => sample(),
    send: (m) => connection.send(m),
    isReady: () => connection.isReady(),
    intervalMs: 60_000,
    log: captured.log,
  });
  connection = new AgentConnection({
    url: cp.connectUrl,
    hostId: HOST,
    privateKey,
    agentVersion: "0.1.0-test",
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? 10_000,
    reconnectBaseMs: options.reconnectBaseMs ?? 20,
    reconnectMaxMs: options.reconnectMaxMs ?? 200,
    diskEncryption,
    inventory: () => listWorkloads(dataRoot),
    onJob: (job) => runner.handle(job),
    onWelcome: () => usage.flush(),
    onFatal: (code, reason) => fatal.push({ code, reason }),
    log: captured.log,
    ...(options.random ? { random: options.random } : {}),
  });
  connection.on("reconnect", (e: ReconnectEvent) => reconnects.push({ ...e, at: Date.now() }));
  connection.start();
  onCleanup(async () => {
    usage.stop();
    runner.abortAll();
    await connection.close();
  });
  return { connection, runner, usage, fatal, reconnects, captured, dataRoot };
}

function sample(at = Date.now()): UsageSample {
  return {
    at,
    host: { cpuLoadPercent: 1, memoryUsedBytes: 2, memoryAvailableBytes: 3, disks: [], networkRxBytes: 4, networkTxBytes: 5 },
    containers: [],
  };
}

describe("agent connection against a local control plane", () => {
  it("answers the challenge with a signed hello, is welcomed, acks jobs and returns results", async () => {
    const cp = await new ControlPlane().start();
    const agent = startAgent(cp);
    const socket = await waitFor(() => cp.welcomed(), "welcome");
    await waitFor(() => agent.connection.isReady(), "ready");

    const [hello] = socket.of("hello");
    expect(hello).toMatchObject({
      protocols: [PROTOCOL_VERSION],
      hostId: HOST,
      nonce: socket.nonce,
      agentVersion: "0.1.0-test",
      diskEncryption: { encrypted: false, allowUnencrypted: true, devices: ["vda"] },
      workloads: [],
    });

    socket.sendJob({ id: "job-noop", kind: "noop" });
    socket.sendJob({ id: "job-fail", kind: "fail", payload: { message: "nope" } });
    await waitFor(() => socket.of("job.result").length === 2, "two results");
    expect(socket.of("job.ack").map((m) => m.id).sort()).toEqual(["job-fail", "job-noop"]);
    expect(socket.of("job.result")).toEqual(
      expect.arrayContaining([
        { type: "job.result", id: "job-noop", ok: true, result: { ok: true } },
        { type: "job.result", id: "job-fail", ok: false, error: "nope" },
      ]),
    );

    // Invalid messages are logged and ignored; the connection carries on.
    socket.ws.send("not json");
    socket.ws.send(JSON.stringify({ type: "job", job: { id: "x" } }));
    socket.ws.send(JSON.stringify({ type: "surprise" }));
    socket.sendJob({ id: "job-after", kind: "noop" });
    await waitFor(() => socket.of("job.result").some((m) => m.id === "job-after"), "result after junk");
    expect(agent.captured.has("invalid message from the control plane")).toBe(true);
    expect(agent.captured.has("not JSON")).toBe(true);
    expect(cp.sockets).toHaveLength(1);
    expect(socket.invalid).toEqual([]);
  });

  it("a duplicate delivery after done gets the stored result again", async () => {
    const cp = await new ControlPlane().start();
    startAgent(cp);
    const socket = await waitFor(() => cp.welcomed(), "welcome");
    socket.sendJob({ id: "j", kind: "sleep", payload: { ms: 30 } });
    await waitFor(() => socket.of("job.result").length === 1, "result");
    socket.sendJob({ id: "j", kind: "sleep", payload: { ms: 30 }, attempt: 2 });
    await waitFor(() => socket.of("job.result").length === 2, "re-sent result");
    expect(socket.of("job.ack")).toHaveLength(2);
    expect(socket.of("job.result")[1]).toEqual(socket.of("job.result")[0]);
  });

  it("reports workloads: an inventory message after ensure/remove, and the list in the next hello", async () => {
    const cp = await new ControlPlane().start();
    startAgent(cp);
    const first = await waitFor(() => cp.welcomed(), "welcome");
    first.sendJob({ id: "e1", kind: "workload.ensure", payload: { id: "hs-1", kind: "homeserver", spec: { v: 1 } } });
    await waitFor(() => first.of("inventory").length === 1, "inventory");
    expect(first.of("inventory")[0]).toEqual({ type: "inventory", workloads: [{ id: "hs-1", kind: "homeserver", state: "running" }] });
    first.ws.terminate();
    const second = await waitFor(() => cp.welcomed(1), "reconnect");
    expect(second.of("hello")[0]!.workloads).toEqual([{ id: "hs-1", kind: "homeserver", state: "running" }]);
    second.sendJob({ id: "r1", kind: "workload.remove", payload: { id: "hs-1" } });
    await waitFor(() => second.of("inventory").length === 1, "inventory after remove");
    expect(second.of("inventory")[0]!.workloads).toEqual([]);
  });

  it("keeps results and usage produced while disconnected and sends them after the next welcome", async () => {
    // A reserved port: the control plane comes back on it.
    const cp = await new ControlPlane().start(await reservePort());
    const agent = startAgent(cp);
    const first = await waitFor(() => cp.welcomed(), "welcome");
    first.sendJob({ id: "slow", kind: "sleep", payload: { ms: 400 } });
    await waitFor(() => first.of("job.ack").length === 1, "ack");
    const port = cp.port;
    await cp.stop(); // the control plane goes away while the job runs
    await agent.runner.idle();
    await agent.usage.tick();
    await agent.usage.tick();
    expect(agent.connection.queued).toBe(1); // the result (its progress superseded)
    expect(agent.usage.buffered).toBe(2);

    await cp.start(port);
    const second = await waitFor(() => cp.welcomed(1), "welcome again");
    await waitFor(() => second.of("job.result").length === 1 && second.of("usage").length === 1, "flushed messages");
    expect(second.messages[0]!.type).toBe("hello");
    expect(second.of("job.result")[0]).toEqual({ type: "job.result", id: "slow", ok: true, result: { sleptMs: 400 } });
    expect(second.of("job.progress")).toEqual([]);
    expect(second.of("usage")[0]!.samples).toHaveLength(2);
    expect(agent.connection.queued).toBe(0);
  });

  it("UNAUTHORIZED (a key the control plane does not know): closed with 4001, redials only after the cap", async () => {
    const cp = await new ControlPlane().start();
    const agent = startAgent(cp, { wrongKey: true, reconnectMaxMs: 600 });
    const first = await waitFor(() => cp.sockets[0]?.closed && cp.sockets[0], "first close");
    expect(first.closed!.code).toBe(CLOSE.UNAUTHORIZED);
    await waitFor(() => cp.sockets.length >= 2, "redial");
    expect(cp.sockets[1]!.openedAt - first.closed!.at).toBeGreaterThanOrEqual(550);
    expect(agent.reconnects[0]).toMatchObject({ delayMs: 600, reason: "unauthorized" });
    expect(agent.fatal).toEqual([]);
    expect(agent.captured.has("did not accept this host's identity")).toBe(true);
  });

  it("REPLACED: logs that another agent took over and backs off at the cap", async () => {
    const cp = await new ControlPlane({ onHello: (_s, i) => (i === 0 ? CLOSE.REPLACED : "welcome") }).start();
    const agent = startAgent(cp, { reconnectMaxMs: 500 });
    const second = await waitFor(() => cp.welcomed(1), "second, welcomed connection");
    expect(cp.sockets[0]!.closed!.code).toBe(CLOSE.REPLACED);
    expect(second.openedAt - cp.sockets[0]!.closed!.at).toBeGreaterThanOrEqual(450);
    expect(agent.reconnects[0]).toMatchObject({ delayMs: 500, reason: "replaced" });
    expect(agent.captured.has("another agent with this host's identity")).toBe(true);
  });

  it.each([
    [CLOSE.REVOKED, EXIT_REVOKED, "revoked"],
    [CLOSE.PROTOCOL_TOO_OLD, EXIT_PROTOCOL_TOO_OLD, "upgrade the agent"],
  ])("close %i is fatal: exit code %i, no redial", async (closeCode, exitCode, words) => {
    const cp = await new ControlPlane({ onHello: () => closeCode }).start();
    const agent = startAgent(cp);
    await waitFor(() => agent.fatal.length === 1, "fatal");
    expect(agent.fatal[0]!.code).toBe(exitCode);
    expect(agent.captured.has(words)).toBe(true);
    await sleep(400); // well past the reconnect delays in use
    expect(cp.sockets).toHaveLength(1);
    expect(agent.connection.state).toBe("stopped");
  });

  it("redials a vanished control plane with exponential backoff, forever, and resets after a welcome", async () => {
    // A reserved port: the control plane comes back on it.
    const cp = await new ControlPlane().start(await reservePort());
    const agent = startAgent(cp, { random: () => 0.999999, reconnectBaseMs: 20, reconnectMaxMs: 200 });
    await waitFor(() => cp.last()?.welcomedAt, "welcome");
    const port = cp.port;
    await cp.stop();
    await waitFor(() => agent.reconnects.length >= 7, "seven redials", 15_000);
    // delay = random · min(cap, base · 2^attempt), with random ≈ 1 here
    expect(agent.reconnects.slice(0, 7).map((r) => r.delayMs)).toEqual([20, 40, 80, 160, 200, 200, 200]);
    expect(agent.reconnects.slice(0, 7).map((r) => r.attempt)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    for (let i = 1; i < 7; i++) {
      expect(agent.reconnects[i]!.at - agent.reconnects[i - 1]!.at).toBeGreaterThanOrEqual(agent.reconnects[i - 1]!.delayMs - 5);
    }

    await cp.start(port);
    const back = await waitFor(() => cp.welcomed(1), "welcome after the control plane came back");
    const before = agent.reconnects.length;
    back.ws.terminate();
    await waitFor(() => agent.reconnects.length > before, "redial after a drop");
    expect(agent.reconnects[before]).toMatchObject({ attempt: 0, delayMs: 20 });
  });

  it("uses full jitter: delays spread between 0 and the exponential ceiling", async () => {
    const cp = await new ControlPlane().start();
    await cp.stop(); // nothing listens: every dial fails
    const agent = startAgent(cp, { reconnectBaseMs: 5, reconnectMaxMs: 40 });
    await waitFor(() => agent.reconnects.length >= 20, "twenty redials", 15_000);
    for (const r of agent.reconnects) {
      expect(r.delayMs).toBeGreaterThanOrEqual(0);
      expect(r.delayMs).toBeLessThanOrEqual(Math.min(40, 5 * 2 ** r.attempt));
    }
    expect(new Set(agent.reconnects.slice(4).map((r) => r.delayMs)).size).toBeGreaterThan(3);
  });

  it("heartbeat: pings every interval; a control plane that stops answering is dropped after 3 intervals and redialled", async () => {
    const cp = await new ControlPlane({ answerPings: false, heartbeatIntervalMs: 100 }).start();
    const agent = startAgent(cp, { heartbeatIntervalMs: 5_000 }); // the welcome's smaller interval wins
    const first = await waitFor(() => cp.welcomed(0), "welcome");
    await waitFor(() => cp.sockets.length >= 2, "redial after silence", 5_000);
    expect(first.pings).toBeGreaterThanOrEqual(2);
    expect(first.closed).toBeDefined();
    const silentFor = cp.sockets[1]!.openedAt - first.welcomedAt!;
    expect(silentFor).toBeGreaterThanOrEqual(300);
    expect(silentFor).toBeLessThan(2_000);
    expect(agent.captured.has("nothing heard from the control plane for 3 heartbeat intervals")).toBe(true);
  });

  it("heartbeat: a control plane that answers pong keeps the connection", async () => {
    const cp = await new ControlPlane({ answerPings: true, heartbeatIntervalMs: 150 }).start();
    startAgent(cp, { heartbeatIntervalMs: 5_000 });
    const socket = await waitFor(() => cp.welcomed(0), "welcome");
    await sleep(1_500); // ten intervals: dropped after three if the pongs did not count
    expect(socket.pings).toBeGreaterThanOrEqual(6);
    expect(cp.sockets).toHaveLength(1);
    expect(socket.closed).toBeUndefined();
  });

  it("close() ends the connection with 1001 and stops redialling", async () => {
    const cp = await new ControlPlane().start();
    const agent = startAgent(cp);
    const socket = await waitFor(() => cp.welcomed(0), "welcome");
    await agent.connection.close();
    await waitFor(() => socket.closed, "server sees the close");
    expect(socket.closed!.code).toBe(1001);
    await sleep(300);
    expect(cp.sockets).toHaveLength(1);
  });
});
