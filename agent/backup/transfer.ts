// Moving backups between a host and the control plane: every request carries a
// token signed with the host's Ed25519 key (protocol/agent-requests.ts), uploads as a multipart
// upload of fixed-size parts through the Worker, downloads as one stream.
// Memory is bounded by two parts: one uploading while the next fills.
import { createHash, type KeyObject } from "node:crypto";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { Readable } from "node:stream";
import { signAgentRequest } from "../../protocol/agent-requests.ts";
import { backupPartReceipt, type BackupCompleteRequest, type BackupPartReceipt } from "../../protocol/messages.ts";
import { delay } from "../runtime/delay.ts";

export interface AgentIdentity {
  hostId: string;
  privateKey: KeyObject;
}

export class TransferError extends Error {
  override name = "TransferError";
  /** Worth trying again (network trouble, 5xx, 429); a 4xx other than 429 is not. */
  readonly retriable: boolean;

  constructor(message: string, retriable: boolean) {
    super(message);
    this.retriable = retriable;
  }
}

const EMPTY_SHA256 = createHash("sha256").digest("hex");

const sha256Hex = (data: Buffer) => createHash("sha256").update(data).digest("hex");

/**
 * fetch with `Authorization: Bearer <token>`: a token of its own for each
 * request (a retry signs anew), over its method, path and the body's SHA-256
 * (`bodySha256` when the caller has it already: a part is hashed once, not per attempt).
 */
export async function signedFetch(
  identity: AgentIdentity,
  url: string,
  init: { method: string; body?: Buffer; bodySha256?: string; contentType?: string; signal?: AbortSignal; timeoutMs?: number },
): Promise<Response> {
  const token = await signAgentRequest(identity.privateKey, {
    hostId: identity.hostId,
    method: init.method,
    path: new URL(url).pathname,
    bodySha256: init.body ? (init.bodySha256 ?? sha256Hex(init.body)) : EMPTY_SHA256,
  });
  const timeout = AbortSignal.timeout(init.timeoutMs ?? 120_000);
  const signal = init.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
  const headers = { authorization: `Bearer ${token}`, ...(init.contentType ? { "content-type": init.contentType } : {}) };
  if (init.body) return requestWithBody(url, init.method, headers, init.body, signal);
  return fetch(url, { method: init.method, headers, signal });
}

/**
 * A request whose body is a Buffer, through node:http(s), which writes it as it is: fetch (undici)
 * copies it twice, which cost an upload a fifth of its CPU and two parts' worth of memory.
 */
function requestWithBody(url: string, method: string, headers: Record<string, string>, body: Buffer, signal: AbortSignal): Promise<Response> {
  return new Promise((resolve, reject) => {
    const send = url.startsWith("https:") ? httpsRequest : httpRequest;
    const request = send(url, { method, headers: { ...headers, "content-length": String(body.length) }, signal }, (response: IncomingMessage) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("error", reject);
      response.on("end", () => resolve(new Response(chunks.length ? Buffer.concat(chunks) : null, { status: response.statusCode ?? 502 })));
    });
    request.on("error", reject);
    request.end(body);
  });
}

async function expectOk(response: Response, what: string): Promise<void> {
  if (response.ok) return;
  const text = (await response.text().catch(() => "")).slice(0, 500);
  throw new TransferError(`${what} answered ${response.status}: ${text}`, response.status >= 500 || response.status === 429);
}

export interface UploadOptions {
  identity: AgentIdentity;
  /** <origin>/api/agent/backups/<backupId> */
  uploadBase: string;
  partSize: number;
  signal: AbortSignal;
  /** Attempts per part (and for completing), with exponential backoff from `retryBaseMs`. */
  attempts?: number;
  retryBaseMs?: number;
  onProgress?: (uploadedBytes: number) => void;
}

export interface UploadResult {
  size: number;
  sha256: string;
  parts: BackupPartReceipt[];
}

async function withRetries<T>(what: string, options: UploadOptions, fn: () => Promise<T>): Promise<T> {
  const attempts = options.attempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      options.signal.throwIfAborted();
      const retriable = !(error instanceof TransferError) || error.retriable;
      if (!retriable || attempt >= attempts) throw new Error(`${what} failed after ${attempt} attempt${attempt === 1 ? "" : "s"}: ${(error as Error).message}`);
      await delay((options.retryBaseMs ?? 1_000) * 2 ** (attempt - 1), options.signal);
    }
  }
}

/**
 * Fixed-size parts of a stream (the last shorter), filled into two buffers in turn: a part's
 * buffer is filled again two parts later, when the caller is done with it (one part in flight).
 * Fresh buffers cost a page fault per 4 KiB and leave 8 MiB of garbage per part.
 */
async function* partsOf(source: AsyncIterable<Buffer>, partSize: number): AsyncGenerator<Buffer> {
  const buffers = [Buffer.allocUnsafe(partSize), Buffer.allocUnsafe(partSize)];
  let part = buffers[0]!;
  let filled = 0;
  let count = 0;
  for await (const chunk of source) {
    let offset = 0;
    while (offset < chunk.length) {
      const n = Math.min(partSize - filled, chunk.length - offset);
      chunk.copy(part, filled, offset, offset + n);
      filled += n;
      offset += n;
      if (filled === partSize) {
        yield part;
        part = buffers[++count % 2]!;
        filled = 0;
      }
    }
  }
  if (filled > 0) yield part.subarray(0, filled);
}

/**
 * Uploads `ciphertext` in parts and completes the upload. On any failure the
 * upload is aborted (its parts discarded by the Worker) before the error is
 * rethrown: nothing half-written is ever marked successful.
 */
export async function uploadBackup(ciphertext: Readable, options: UploadOptions): Promise<UploadResult> {
  const whole = createHash("sha256");
  const parts: BackupPartReceipt[] = [];
  let size = 0;
  let uploading: Promise<void> = Promise.resolve();
  const putPart = async (partNumber: number, body: Buffer) => {
    const sha256 = sha256Hex(body);
    const receipt = await withRetries(`part ${partNumber}`, options, async () => {
      const response = await signedFetch(options.identity, `${options.uploadBase}/parts/${partNumber}`, {
        method: "PUT",
        body,
        bodySha256: sha256,
        contentType: "application/octet-stream",
        signal: options.signal,
      });
      await expectOk(response, `PUT part ${partNumber}`);
      return backupPartReceipt.parse(await response.json());
    });
    if (receipt.size !== body.length || receipt.sha256 !== sha256) {
      throw new Error(`the Worker stored part ${partNumber} as ${receipt.size} bytes ${receipt.sha256}, not ${body.length} bytes ${sha256}`);
    }
    parts[partNumber - 1] = receipt;
    options.onProgress?.(parts.reduce((total, p) => total + p.size, 0));
  };
  try {
    let partNumber = 0;
    for await (const part of partsOf(ciphertext, options.partSize)) {
      options.signal.throwIfAborted();
      whole.update(part);
      size += part.length;
      partNumber += 1;
      // One part in flight while the next one fills; a failure surfaces at the next hand-over.
      await uploading;
      const number = partNumber;
      uploading = putPart(number, part);
      uploading.catch(() => undefined);
    }
    await uploading;
    if (parts.length === 0) throw new Error("the backup stream was empty");
    const request: BackupCompleteRequest = { parts, size, sha256: whole.digest("hex") };
    await withRetries("completing the upload", options, async () => {
      const body = Buffer.from(JSON.stringify(request));
      const response = await signedFetch(options.identity, `${options.uploadBase}/complete`, {
        method: "POST",
        body,
        contentType: "application/json",
        signal: options.signal,
      });
      await expectOk(response, "POST complete");
    });
    return request;
  } catch (error) {
    ciphertext.destroy();
    await abortUpload(options, (error as Error).message);
    throw error;
  }
}

/** Best effort: the Worker also aborts uploads whose job failed or expired. */
async function abortUpload(options: UploadOptions, reason: string): Promise<void> {
  try {
    const body = Buffer.from(JSON.stringify({ reason: reason.slice(0, 1000) || "failed" }));
    await signedFetch(options.identity, `${options.uploadBase}/abort`, { method: "POST", body, contentType: "application/json", timeoutMs: 30_000 });
  } catch {
    // the control plane cleans up after the failed job
  }
}

/** The ciphertext of a backup, streamed from the Worker (allowed only while a restore job of this host needs it). */
export async function downloadBackup(identity: AgentIdentity, url: string, signal: AbortSignal): Promise<Readable> {
  const response = await signedFetch(identity, url, { method: "GET", signal, timeoutMs: 6 * 60 * 60_000 });
  await expectOk(response, "GET backup");
  if (!response.body) throw new Error("the backup download has no body");
  return Readable.fromWeb(response.body as import("node:stream/web").ReadableStream<Uint8Array>);
}
