import { DurableObject } from "cloudflare:workers";
import { and, eq } from "drizzle-orm";
import {
  agentMessage,
  CLOSE,
  helloSigningInput,
  OLDEST_SUPPORTED_PROTOCOL,
  PING,
  PONG,
  PROTOCOL_VERSION,
  type AgentMessage,
  type HelloMessage,
} from "../../protocol/messages";
import { audit } from "../audit/audit";
import { countAgainstRefusalLimit, recordRefusal, type RefusalReason } from "../audit/refusals";
import { clientNetwork } from "../auth/rate-limit";
import { workContext } from "../context";
import { repointHostLater } from "../dns/records";
import { database, type Database } from "../db/client";
import { hosts } from "../db/schema";
import { randomToken } from "../crypto/bytes";
import type { WorkerEnv } from "../env";
import { deliveryRound, markAcked, nextJobDeadline, recordProgress, recordResult, redeliverUnfinished } from "./jobs";
import {
  AUTH_TIMEOUT_MS,
  ECHO_TIMEOUT_MS,
  HEARTBEAT_INTERVAL_MS,
  LAST_SEEN_WRITE_INTERVAL_MS,
  OFFLINE_AFTER_MS,
  USAGE_INTERVAL_MS,
  WATCH_INTERVAL_MS,
} from "./policy";
import { acceptedAddresses } from "./addresses";
import { recordCertificates } from "./certificates";
import { reconcileHost } from "./reconcile";
import { verifyHostSignature } from "./signatures";
import { reviewTightness } from "./tight-hosts";
import { ingestUsage } from "./usage";
import { payloadForDelivery } from "../backups/restore";
import { applyJobOutcome } from "../servers/outcomes";

type Attachment =
  // `client`: the caller's network (clientNetwork()), whose refusals count against its limit.
  | { state: "pending"; hostId: string; nonce: string; openedAt: number; client?: string }
  | {
      state: "authenticated";
      hostId: string;
      protocol: number;
      connectedAt: number;
      lastMessageAt: number;
      lastSeenWrittenAt: number;
      /** The previous watch round found this connection silent too long (see alarm()). */
      silentLastRound?: boolean;
    };

export interface ConnectionStatus {
  connected: boolean;
  pending: number;
  protocol: number | null;
}

/**
 * One per host: holds that host's agent WebSocket (with the Hibernation API,
 * so an idle connection costs nothing), authenticates it by an Ed25519
 * challenge, delivers the host's jobs from D1 and retries them, records what
 * the agent reports, and marks the host offline after ~90 s of silence.
 * Nothing else talks to the agent.
 */
export class HostConnection extends DurableObject<WorkerEnv> {
  /** Echoes awaiting their reply, by id: in memory, as the awaiting RPC keeps this object awake. */
  private readonly echoes = new Map<string, () => void>();

  constructor(ctx: DurableObjectState, env: WorkerEnv) {
    super(ctx, env);
    // Heartbeats are answered by the runtime itself, without waking this object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING, PONG));
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS used_request_tokens (jti TEXT PRIMARY KEY, forget_after INTEGER NOT NULL)");
  }

  private get db(): Database {
    return database(this.env.DB);
  }

  private sockets(state: Attachment["state"]): WebSocket[] {
    return this.ctx.getWebSockets().filter((ws) => (ws.deserializeAttachment() as Attachment | null)?.state === state);
  }

  /** The agent's WebSocket upgrade, forwarded by the Worker for host `?host=`. */
  override async fetch(request: Request): Promise<Response> {
    const hostId = new URL(request.url).searchParams.get("host");
    if (!hostId || request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("expected a WebSocket upgrade", { status: 426 });
    }
    await this.ctx.storage.put("hostId", hostId);
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    const nonce = randomToken();
    const caller = clientNetwork(request.headers.get("cf-connecting-ip") ?? undefined);
    server.serializeAttachment({ state: "pending", hostId, nonce, openedAt: Date.now(), client: caller } satisfies Attachment);
    server.send(JSON.stringify({ type: "challenge", protocol: PROTOCOL_VERSION, nonce }));
    await this.scheduleAlarm(Date.now() + AUTH_TIMEOUT_MS);
    return new Response(null, { status: 101, webSocket: client });
  }

  override async webSocketMessage(ws: WebSocket, raw: string | ArrayBuffer): Promise<void> {
    const attachment = ws.deserializeAttachment() as Attachment;
    let message: AgentMessage;
    try {
      if (typeof raw !== "string") throw new Error("binary frame");
      message = agentMessage.parse(JSON.parse(raw));
    } catch {
      if (attachment.state === "pending") await this.refuseUnproven(ws, attachment, CLOSE.INVALID_MESSAGE, "invalid message", "invalid message");
      else await this.refuseHost(ws, attachment.hostId, CLOSE.INVALID_MESSAGE, "invalid message", "agent.invalid_message");
      return;
    }
    if (attachment.state === "pending") {
      if (message.type !== "hello") {
        await this.refuseUnproven(ws, attachment, CLOSE.UNAUTHORIZED, "say hello first", "no hello");
        return;
      }
      await this.authenticate(ws, attachment, message);
      return;
    }

    const now = new Date();
    ws.serializeAttachment({ ...attachment, lastMessageAt: now.getTime() } satisfies Attachment);
    const { hostId } = attachment;
    switch (message.type) {
      case "hello":
        break; // already authenticated: ignore a repeat
      case "job.ack":
        await markAcked(this.db, hostId, message.id, now);
        break;
      case "job.progress":
        await recordProgress(this.db, hostId, message.id, message.progress, message.message, now);
        break;
      case "job.result": {
        const finished = await recordResult(this.db, hostId, message, now);
        if (finished) await applyJobOutcome(workContext(this.env, now), finished);
        break;
      }
      case "inventory":
        if (message.certificates) await recordCertificates(this.db, hostId, message.certificates, now);
        await reconcileHost(this.db, hostId, message.workloads, now);
        await this.deliver();
        break;
      case "usage": {
        await ingestUsage(this.db, hostId, message.samples, now);
        const [host] = await this.db.select().from(hosts).where(eq(hosts.id, hostId));
        if (host) await reviewTightness(this.db, host, now);
        break;
      }
      case "echo.reply":
        // A reply to no echo of ours (made up, or too late) is ignored.
        this.echoes.get(message.id)?.();
        break;
    }
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    const attachment = ws.deserializeAttachment() as Attachment | null;
    ws.close(code === 1005 || code === 1006 ? 1000 : code, reason);
    if (attachment?.state === "authenticated" && this.sockets("authenticated").every((other) => other === ws)) {
      await this.markOffline(attachment.hostId, "connection closed");
    }
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    await this.webSocketClose(ws, 1011, "error");
  }

  /**
   * Auth timeouts, heartbeat silence, job resends and deadlines. An idle
   * connected host costs one wake-up every WATCH_INTERVAL_MS, which touches
   * D1 only to refresh last-seen (at most once a minute) or when a job is due.
   */
  override async alarm(): Promise<void> {
    const now = Date.now();
    let connected = false;
    let silent = false;
    for (const ws of this.ctx.getWebSockets()) {
      const attachment = ws.deserializeAttachment() as Attachment | null;
      if (!attachment) continue;
      if (attachment.state === "pending" && now - attachment.openedAt >= AUTH_TIMEOUT_MS) {
        await this.refuseUnproven(ws, attachment, CLOSE.AUTH_TIMEOUT, "no hello in time", "timeout");
      }
      if (attachment.state !== "authenticated") continue;
      const heardAt = Math.max(attachment.lastMessageAt, this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0);
      // Silence is confirmed by two rounds in a row, so one step of the clock (or one late
      // alarm) cannot cut off a host that is talking: a live agent is heard again within a round.
      const silentNow = now - heardAt >= OFFLINE_AFTER_MS;
      if (silentNow && attachment.silentLastRound) {
        ws.close(CLOSE.HEARTBEAT_TIMEOUT, "no heartbeat");
        silent = true;
        continue;
      }
      if (silentNow !== (attachment.silentLastRound ?? false)) ws.serializeAttachment({ ...attachment, silentLastRound: silentNow } satisfies Attachment);
      connected = true;
      if (now - attachment.lastSeenWrittenAt >= LAST_SEEN_WRITE_INTERVAL_MS) {
        await this.db
          .update(hosts)
          .set({ lastSeenAt: new Date(heardAt) })
          .where(eq(hosts.id, attachment.hostId));
        ws.serializeAttachment({ ...attachment, silentLastRound: silentNow, lastSeenWrittenAt: now } satisfies Attachment);
      }
    }
    const hostId = await this.ctx.storage.get<string>("hostId");
    // Also covers a restart: the sockets are gone without a close event, and the host must not stay "online".
    if (!connected && hostId) await this.markOffline(hostId, silent ? "heartbeat timeout" : "no live connection");
    const jobsDueAt = (await this.ctx.storage.get<number>("jobsDueAt")) ?? 0;
    if (now >= jobsDueAt) await this.deliver();
    else await this.scheduleAlarm(Math.min(connected ? now + WATCH_INTERVAL_MS : Infinity, jobsDueAt));
  }

  // ---------- RPC from the Worker ----------

  /**
   * Sends every due job to the connected agent, fails those past their deadline,
   * and re-arms the alarm. The Worker names the host, since a host that never
   * connected has not told this object who it is.
   */
  async deliver(hostIdFromWorker?: string): Promise<void> {
    const known = await this.ctx.storage.get<string>("hostId");
    // Written only when new: a pending write holds back the job messages sent meanwhile (output gate).
    if (hostIdFromWorker && hostIdFromWorker !== known) await this.ctx.storage.put("hostId", hostIdFromWorker);
    const hostId = hostIdFromWorker ?? known;
    if (!hostId) return;
    const work = workContext(this.env, new Date());
    const { now } = work;
    const [ws] = this.sockets("authenticated");
    const { expired, claimed, nextDeadline } = await deliveryRound(this.db, hostId, now, Boolean(ws));
    for (const job of claimed) {
      ws!.send(
        JSON.stringify({
          type: "job",
          job: { id: job.id, kind: job.kind, payload: await payloadForDelivery(work, job), attempt: job.attempts, deadline: job.deadline.getTime() },
        }),
      );
    }
    // After the sends: what an expired job's outcome starts is delivered in a round of its own.
    for (const job of expired) await applyJobOutcome(work, job);
    // An expired job's outcome may have made jobs of this host: the round's deadline predates them.
    const deadline = expired.length > 0 ? await nextJobDeadline(this.db, hostId, Boolean(ws)) : nextDeadline;
    const jobsDueAt = deadline?.getTime() ?? Infinity;
    if (jobsDueAt !== (await this.ctx.storage.get<number>("jobsDueAt"))) await this.ctx.storage.put("jobsDueAt", jobsDueAt);
    const watch = this.ctx.getWebSockets().length > 0 ? now.getTime() + WATCH_INTERVAL_MS : Infinity;
    await this.scheduleAlarm(Math.min(watch, jobsDueAt));
  }

  /**
   * Development only (POST /dev/hosts/:id/echo): sends one echo over the agent's connection and
   * resolves with its id when the agent answers it; no D1. "not connected" without a live connection, "timeout"
   * when the agent does not answer within ECHO_TIMEOUT_MS (an old agent ignores the message).
   */
  async echo(): Promise<{ outcome: "answered"; id: string } | { outcome: "not connected" } | { outcome: "timeout" }> {
    const [ws] = this.sockets("authenticated");
    if (!ws) return { outcome: "not connected" };
    const id = crypto.randomUUID();
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await new Promise((resolve) => {
        this.echoes.set(id, () => resolve({ outcome: "answered", id }));
        timer = setTimeout(() => resolve({ outcome: "timeout" }), ECHO_TIMEOUT_MS);
        ws.send(JSON.stringify({ type: "echo", id }));
      });
    } finally {
      clearTimeout(timer);
      this.echoes.delete(id);
    }
  }

  /** Ends the host's live connection at once (revocation). */
  async revoke(): Promise<void> {
    for (const ws of this.ctx.getWebSockets()) ws.close(CLOSE.REVOKED, "host revoked");
  }

  /**
   * The replay cache of the host's signed HTTP requests: true the first time
   * this host's token id `jti` is seen, false ever after. An id is kept until
   * `forgetAfter` (Unix ms), once the Worker refuses its token as expired
   * anyway; the table holds only the last minute or two of requests.
   */
  async admitRequestToken(jti: string, forgetAfter: number, now: number): Promise<boolean> {
    const sql = this.ctx.storage.sql;
    sql.exec("DELETE FROM used_request_tokens WHERE forget_after <= ?", now);
    const inserted = sql.exec("INSERT INTO used_request_tokens (jti, forget_after) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING jti", jti, forgetAfter);
    return inserted.toArray().length === 1;
  }

  async status(): Promise<ConnectionStatus> {
    const [ws] = this.sockets("authenticated");
    const attachment = ws?.deserializeAttachment() as Attachment | undefined;
    return {
      connected: Boolean(ws),
      pending: this.sockets("pending").length,
      protocol: attachment?.state === "authenticated" ? attachment.protocol : null,
    };
  }

  // ---------- internals ----------

  private async authenticate(ws: WebSocket, attachment: Extract<Attachment, { state: "pending" }>, hello: HelloMessage) {
    const now = new Date();
    const [host] = await this.db.select().from(hosts).where(eq(hosts.id, attachment.hostId));
    // Until the signature holds, a refusal is of a caller who proved nothing, whichever host it named.
    const refuse = (code: number, closeReason: string, reason: RefusalReason<"agent.auth_refused">) =>
      this.refuseUnproven(ws, attachment, code, closeReason, reason);

    if (!host) return refuse(CLOSE.UNAUTHORIZED, "unknown host", "unknown host");
    if (host.status === "revoked") return refuse(CLOSE.REVOKED, "host revoked", "revoked host");
    if (hello.hostId !== attachment.hostId) return refuse(CLOSE.UNAUTHORIZED, "wrong host", "hello names another host");
    if (hello.nonce !== attachment.nonce) return refuse(CLOSE.UNAUTHORIZED, "stale challenge", "replayed or stale challenge");
    const signed = await verifyHostSignature(host.publicKey, hello.signature, helloSigningInput(host.id, hello.nonce));
    if (!signed) return refuse(CLOSE.UNAUTHORIZED, "bad signature", "bad signature");
    const protocol = Math.max(...hello.protocols.filter((v) => v >= OLDEST_SUPPORTED_PROTOCOL && v <= PROTOCOL_VERSION));
    if (!Number.isFinite(protocol)) {
      const closeReason = `agent too old: this control plane speaks protocol ${OLDEST_SUPPORTED_PROTOCOL}–${PROTOCOL_VERSION}; upgrade berth-agent`;
      return this.refuseHost(ws, host.id, CLOSE.PROTOCOL_TOO_OLD, closeReason, "agent.auth_refused", { reason: "protocol too old" });
    }

    // One live connection per host: the newest wins.
    for (const other of this.sockets("authenticated")) other.close(CLOSE.REPLACED, "replaced by a newer connection");
    ws.serializeAttachment({
      state: "authenticated",
      hostId: host.id,
      protocol,
      connectedAt: now.getTime(),
      lastMessageAt: now.getTime(),
      lastSeenWrittenAt: now.getTime(),
    } satisfies Attachment);
    const report = hello.diskEncryption;
    const { addresses, refused } = acceptedAddresses(workContext(this.env, now).config, hello.publicAddresses);
    if (refused) console.warn(JSON.stringify({ event: "agent.public_addresses_refused", hostId: host.id, reason: refused }));
    const publicIpv4 = addresses?.ipv4 ?? null;
    const publicIpv6 = addresses?.ipv6 ?? null;
    await this.db.batch([
      this.db
        .update(hosts)
        .set({
          status: "online",
          lastSeenAt: now,
          agentVersion: hello.agentVersion,
          protocolVersion: protocol,
          diskEncrypted: report.encrypted,
          allowUnencrypted: report.allowUnencrypted,
          diskDevices: report.devices,
          // What the agent says now: none (an older agent, none configured, or refused) leaves its homeservers' records as they are, waiting.
          publicIpv4,
          publicIpv6,
        })
        .where(eq(hosts.id, host.id)),
      audit(this.db, now, `host:${host.id}`, "agent.connected", host.id, {
        agentVersion: hello.agentVersion,
        protocol,
        diskEncrypted: report.encrypted,
        allowUnencrypted: report.allowUnencrypted,
        publicAddresses: addresses,
        ...(refused ? { publicAddressesRefused: refused } : {}),
      }),
    ]);
    // Not the hourly reconciliation: the next minutely pass points its homeservers at the new addresses.
    if (publicIpv4 !== host.publicIpv4 || publicIpv6 !== host.publicIpv6) await repointHostLater(this.db, host.id, now);
    ws.send(
      JSON.stringify({
        type: "welcome",
        protocol,
        hostId: host.id,
        heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
        usageIntervalMs: USAGE_INTERVAL_MS,
      }),
    );
    await redeliverUnfinished(this.db, host.id, now);
    if (hello.certificates) await recordCertificates(this.db, host.id, hello.certificates, now);
    await reconcileHost(this.db, host.id, hello.workloads, now);
    await this.deliver();
  }

  /**
   * Closes a connection that has not authenticated: counted for operators and
   * against its client's limit of refusals, never audited (it proves nothing,
   * not even that it is the host it named).
   */
  private async refuseUnproven(
    ws: WebSocket,
    attachment: Extract<Attachment, { state: "pending" }>,
    code: number,
    closeReason: string,
    reason: RefusalReason<"agent.auth_refused">,
  ) {
    const now = new Date();
    await recordRefusal(this.db, now, "agent.auth_refused", reason, { host: attachment.hostId });
    // Once over its limit, the client's next connection is turned away before reaching this object.
    await countAgainstRefusalLimit({ ...workContext(this.env, now), client: attachment.client ?? "unknown" });
    ws.close(code, closeReason);
  }

  /** Closes an authenticated host's connection, audited as that host's. */
  private async refuseHost(ws: WebSocket, hostId: string, code: number, closeReason: string, action: string, detail: Record<string, unknown> = {}) {
    console.warn(JSON.stringify({ event: action, hostId, code, ...detail }));
    await audit(this.db, new Date(), `host:${hostId}`, action, hostId, { code, ...detail });
    ws.close(code, closeReason);
  }

  /** Records the host as offline once (the audit entry only when it really was online). */
  private async markOffline(hostId: string, reason: string) {
    const now = new Date();
    const [changed] = await this.db
      .update(hosts)
      .set({ status: "offline" })
      .where(and(eq(hosts.id, hostId), eq(hosts.status, "online")))
      .returning({ id: hosts.id });
    if (changed) await audit(this.db, now, `host:${hostId}`, "agent.disconnected", hostId, { reason });
  }

  private async scheduleAlarm(at: number) {
    if (!Number.isFinite(at)) return;
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > at || current < Date.now()) await this.ctx.storage.setAlarm(at);
  }
}
