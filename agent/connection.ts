// The agent's one WebSocket to the control plane, dialled out and kept up forever:
//   open → server sends challenge{nonce} → agent sends hello (signed) → server sends welcome
//   → jobs flow in; acks, progress, results, inventory and usage flow out.
// Text frame "ping" every heartbeat interval (the Durable Object auto-answers "pong");
// nothing heard for 3 intervals means the connection is dead: terminate, redial.
// Redial with full-jitter exponential backoff: random(0, min(max, base · 2^attempt)),
// attempt reset by a welcome. Close codes decide the rest (see handleClose).
import { EventEmitter } from "node:events";
import type { KeyObject } from "node:crypto";
import WebSocket from "ws";
import {
  CLOSE,
  PING,
  PONG,
  PROTOCOL_VERSION,
  agentMessage,
  serverMessage,
  type AgentMessage,
  type DiskEncryption,
  type PublicAddresses,
  type JobAssignment,
  type ReportedWorkload,
  type ServerMessage,
} from "../protocol/messages.ts";
import { signHello } from "./credentials.ts";
import { errorMessage, type Logger } from "./log.ts";
import { Outbox } from "./outbox.ts";

export type Welcome = Extract<ServerMessage, { type: "welcome" }>;
export type ConnectionState = "idle" | "connecting" | "handshake" | "ready" | "backoff" | "stopped";

/** Process exit codes for closes that retrying cannot fix. */
export const EXIT_REVOKED = 3;
export const EXIT_PROTOCOL_TOO_OLD = 4;

/** Largest message accepted from the control plane. */
const MAX_INCOMING_BYTES = 4 * 1024 * 1024;

export interface ConnectionOptions {
  url: string;
  hostId: string;
  privateKey: KeyObject;
  agentVersion: string;
  /** PING cadence until the welcome names one (the smaller of the two is used after). */
  heartbeatIntervalMs: number;
  reconnectBaseMs?: number;
  reconnectMaxMs?: number;
  /** How long after the socket opens the welcome may take. Default: 3 heartbeat intervals. */
  authTimeoutMs?: number;
  diskEncryption: () => DiskEncryption;
  /** From agent.json: where this host is reached, for its homeservers' DNS records. */
  publicAddresses?: PublicAddresses | undefined;
  inventory: () => ReportedWorkload[];
  onJob: (job: JobAssignment) => void;
  onWelcome?: (welcome: Welcome) => void;
  /** A close that retrying cannot fix: the process should exit with `exitCode`. */
  onFatal: (exitCode: number, reason: string) => void;
  log: Logger;
  /** [0, 1), for the backoff jitter. */
  random?: () => number;
  now?: () => number;
}

export interface ReconnectEvent {
  delayMs: number;
  attempt: number;
  reason: string;
}

/**
 * Events: "state" (ConnectionState), "reconnect" (ReconnectEvent), "welcome" (Welcome),
 * "close" ({code, reason}).
 */
export class AgentConnection extends EventEmitter {
  private readonly o: ConnectionOptions;
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly outbox = new Outbox();
  private ws: WebSocket | undefined;
  private generation = 0;
  private attempt = 0;
  private heartbeatMs: number;
  private lastHeard = 0;
  private helloSent = false;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private authTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private closeReason = "";
  private _state: ConnectionState = "idle";

  constructor(options: ConnectionOptions) {
    super();
    this.o = options;
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
    this.heartbeatMs = options.heartbeatIntervalMs;
  }

  get state(): ConnectionState {
    return this._state;
  }

  /** Authenticated and welcomed: messages go out now rather than into the outbox. */
  isReady(): boolean {
    return this._state === "ready" && this.ws?.readyState === WebSocket.OPEN;
  }

  get queued(): number {
    return this.outbox.size;
  }

  start(): void {
    if (this._state !== "idle") return;
    this.connect();
  }

  /**
   * Sends `message` now if welcomed; otherwise keeps what is worth sending late
   * (results, progress, inventory) for after the next welcome.
   */
  send(message: AgentMessage): void {
    const checked = agentMessage.safeParse(message);
    if (!checked.success) {
      this.o.log.error("outgoing message does not match the protocol; dropped", {
        type: message.type,
        issues: checked.error.issues.slice(0, 3).map((i) => `${i.path.join(".")}: ${i.message}`),
      });
      return;
    }
    if (!this.isReady()) {
      this.outbox.push(message);
      return;
    }
    this.write(message);
  }

  /** Closes for good (1001 going away by default) and waits briefly for the close to complete. */
  async close(code = 1001, reason = "agent shutting down"): Promise<void> {
    this.setState("stopped");
    this.clearTimers();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        ws.terminate();
        resolve();
      }, 2_000);
      ws.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else ws.close(code, reason);
    });
  }

  // ---------- internals ----------

  private connect(): void {
    if (this._state === "stopped") return;
    const generation = ++this.generation;
    this.helloSent = false;
    this.closeReason = "";
    this.heartbeatMs = this.o.heartbeatIntervalMs;
    this.setState("connecting");
    this.o.log.info("connecting to the control plane", { url: this.o.url, attempt: this.attempt });
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.o.url, {
        handshakeTimeout: 30_000,
        maxPayload: MAX_INCOMING_BYTES,
        perMessageDeflate: false,
        headers: { "user-agent": `berth-agent/${this.o.agentVersion}` },
      });
    } catch (error) {
      this.o.log.error("cannot dial the control plane", { url: this.o.url, error });
      this.scheduleReconnect("normal", errorMessage(error));
      return;
    }
    this.ws = ws;
    const current = () => generation === this.generation;

    ws.on("open", () => {
      if (!current()) return;
      this.lastHeard = this.now();
      this.setState("handshake");
      this.startHeartbeat();
      const authTimeout = this.o.authTimeoutMs ?? 3 * this.o.heartbeatIntervalMs;
      this.authTimer = setTimeout(() => {
        if (!current() || this._state === "ready") return;
        this.o.log.warn("no welcome from the control plane in time; redialling", { timeoutMs: authTimeout });
        this.closeReason = "handshake timeout";
        ws.terminate();
      }, authTimeout);
    });
    ws.on("message", (data, isBinary) => {
      if (!current()) return;
      this.lastHeard = this.now();
      if (isBinary) {
        this.o.log.warn("binary frame from the control plane ignored");
        return;
      }
      this.onText(ws, rawText(data));
    });
    ws.on("ping", () => {
      if (current()) this.lastHeard = this.now();
    });
    ws.on("pong", () => {
      if (current()) this.lastHeard = this.now();
    });
    ws.on("error", (error) => {
      if (!current()) return;
      this.closeReason = error.message;
      this.o.log.warn("connection error", { error: error.message });
    });
    ws.on("close", (code, reasonBuffer) => {
      if (!current()) return;
      this.clearTimers();
      const reason = reasonBuffer.toString("utf8") || this.closeReason;
      this.emit("close", { code, reason });
      this.handleClose(code, reason);
    });
  }

  private onText(ws: WebSocket, text: string): void {
    if (text === PONG) return;
    if (text === PING) {
      ws.send(PONG);
      return;
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      this.o.log.warn("message from the control plane is not JSON; ignored", { bytes: text.length });
      return;
    }
    const parsed = serverMessage.safeParse(raw);
    if (!parsed.success) {
      const type = typeof raw === "object" && raw !== null ? (raw as { type?: unknown }).type : undefined;
      this.o.log.warn("invalid message from the control plane; ignored", {
        type: typeof type === "string" ? type.slice(0, 64) : undefined,
        issues: parsed.error.issues.slice(0, 3).map((i) => `${i.path.join(".")}: ${i.message}`),
      });
      return;
    }
    const message = parsed.data;
    switch (message.type) {
      case "challenge":
        this.onChallenge(ws, message.nonce, message.protocol);
        return;
      case "welcome":
        this.onWelcome(ws, message);
        return;
      case "job":
        if (this._state !== "ready") {
          this.o.log.warn("job before welcome ignored", { jobId: message.job.id });
          return;
        }
        this.o.onJob(message.job);
        return;
      case "echo":
        if (this._state === "ready") ws.send(JSON.stringify({ type: "echo.reply", id: message.id } satisfies AgentMessage));
        return;
    }
  }

  private onChallenge(ws: WebSocket, nonce: string, protocol: number): void {
    if (this._state !== "handshake" || this.helloSent) {
      this.o.log.warn("unexpected challenge ignored");
      return;
    }
    const diskEncryption = this.o.diskEncryption();
    const workloads = this.o.inventory();
    this.outbox.dropInventory(); // the hello carries the current inventory
    const hello: AgentMessage = {
      type: "hello",
      protocols: [PROTOCOL_VERSION],
      hostId: this.o.hostId,
      nonce,
      signature: signHello(this.o.privateKey, this.o.hostId, nonce),
      agentVersion: this.o.agentVersion,
      diskEncryption,
      ...(this.o.publicAddresses ? { publicAddresses: this.o.publicAddresses } : {}),
      workloads,
    };
    this.helloSent = true;
    this.o.log.info("challenge received; hello sent", {
      serverProtocol: protocol,
      workloads: workloads.length,
      dataRootEncrypted: diskEncryption.encrypted,
    });
    ws.send(JSON.stringify(hello));
  }

  private onWelcome(ws: WebSocket, welcome: Welcome): void {
    if (this._state !== "handshake" || !this.helloSent) {
      this.o.log.warn("unexpected welcome ignored");
      return;
    }
    if (welcome.hostId !== this.o.hostId) {
      this.o.log.error("welcome names another host; dropping the connection", { welcomedAs: welcome.hostId });
      this.closeReason = "welcome for another host";
      ws.terminate();
      return;
    }
    if (this.authTimer) clearTimeout(this.authTimer);
    this.authTimer = undefined;
    this.attempt = 0;
    const heartbeat = Math.min(this.o.heartbeatIntervalMs, welcome.heartbeatIntervalMs);
    if (heartbeat !== this.heartbeatMs) {
      this.heartbeatMs = heartbeat;
      this.startHeartbeat();
    }
    this.setState("ready");
    const queued = this.outbox.drain();
    this.o.log.info("connected to the control plane", { protocol: welcome.protocol, heartbeatMs: heartbeat, flushed: queued.length });
    this.emit("welcome", welcome);
    this.o.onWelcome?.(welcome);
    for (const message of queued) this.write(message);
  }

  private write(message: AgentMessage): void {
    const ws = this.ws;
    if (!ws) {
      this.outbox.push(message);
      return;
    }
    ws.send(JSON.stringify(message), (error) => {
      // Lost with the connection: keep it for the next one (results, progress, inventory).
      if (error) this.outbox.push(message);
    });
  }

  private startHeartbeat(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    const interval = this.heartbeatMs;
    this.heartbeatTimer = setInterval(() => {
      const ws = this.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      const silentFor = this.now() - this.lastHeard;
      if (silentFor > 3 * interval) {
        this.o.log.warn("nothing heard from the control plane for 3 heartbeat intervals; redialling", { silentForMs: silentFor });
        this.closeReason = "heartbeat timeout";
        ws.terminate();
        return;
      }
      ws.send(PING);
    }, interval);
  }

  private handleClose(code: number, reason: string): void {
    const was = this._state;
    this.ws = undefined;
    if (was === "stopped") return;
    const fields = { code, reason: reason.slice(0, 200) };
    switch (code) {
      case CLOSE.REVOKED:
        this.o.log.error("the control plane revoked this host's credential; stopping (re-enroll to bring the host back)", fields);
        this.setState("stopped");
        this.o.onFatal(EXIT_REVOKED, "host credential revoked");
        return;
      case CLOSE.PROTOCOL_TOO_OLD:
        this.o.log.error("the control plane no longer speaks this agent's protocol: upgrade the agent", {
          ...fields,
          agentVersion: this.o.agentVersion,
          protocols: [PROTOCOL_VERSION],
        });
        this.setState("stopped");
        this.o.onFatal(EXIT_PROTOCOL_TOO_OLD, "protocol too old: upgrade the agent");
        return;
      case CLOSE.UNAUTHORIZED:
        this.o.log.error("the control plane did not accept this host's identity (unknown host or wrong key); retrying slowly", fields);
        this.scheduleReconnect("slow", "unauthorized");
        return;
      case CLOSE.REPLACED:
        this.o.log.warn("another agent with this host's identity connected and replaced this one; retrying slowly", fields);
        this.scheduleReconnect("slow", "replaced");
        return;
      case CLOSE.INVALID_MESSAGE:
        this.o.log.error("the control plane rejected a message from this agent", fields);
        break;
      default:
        if (/Unexpected server response: 40[13]\b/.test(reason)) {
          this.o.log.error("the control plane refused the WebSocket upgrade; retrying slowly", fields);
          this.scheduleReconnect("slow", reason);
          return;
        }
        this.o.log.warn(was === "ready" ? "connection to the control plane lost" : "could not connect to the control plane", fields);
    }
    this.scheduleReconnect("normal", reason || `close ${code}`);
  }

  /** "normal": full jitter, exponential; "slow": the cap itself (unauthorized, replaced). */
  private scheduleReconnect(mode: "normal" | "slow", reason: string): void {
    if (this._state === "stopped") return;
    const base = this.o.reconnectBaseMs ?? 1_000;
    const max = this.o.reconnectMaxMs ?? 15_000;
    const ceiling = Math.min(max, base * 2 ** Math.min(this.attempt, 30));
    const delayMs = Math.round(mode === "slow" ? max : this.random() * ceiling);
    const event: ReconnectEvent = { delayMs, attempt: this.attempt, reason };
    this.attempt++;
    this.setState("backoff");
    this.o.log.info("reconnecting after a delay", { delayMs, attempt: event.attempt, reason: reason.slice(0, 200) });
    this.emit("reconnect", event);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.connect();
    }, delayMs);
  }

  private clearTimers(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    if (this.authTimer) clearTimeout(this.authTimer);
    this.heartbeatTimer = undefined;
    this.authTimer = undefined;
  }

  private setState(state: ConnectionState): void {
    if (this._state === state) return;
    this._state = state;
    this.emit("state", state);
  }
}

function rawText(data: WebSocket.RawData): string {
  if (Buffer.isBuffer(data)) return data.toString("utf8");
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  return Buffer.from(data).toString("utf8");
}
