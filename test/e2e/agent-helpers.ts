// Helpers for test/e2e/agent.test.ts: a real `wrangler dev` (scripts/dev.mjs) in
// its own process group, the operator API with a session cookie, the real
// berth-agent CLI as child processes with their JSON log lines captured, a TCP
// proxy that can drop or refuse connections, and a raw WebSocket client for
// impersonation attempts. Every process and directory made here is registered
// for cleanup (runCleanups), with a synchronous kill on process exit as a net.
import { spawn, type ChildProcess } from "node:child_process";
import { X509Certificate, randomUUID } from "node:crypto";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { localHosts, type LocalHost } from "../../scripts/local-hosts.mjs";
import { newestTokenLink } from "./browser-helpers";

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const DEV_SCRIPT = fileURLToPath(new URL("../../scripts/dev.mjs", import.meta.url));
const OPERATOR_SCRIPT = fileURLToPath(new URL("../../scripts/operator.mjs", import.meta.url));
const AGENT_MAIN = fileURLToPath(new URL("../../agent/main.ts", import.meta.url));

// ---------- cleanup ----------

const cleanups: Array<() => void | Promise<void>> = [];
/** Process groups (negative pids) and pids still to kill if the test process exits abruptly. */
const liveGroups = new Set<number>();
const livePids = new Set<number>();

process.once("exit", () => {
  for (const pgid of liveGroups) {
    try {
      process.kill(-pgid, "SIGKILL");
    } catch {
      // gone
    }
  }
  for (const pid of livePids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
});

export function onCleanup(fn: () => void | Promise<void>): void {
  cleanups.push(fn);
}

/** Runs every registered cleanup, newest first, continuing past failures. */
export async function runCleanups(): Promise<void> {
  while (cleanups.length) {
    const fn = cleanups.pop()!;
    try {
      await fn();
    } catch (error) {
      console.warn(`[agent e2e] cleanup failed: ${String(error)}`);
    }
  }
}

export function tempRoot(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// ---------- waiting ----------

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Thrown from a `waitFor` check: stop waiting at once (other errors are retried). */
export class Fatal extends Error {}

/** Polls `check` until it returns a truthy value; throws with `what` (and the last error) after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  { timeoutMs = 30_000, intervalMs = 100 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      lastError = undefined;
    } catch (error) {
      if (error instanceof Fatal) throw error;
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ""}`);
    }
    await sleep(intervalMs);
  }
}

/** True once nothing accepts TCP connections on 127.0.0.1:port. */
function portClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(true));
  });
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
}

function tail(text: string, lines = 40): string {
  return text.split("\n").slice(-lines).join("\n");
}

// ---------- wrangler dev ----------

/** `node scripts/dev.mjs --no-agent` on a fixed port and persist dir, in its own process group. */
export class DevServer {
  readonly port: number;
  readonly persistTo: string;
  readonly logFile: string;
  readonly baseUrl: string;
  /**
   * With a port, the local agents and their Caddies run too (HTTPS there, host i's HTTP i above);
   * without, `--no-agent`.
   */
  readonly httpsPort: number | undefined;
  /** How many local hosts (`--hosts`; 1, the default, is the single host of old). */
  readonly hosts: number;
  /** `--enroll-by-hand`: the hosts wait for enrollLocalHost() (local-hosts-helpers.ts). */
  readonly enrollByHand: boolean;
  /** `--stand-in-domain`: customers' domains (under .test) the hosts' Caddies proxy to local servers. */
  readonly standInDomains: Record<string, { host: string; port: number }>;
  private child: ChildProcess | undefined;
  private starts = 0;

  constructor(
    port: number,
    persistTo: string,
    logFile: string,
    {
      httpsPort,
      hosts = 1,
      enrollByHand = false,
      standInDomains = {},
    }: { httpsPort?: number; hosts?: number; enrollByHand?: boolean; standInDomains?: Record<string, { host: string; port: number }> } = {},
  ) {
    this.port = port;
    this.persistTo = persistTo;
    this.logFile = logFile;
    this.httpsPort = httpsPort;
    this.hosts = hosts;
    this.enrollByHand = enrollByHand;
    this.standInDomains = standInDomains;
    this.baseUrl = `http://127.0.0.1:${port}`;
    onCleanup(() => this.stop());
  }

  /** Local host `index` (1 … hosts): its directories, host namespace, Caddy address and ports (scripts/local-hosts.mjs). */
  host(index: number): LocalHost {
    if (this.httpsPort === undefined) throw new Error("this dev server runs no local hosts (--no-agent)");
    const host = localHosts(this.persistTo, this.hosts, this.httpsPort)[index - 1];
    if (!host) throw new Error(`there is no local host ${index} (1 … ${this.hosts})`);
    return host;
  }

  /**
   * The internal CA root of host `index`'s Caddy as PEM, once Caddy has written all of it: it writes
   * the file in place, so a read that only waits for the file to exist can get it empty or cut short.
   */
  caddyRoot(index = 1): Promise<string> {
    const file = join(this.host(index).caddyDir, "pki", "authorities", "local", "root.crt");
    return waitFor(
      "Caddy's local CA root certificate",
      () => {
        const pem = readFileSync(file, "utf8");
        new X509Certificate(pem); // throws until the whole certificate is there
        return pem;
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    );
  }

  /** The local agent's data root: homeservers live in <dataRoot>/homeservers/<serverId>/. */
  get agentDataRoot(): string {
    return join(this.persistTo, "agent-data");
  }

  async start(timeoutMs = 120_000): Promise<void> {
    if (this.child) throw new Error("the dev server is already running");
    this.starts++;
    writeFileSync(this.logFile, `----- start #${this.starts} -----\n`, { flag: "a" });
    const fd = openSync(this.logFile, "a");
    const child = spawn(
      process.execPath,
      [
        DEV_SCRIPT,
        ...["--port", String(this.port), "--stripe-port", "0", "--persist-to", this.persistTo],
        ...(this.httpsPort === undefined ? ["--no-agent"] : ["--https-port", String(this.httpsPort), "--hosts", String(this.hosts)]),
        ...(this.enrollByHand ? ["--enroll-by-hand"] : []),
        ...Object.entries(this.standInDomains).flatMap(([domain, { host, port }]) => ["--stand-in-domain", `${domain}=${host}:${port}`]),
      ],
      { cwd: REPO_ROOT, detached: true, stdio: ["ignore", fd, fd], env: { ...process.env, FORCE_COLOR: "0" } },
    );
    closeSync(fd);
    this.child = child;
    if (child.pid !== undefined) liveGroups.add(child.pid);
    let exited: string | undefined;
    void exitOf(child).then(({ code, signal }) => (exited = `exited with ${code ?? signal}`));
    try {
      await waitFor(
        `wrangler dev on port ${this.port} to answer /api/health`,
        async () => {
          if (exited) throw new Error(exited);
          const response = await fetch(`${this.baseUrl}/api/health`, { signal: AbortSignal.timeout(5_000) });
          return response.status === 200;
        },
        { timeoutMs, intervalMs: 250 },
      );
    } catch (error) {
      throw new Error(`${(error as Error).message}\n--- tail of ${this.logFile} ---\n${this.logTail()}`);
    }
  }

  /** SIGTERM to the whole group, then SIGKILL to whatever is left; waits until the port is free. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    const pid = child.pid;
    const killGroup = (signal: NodeJS.Signals) => {
      try {
        if (pid !== undefined) process.kill(-pid, signal);
      } catch {
        // the group is gone
      }
    };
    if (child.exitCode === null && child.signalCode === null) {
      killGroup("SIGTERM");
      await Promise.race([exitOf(child), sleep(10_000)]);
    }
    killGroup("SIGKILL");
    if (pid !== undefined) liveGroups.delete(pid);
    await waitFor(`port ${this.port} to be released`, () => portClosed(this.port), { timeoutMs: 20_000, intervalMs: 100 });
  }

  log(): string {
    try {
      return readFileSync(this.logFile, "utf8");
    } catch {
      return "";
    }
  }

  logTail(lines = 60): string {
    return tail(this.log(), lines) || "(no log)";
  }
}

/**
 * Signs `api` up as a new operator of `dev` and logs it in: sign-up, the emailed verification link
 * (only a verified account can be an operator), `npm run operator -- grant` on the dev server's
 * local D1 (scripts/operator.mjs), log-in. Returns the credentials, for logging in a browser too.
 */
export async function signUpOperator(api: Api, dev: DevServer): Promise<{ email: string; password: string }> {
  const email = `operator-${randomUUID()}@example.com`;
  const password = `operator pass ${randomUUID()}`;
  await api.expect(202, "POST", "/api/auth/signup", { email, password });
  const verify = await newestTokenLink(dev.baseUrl, email, "/verify-email");
  await api.expect(200, "POST", "/api/auth/verify-email", { token: new URL(verify).searchParams.get("token") });
  const result = await runNode([OPERATOR_SCRIPT, "grant", email, "--persist-to", dev.persistTo], {
    ...process.env,
    FORCE_COLOR: "0",
  });
  if (result.code !== 0) throw new Error(`operator grant exited ${result.code}: ${result.stderr}${result.stdout}`);
  await api.expect(200, "POST", "/api/auth/login", { email, password });
  return { email, password };
}

// ---------- the API ----------

export interface ApiResponse<T = any> {
  status: number;
  body: T;
}

/** JSON requests to the control plane, carrying the operator's session cookie once logged in. */
export class Api {
  readonly baseUrl: string;
  cookie = "";

  constructor(baseUrl: string) {
    this.baseUrl = baseUrl;
  }

  async request<T = any>(method: string, path: string, body?: unknown): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.cookie) headers.cookie = this.cookie;
    const response = await fetch(`${this.baseUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: keep the text
    }
    for (const cookie of response.headers.getSetCookie()) {
      const pair = cookie.split(";")[0]!;
      if (pair.startsWith("__Host-berth_session=")) this.cookie = pair;
    }
    return { status: response.status, body: parsed as T };
  }

  /** A request that must answer `expected`; returns the body. */
  async expect<T = any>(expected: number, method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.request<T>(method, path, body);
    if (response.status !== expected) {
      throw new Error(`${method} ${path} answered ${response.status}, expected ${expected}: ${JSON.stringify(response.body)}`);
    }
    return response.body;
  }

  host(id: string): Promise<HostView> {
    return this.expect(200, "GET", `/api/admin/hosts/${id}`);
  }

  job(id: string): Promise<JobView> {
    return this.expect(200, "GET", `/api/admin/jobs/${id}`);
  }

  enqueue(hostId: string, kind: "noop" | "sleep" | "fail", payload: unknown = {}, timeoutSeconds?: number): Promise<JobView> {
    return this.expect(202, "POST", `/api/admin/hosts/${hostId}/jobs`, { kind, payload, ...(timeoutSeconds ? { timeoutSeconds } : {}) });
  }

  async audit(): Promise<AuditEntry[]> {
    return (await this.expect<{ entries: AuditEntry[] }>(200, "GET", "/api/admin/audit?limit=1000")).entries;
  }

  /** The newest audit id: entries after it are what a step caused. */
  async auditMark(): Promise<number> {
    const entries = await this.audit();
    return Math.max(0, ...entries.map((e) => e.id));
  }

  /** Waits for an audit entry after `mark` that matches. */
  waitAudit(what: string, mark: number, match: (entry: AuditEntry) => boolean, timeoutMs = 30_000): Promise<AuditEntry> {
    return waitFor(`audit entry: ${what}`, async () => (await this.audit()).find((e) => e.id > mark && match(e)), {
      timeoutMs,
      intervalMs: 200,
    });
  }

  /** Refusals counted so far (GET /api/admin/refusals), per "kind/reason", over the hours it lists. */
  async refusalCounts(): Promise<Record<string, number>> {
    const { refusals } = await this.expect<{ refusals: RefusalCount[] }>(200, "GET", "/api/admin/refusals");
    const totals: Record<string, number> = {};
    for (const row of refusals) totals[`${row.kind}/${row.reason}`] = (totals[`${row.kind}/${row.reason}`] ?? 0) + row.count;
    return totals;
  }

  /** Waits until more refusals of `kind` for `reason` are counted than in `mark` (refusalCounts() taken before). */
  waitRefusal(kind: string, reason: string, mark: Record<string, number>, timeoutMs = 30_000): Promise<number> {
    const key = `${kind}/${reason}`;
    return waitFor(
      `a refusal counted: ${key}`,
      async () => {
        const count = (await this.refusalCounts())[key] ?? 0;
        return count > (mark[key] ?? 0) ? count : undefined;
      },
      { timeoutMs, intervalMs: 200 },
    );
  }

  waitJob(id: string, statuses: string[], timeoutMs = 60_000): Promise<JobView> {
    return waitFor(
      `job ${id} to be ${statuses.join(" or ")}`,
      async () => {
        const job = await this.job(id);
        return statuses.includes(job.status) ? job : undefined;
      },
      { timeoutMs, intervalMs: 150 },
    );
  }

  waitHost(id: string, what: string, check: (host: HostView) => boolean, timeoutMs = 60_000): Promise<HostView> {
    return waitFor(
      `host ${id}: ${what}`,
      async () => {
        const host = await this.host(id);
        return check(host) ? host : undefined;
      },
      { timeoutMs, intervalMs: 150 },
    );
  }
}

export interface HostView {
  id: string;
  name: string;
  status: "online" | "offline" | "revoked";
  agentVersion: string | null;
  protocolVersion: number | null;
  diskEncryption: { encrypted: boolean | null; allowUnencrypted: boolean | null; devices: string[] };
  revokedAt: string | null;
  connection: { connected: boolean; pending: number; protocol: number | null };
}

export interface JobView {
  id: string;
  hostId: string;
  kind: string;
  status: "queued" | "sent" | "acked" | "succeeded" | "failed";
  attempts: number;
  result: unknown;
  error: string | null;
  finishedAt: string | null;
}

export interface RefusalCount {
  kind: string;
  reason: string;
  hourStart: string;
  count: number;
}

export interface AuditEntry {
  id: number;
  at: string;
  actor: string;
  action: string;
  target: string | null;
  detail: Record<string, unknown> | null;
}

// ---------- the agent CLI ----------

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `node <args>` in the repository, to its end (killed after `timeoutMs`): its exit code and output. */
export function runNode(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    if (child.pid !== undefined) livePids.add(child.pid);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${args.join(" ")} did not finish within ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      if (child.pid !== undefined) livePids.delete(child.pid);
      resolve({ code, stdout, stderr });
    });
  });
}

/** `berth-agent enroll`, the token passed in the environment (as the README recommends). */
export function agentEnroll(options: { url: string; token: string; configDir: string; dataRoot: string; name: string }): Promise<CliResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, BERTH_AGENT_JOIN_TOKEN: options.token };
  delete env.BERTH_AGENT_CONFIG;
  return runNode([AGENT_MAIN, "enroll", "--url", options.url, "--config", options.configDir, "--data-root", options.dataRoot, "--name", options.name], env);
}

export type LogLine = Record<string, unknown> & { msg: string; level: string; time: string };

/** One `berth-agent run` process: its JSON log lines (stdout) and stderr, captured as they come. */
export class AgentProcess {
  readonly lines: LogLine[] = [];
  stderr = "";
  /** stdout lines that were not JSON (should not happen). */
  readonly other: string[] = [];
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly startedAt = Date.now();
  readonly label: string;
  readonly configDir: string;

  constructor(label: string, configDir: string) {
    this.label = label;
    this.configDir = configDir;
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.BERTH_AGENT_CONFIG;
    delete env.BERTH_AGENT_JOIN_TOKEN;
    this.child = spawn(process.execPath, [AGENT_MAIN, "run", "--config", configDir, "--allow-unencrypted-data-root"], {
      cwd: REPO_ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const pid = this.child.pid;
    if (pid !== undefined) livePids.add(pid);
    this.exited = exitOf(this.child).then((result) => {
      if (pid !== undefined) livePids.delete(pid);
      return result;
    });
    let buffered = "";
    this.child.stdout!.on("data", (chunk: Buffer) => {
      const complete = (buffered + chunk.toString("utf8")).split("\n");
      buffered = complete.pop()!;
      for (const line of complete) {
        if (!line.trim()) continue;
        try {
          this.lines.push(JSON.parse(line) as LogLine);
        } catch {
          this.other.push(line);
        }
      }
    });
    this.child.stderr!.on("data", (chunk: Buffer) => (this.stderr += chunk.toString("utf8")));
    onCleanup(async () => {
      await this.kill("SIGKILL");
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Log lines whose msg matches (exact string or pattern) and, optionally, whose jobId is `jobId`. */
  find(msg: string | RegExp, jobId?: string): LogLine[] {
    return this.lines.filter((l) => (typeof msg === "string" ? l.msg === msg : msg.test(l.msg)) && (jobId === undefined || l.jobId === jobId));
  }

  /** Waits until at least `count` lines match (counting from the process start). */
  waitLog(msg: string | RegExp, { jobId, count = 1, timeoutMs = 30_000 }: { jobId?: string; count?: number; timeoutMs?: number } = {}): Promise<LogLine> {
    return waitFor(
      `agent ${this.label} (pid ${this.pid}) to log "${String(msg)}"${jobId ? ` for job ${jobId}` : ""}${count > 1 ? ` ×${count}` : ""}`,
      () => {
        const found = this.find(msg, jobId);
        if (found.length >= count) return found[count - 1];
        if (!this.running) throw new Error(`the agent exited (${this.child.exitCode ?? this.child.signalCode})`);
        return undefined;
      },
      { timeoutMs, intervalMs: 50 },
    ).catch((error: Error) => {
      throw new Error(`${error.message}\n--- agent ${this.label} log ---\n${this.logTail()}`);
    });
  }

  async kill(signal: NodeJS.Signals = "SIGKILL", timeoutMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) this.child.kill(signal);
    const result = await Promise.race([this.exited, sleep(timeoutMs).then(() => undefined)]);
    if (result) return result;
    this.child.kill("SIGKILL");
    return this.exited;
  }

  /** Waits for the process to exit on its own. */
  waitExit(timeoutMs = 30_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return Promise.race([
      this.exited,
      sleep(timeoutMs).then(() => {
        throw new Error(`agent ${this.label} did not exit within ${timeoutMs} ms\n${this.logTail()}`);
      }),
    ]);
  }

  logTail(lines = 30): string {
    const text = this.lines.map((l) => JSON.stringify(l)).join("\n");
    return `${tail(text, lines)}${this.other.length ? `\n[non-JSON stdout] ${this.other.join("\n")}` : ""}${this.stderr ? `\n[stderr] ${tail(this.stderr, 10)}` : ""}`;
  }
}

// ---------- a TCP proxy between an agent and wrangler dev ----------

/**
 * Forwards 127.0.0.1:<port> to the dev server. `dropAll()` destroys every proxied
 * connection (both sides); while `refusing`, new connections are closed at once.
 */
export class TcpProxy {
  port = 0;
  accepted = 0;
  refusing = false;
  private server: Server | undefined;
  private readonly pairs = new Set<{ client: Socket; upstream: Socket }>();

  readonly targetPort: number;

  constructor(targetPort: number) {
    this.targetPort = targetPort;
    onCleanup(() => this.close());
  }

  async listen(): Promise<void> {
    const server = createServer((client) => this.onConnection(client));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("no proxy port");
    this.port = address.port;
  }

  get connections(): number {
    return this.pairs.size;
  }

  private onConnection(client: Socket): void {
    if (this.refusing) {
      client.destroy();
      return;
    }
    this.accepted++;
    const upstream = createConnection({ host: "127.0.0.1", port: this.targetPort });
    const pair = { client, upstream };
    this.pairs.add(pair);
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Cuts every proxied connection at once, as a network failure would. */
  dropAll(): number {
    const count = this.pairs.size;
    for (const { client, upstream } of [...this.pairs]) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
    return count;
  }

  async close(): Promise<void> {
    this.dropAll();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

// ---------- a raw WebSocket client (no agent) ----------

export interface RawSocket {
  ws: WebSocket;
  /** Parsed JSON messages from the control plane, in order. */
  messages: Array<Record<string, unknown>>;
  closed: Promise<{ code: number; reason: string }>;
  /** The next message of `type` (waits for it). */
  next(type: string, timeoutMs?: number): Promise<Record<string, unknown>>;
}

export function openRaw(url: string): Promise<RawSocket> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  const messages: Array<Record<string, unknown>> = [];
  let closedInfo: { code: number; reason: string } | undefined;
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on("close", (code, reason) => {
      closedInfo = { code, reason: reason.toString("utf8") };
      resolve(closedInfo);
    }),
  );
  ws.on("message", (data, isBinary) => {
    if (isBinary) return;
    try {
      messages.push(JSON.parse(data.toString()) as Record<string, unknown>);
    } catch {
      // "pong" and the like
    }
  });
  ws.on("error", () => {
    // surfaced through `closed`
  });
  onCleanup(() => ws.terminate());
  const raw: RawSocket = {
    ws,
    messages,
    closed,
    next: (type, timeoutMs = 15_000) =>
      waitFor(
        `a "${type}" message`,
        () => {
          const found = messages.find((m) => m.type === type);
          if (found) return found;
          if (closedInfo) throw new Error(`closed (${closedInfo.code} ${closedInfo.reason}) before a "${type}" message`);
          return undefined;
        },
        { timeoutMs, intervalMs: 20 },
      ),
  };
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve(raw));
    ws.once("unexpected-response", (_request, response) => reject(new Error(`upgrade refused: HTTP ${response.statusCode}`)));
    ws.once("error", reject);
  });
}

/** `promise`, or an error naming `what` after `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}
