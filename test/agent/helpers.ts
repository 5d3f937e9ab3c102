// Shared set-up for the agent tests: temp directories, captured logs, polling, and
// a small control plane (HTTP enrollment + WebSocket) that speaks the real protocol.
import { spawn, type ChildProcess } from "node:child_process";
import { createPublicKey, randomBytes, verify, type KeyObject } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { silentLogger } from "../../agent/log.ts";
import { WebSocketServer, type WebSocket } from "ws";
import { CLOSE, PING, PONG, PROTOCOL_VERSION, agentMessage, helloSigningInput, type AgentMessage, type JobAssignment } from "../../protocol/messages.ts";
import { createLogger, type Logger } from "../../agent/log.ts";

export const REPO_ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
export const AGENT_MAIN = join(REPO_ROOT, "agent", "main.ts");

const cleanups: Array<() => void | Promise<void>> = [];

/** Registers something to undo in afterEach (see runCleanups). */
export function onCleanup(fn: () => void | Promise<void>): void {
  cleanups.push(fn);
}

export async function runCleanups(): Promise<void> {
  while (cleanups.length) {
    const fn = cleanups.pop()!;
    try {
      await fn();
    } catch {
      // keep cleaning
    }
  }
}

export function tempDir(prefix = "berth-agent-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface CapturedLog {
  log: Logger;
  lines: Array<Record<string, unknown>>;
  has: (msg: string | RegExp) => boolean;
}

export function captureLog(): CapturedLog {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger({ level: "debug", write: (line) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  const has = (msg: string | RegExp) => lines.some((l) => (typeof msg === "string" ? String(l.msg).includes(msg) : msg.test(String(l.msg))));
  return { log, lines, has };
}

// The real timer and clock, taken before any test fakes them (vi.useFakeTimers): waiting for
// sockets and processes runs in real time while a test controls the agent's own timers.
const realSetTimeout = globalThis.setTimeout;
const realNow = performance.now.bind(performance);

export async function waitFor<T>(
  fn: () => T | undefined | false | null | Promise<T | undefined | false | null>,
  what = "condition",
  timeoutMs = 10_000,
): Promise<T> {
  const started = realNow();
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (realNow() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => realSetTimeout(resolve, ms));
}

export function publicKeyFromRaw(raw: string): KeyObject {
  return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: raw }, format: "jwk" });
}

// ---------- the fake control plane ----------

export interface AgentSocket {
  ws: WebSocket;
  openedAt: number;
  nonce: string;
  /** Every message received, validated against the protocol (a violation is recorded in `invalid`). */
  messages: AgentMessage[];
  invalid: string[];
  pings: number;
  welcomedAt?: number;
  closed?: { code: number; reason: string; at: number };
  sendJob(job: Partial<JobAssignment> & Pick<JobAssignment, "id" | "kind">): void;
  of<T extends AgentMessage["type"]>(type: T): Array<Extract<AgentMessage, { type: T }>>;
}

export type HelloDecision = "welcome" | "silent" | number;

export interface ControlPlaneOptions {
  /** Answer text "ping" frames with "pong" (the Durable Object's auto-response). Default true. */
  answerPings?: boolean;
  /** What to do with a hello whose signature checked out. Default "welcome". */
  onHello?: (socket: AgentSocket, index: number) => HelloDecision;
  heartbeatIntervalMs?: number;
  usageIntervalMs?: number;
  /** POST /api/agent/enroll; default: accept any valid request for the host "host_test". */
  onEnroll?: (body: unknown, req: IncomingMessage, res: ServerResponse) => void;
}

export class ControlPlane {
  readonly sockets: AgentSocket[] = [];
  readonly enrollments: unknown[] = [];
  /** hostId → public key (raw, base64url), as enrollment records it. */
  readonly hosts = new Map<string, string>();
  readonly options: ControlPlaneOptions;
  private server!: Server;
  private wss!: WebSocketServer;
  port = 0;

  constructor(options: ControlPlaneOptions = {}) {
    this.options = options;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get connectUrl(): string {
    return `ws://127.0.0.1:${this.port}/api/agent/connect`;
  }

  async start(port = 0): Promise<this> {
    this.wss = new WebSocketServer({ noServer: true });
    this.server = createServer((req, res) => this.http(req, res));
    this.server.on("upgrade", (req, socket, head) => {
      if (!req.url?.startsWith("/api/agent/connect")) {
        socket.destroy();
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws));
    });
    await new Promise<void>((resolve) => this.server.listen(port, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
    onCleanup(() => this.stop());
    return this;
  }

  /** Kills every connection abruptly and stops listening. */
  async stop(): Promise<void> {
    for (const client of this.wss?.clients ?? []) client.terminate();
    this.wss?.close();
    await new Promise<void>((resolve) => {
      if (!this.server?.listening) return resolve();
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  last(): AgentSocket | undefined {
    return this.sockets.at(-1);
  }

  /** Connection number `index` (default: the latest) once it has been welcomed. */
  welcomed(index = this.sockets.length - 1): AgentSocket | undefined {
    const socket = this.sockets[index];
    return socket?.welcomedAt !== undefined ? socket : undefined;
  }

  private http(req: IncomingMessage, res: ServerResponse): void {
    if (req.method !== "POST" || req.url !== "/api/agent/enroll") {
      res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { code: "not_found", message: "Not found." } }));
      return;
    }
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        res.writeHead(400).end();
        return;
      }
      this.enrollments.push(body);
      if (this.options.onEnroll) return this.options.onEnroll(body, req, res);
      const publicKey = (body as { publicKey: string }).publicKey;
      this.hosts.set("host_test", publicKey);
      res.writeHead(201, { "content-type": "application/json" }).end(JSON.stringify({ hostId: "host_test", region: "us-east", connectUrl: this.connectUrl }));
    });
  }

  private accept(ws: WebSocket): void {
    const index = this.sockets.length;
    const nonce = randomBytes(32).toString("base64url");
    const socket: AgentSocket = {
      ws,
      openedAt: Date.now(),
      nonce,
      messages: [],
      invalid: [],
      pings: 0,
      sendJob: (job) =>
        ws.send(
          JSON.stringify({
            type: "job",
            job: { payload: null, attempt: 1, deadline: Date.now() + 60_000, ...job },
          }),
        ),
      of: (type) => socket.messages.filter((m) => m.type === type) as never,
    };
    this.sockets.push(socket);
    ws.on("close", (code, reason) => (socket.closed = { code, reason: reason.toString(), at: Date.now() }));
    ws.on("message", (data) => {
      const text = data.toString();
      if (text === PING) {
        socket.pings++;
        if (this.options.answerPings ?? true) ws.send(PONG);
        return;
      }
      const parsed = agentMessage.safeParse(JSON.parse(text));
      if (!parsed.success) {
        socket.invalid.push(text);
        ws.close(CLOSE.INVALID_MESSAGE, "invalid message");
        return;
      }
      const message = parsed.data;
      socket.messages.push(message);
      if (message.type === "hello") this.hello(socket, index, message);
    });
    ws.send(JSON.stringify({ type: "challenge", protocol: PROTOCOL_VERSION, nonce }));
  }

  private hello(socket: AgentSocket, index: number, hello: Extract<AgentMessage, { type: "hello" }>): void {
    const raw = this.hosts.get(hello.hostId);
    const ok =
      raw !== undefined &&
      hello.nonce === socket.nonce &&
      hello.protocols.includes(PROTOCOL_VERSION) &&
      verify(null, Buffer.from(helloSigningInput(hello.hostId, socket.nonce)), publicKeyFromRaw(raw), Buffer.from(hello.signature, "base64url"));
    if (!ok) {
      socket.ws.close(CLOSE.UNAUTHORIZED, "unauthorized");
      return;
    }
    const decision = this.options.onHello?.(socket, index) ?? "welcome";
    if (decision === "silent") return;
    if (typeof decision === "number") {
      socket.ws.close(decision, "closed by test");
      return;
    }
    socket.welcomedAt = Date.now();
    socket.ws.send(
      JSON.stringify({
        type: "welcome",
        protocol: PROTOCOL_VERSION,
        hostId: hello.hostId,
        heartbeatIntervalMs: this.options.heartbeatIntervalMs ?? 20_000,
        usageIntervalMs: this.options.usageIntervalMs ?? 30_000,
      }),
    );
  }
}

// ---------- the real CLI ----------

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunningCli {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Parsed JSON log lines so far. */
  logs: () => Array<Record<string, unknown>>;
  exited: Promise<CliResult>;
}

/** Spawns `node agent/main.ts …args` with this Node (22: type stripping). */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): RunningCli {
  const child = spawn(process.execPath, [AGENT_MAIN, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, BERTH_AGENT_CONFIG: "", BERTH_AGENT_JOIN_TOKEN: "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<CliResult>((resolve) => child.on("exit", (code, signal) => setImmediate(() => resolve({ code, signal, stdout, stderr }))));
  onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
  });
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    logs: () =>
      stdout
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    exited,
  };
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): Promise<CliResult> {
  const cli = startCli(args, env);
  const timer = setTimeout(() => cli.child.kill("SIGKILL"), timeoutMs);
  return cli.exited.finally(() => clearTimeout(timer));
}

/** What a job handler runs with, for calling one directly: no progress kept, nothing cancelled. */
export function jobContext(kind: string) {
  return {
    progress: () => undefined,
    signal: new AbortController().signal,
    dataRoot: tempDir(),
    log: silentLogger,
    job: { id: "job-1", kind, attempt: 1, deadline: Date.now() + 60_000 },
  };
}
