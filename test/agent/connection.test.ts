import { afterEach, describe, expect, it, vi } from "vitest";
import { CLOSE, PROTOCOL_VERSION, type UsageSample } from "../../protocol/messages.ts";
import { AgentConnection, EXIT_PROTOCOL_TOO_OLD, EXIT_REVOKED, type ReconnectEvent } from "../../agent/connection.ts";
import { generateHostKey, publicKeyBase64url } from "../../agent/credentials.ts";
import { builtinHandlers } from "../../agent/handlers/index.ts";
import { listWorkloads } from "../../agent/inventory.ts";
import { JobRunner } from "../../agent/jobs.ts";
import { Journal } from "../../agent/journal.ts";
import { UsageReporter } from "../../agent/metrics.ts";
import { reservePort } from "../ports.ts";
import { ControlPlane, captureLog, onCleanup, runCleanups, tempDir, waitFor } from "./helpers.ts";

afterEach(runCleanups);

/**
 * Controlled time for the agent's timers (backoff, heartbeat) and clock; call it before startAgent.
 * Sockets, and the tests' waitFor, stay real: a test waits for what the sockets carry, then moves
 * the agent's time on by exactly what it means to.
 */
function controlTime(): void {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
  onCleanup(() => {
    vi.useRealTimers();
  });
}

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
  const reconnects: ReconnectEvent[] = [];
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
  connection.on("reconnect", (e: ReconnectEvent) => reconnects.push(e));
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
    expect(
      socket
        .of("job.ack")
        .map((m) => m.id)
        .sort(),
    ).toEqual(["job-fail", "job-noop"]);
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

  it("answers an echo with an echo.reply of its id and nothing else (development's dispatch baseline)", async () => {
    const cp = await new ControlPlane().start();
    const agent = startAgent(cp);
    const socket = await waitFor(() => cp.welcomed(), "welcome");
    await waitFor(() => agent.connection.isReady(), "ready");
    socket.ws.send(JSON.stringify({ type: "echo", id: "echo-1" }));
    await waitFor(() => socket.of("echo.reply").length === 1, "echo reply");
    expect(socket.of("echo.reply")).toEqual([{ type: "echo.reply", id: "echo-1" }]);
    expect(socket.of("job.ack")).toEqual([]);
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

  /** Moves the agent's time to just before a scheduled redial, then to it: no dial until the delay is up. */
  async function redialAfter(agent: ReturnType<typeof startAgent>, delayMs: number): Promise<void> {
    vi.advanceTimersByTime(delayMs - 1);
    expect(agent.connection.state).toBe("backoff");
    vi.advanceTimersByTime(1);
    expect(agent.connection.state).toBe("connecting");
  }

  it("UNAUTHORIZED (a key the control plane does not know): closed with 4001, redials only after the cap", async () => {
    controlTime();
    const cp = await new ControlPlane().start();
    const agent = startAgent(cp, { wrongKey: true, reconnectMaxMs: 600 });
    await waitFor(() => agent.reconnects.length === 1, "the redial to be scheduled");
    expect(cp.sockets[0]!.closed!.code).toBe(CLOSE.UNAUTHORIZED);
    expect(agent.reconnects[0]).toMatchObject({ delayMs: 600, reason: "unauthorized" });
    await redialAfter(agent, 600);
    await waitFor(() => cp.sockets.length === 2, "redial");
    expect(agent.fatal).toEqual([]);
    expect(agent.captured.has("did not accept this host's identity")).toBe(true);
  });

  it("REPLACED: logs that another agent took over and backs off at the cap", async () => {
    controlTime();
    const cp = await new ControlPlane({ onHello: (_s, i) => (i === 0 ? CLOSE.REPLACED : "welcome") }).start();
    const agent = startAgent(cp, { reconnectMaxMs: 500 });
    await waitFor(() => agent.reconnects.length === 1, "the redial to be scheduled");
    expect(cp.sockets[0]!.closed!.code).toBe(CLOSE.REPLACED);
    expect(agent.reconnects[0]).toMatchObject({ delayMs: 500, reason: "replaced" });
    await redialAfter(agent, 500);
    await waitFor(() => cp.welcomed(1), "second, welcomed connection");
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
    // No redial scheduled, and a stopped connection never dials again.
    expect(agent.reconnects).toEqual([]);
    expect(agent.connection.state).toBe("stopped");
    expect(cp.sockets).toHaveLength(1);
  });

  it("redials a vanished control plane with exponential backoff, forever, and resets after a welcome", async () => {
    controlTime();
    // A reserved port: the control plane comes back on it.
    const cp = await new ControlPlane().start(await reservePort());
    const agent = startAgent(cp, { random: () => 0.999999, reconnectBaseMs: 20, reconnectMaxMs: 200 });
    await waitFor(() => cp.last()?.welcomedAt, "welcome");
    const port = cp.port;
    await cp.stop();
    // delay = random · min(cap, base · 2^attempt), with random ≈ 1 here; each dial waits out its delay.
    for (let i = 0; i < 7; i++) {
      await waitFor(() => agent.reconnects.length === i + 1, `redial ${i + 1} to be scheduled`);
      await redialAfter(agent, agent.reconnects[i]!.delayMs);
    }
    await waitFor(() => agent.reconnects.length === 8, "the eighth redial to be scheduled");
    expect(agent.reconnects.slice(0, 7).map((r) => r.delayMs)).toEqual([20, 40, 80, 160, 200, 200, 200]);
    expect(agent.reconnects.slice(0, 7).map((r) => r.attempt)).toEqual([0, 1, 2, 3, 4, 5, 6]);

    await cp.start(port);
    await redialAfter(agent, agent.reconnects[7]!.delayMs);
    const back = await waitFor(() => cp.welcomed(1), "welcome after the control plane came back");
    back.ws.terminate();
    await waitFor(() => agent.reconnects.length === 9, "redial after a drop");
    expect(agent.reconnects[8]).toMatchObject({ attempt: 0, delayMs: 20 });
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

  /** Moves the agent's time on by one heartbeat interval and waits for the control plane to count that ping. */
  async function heartbeat(socket: NonNullable<ReturnType<ControlPlane["welcomed"]>>, intervalMs: number, ping: number): Promise<void> {
    vi.advanceTimersByTime(intervalMs);
    await waitFor(() => socket.pings === ping || socket.closed, `ping ${ping}`);
    expect(socket.closed).toBeUndefined();
  }

  it("heartbeat: pings every interval; a control plane that stops answering is dropped after 3 intervals and redialled", async () => {
    controlTime();
    const cp = await new ControlPlane({ answerPings: false, heartbeatIntervalMs: 100 }).start();
    const agent = startAgent(cp, { heartbeatIntervalMs: 5_000, random: () => 0.5 }); // the welcome's smaller interval wins
    const first = await waitFor(() => cp.welcomed(0), "welcome");
    await waitFor(() => agent.connection.isReady(), "ready");
    for (let ping = 1; ping <= 3; ping++) await heartbeat(first, 100, ping);
    expect(agent.captured.has("nothing heard from the control plane")).toBe(false); // silent for 3 intervals, not more
    vi.advanceTimersByTime(100);
    expect(agent.captured.lines).toContainEqual(
      expect.objectContaining({ msg: "nothing heard from the control plane for 3 heartbeat intervals; redialling", silentForMs: 400 }),
    );
    await waitFor(() => agent.reconnects.length === 1, "the drop");
    expect(agent.reconnects[0]).toMatchObject({ reason: "heartbeat timeout" });
    expect(first.pings).toBe(3);
    await redialAfter(agent, agent.reconnects[0]!.delayMs);
    await waitFor(() => cp.welcomed(1), "redial after silence");
  });

  it("heartbeat: a control plane that answers pong keeps the connection", async () => {
    controlTime();
    const cp = await new ControlPlane({ answerPings: true, heartbeatIntervalMs: 150 }).start();
    const agent = startAgent(cp, { heartbeatIntervalMs: 5_000 });
    const socket = await waitFor(() => cp.welcomed(0), "welcome");
    await waitFor(() => agent.connection.isReady(), "ready");
    // Ten intervals, each ping answered: dropped at the fourth if the pongs did not count.
    for (let ping = 1; ping <= 10; ping++) await heartbeat(socket, 150, ping);
    expect(agent.captured.has("nothing heard from the control plane")).toBe(false);
    expect(agent.reconnects).toEqual([]);
    expect(cp.sockets).toHaveLength(1);
  });

  it("close() ends the connection with 1001 and stops redialling", async () => {
    const cp = await new ControlPlane().start();
    const agent = startAgent(cp);
    const socket = await waitFor(() => cp.welcomed(0), "welcome");
    await agent.connection.close();
    await waitFor(() => socket.closed, "server sees the close");
    expect(socket.closed!.code).toBe(1001);
    // No redial scheduled, and a stopped connection never dials again.
    expect(agent.reconnects).toEqual([]);
    expect(agent.connection.state).toBe("stopped");
    expect(cp.sockets).toHaveLength(1);
  });
});
