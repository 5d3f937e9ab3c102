// The Worker's agent backup endpoints as the agent sees them (PUT parts,
// complete, abort, GET object), in this process: it checks every request's
// signature against the test host's key like the Worker does, keeps parts in
// memory, and can be told to fail. The Worker's own side is tested in workerd
// (test/worker/backups/) and with the real agent end to end (test/e2e/).
import { createHash, createPublicKey, verify, type KeyObject } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { AGENT_REQUEST_HEADERS, agentRequestSigningInput } from "../../../protocol/messages.ts";

export interface StoredBackup {
  parts: Map<number, Buffer>;
  completed?: { size: number; sha256: string; parts: Array<{ partNumber: number; size: number; sha256: string }> };
  aborted?: string;
}

export class BackupTarget {
  readonly backups = new Map<string, StoredBackup>();
  readonly requests: string[] = [];
  /** Answers the next matching requests with this status instead (consumed one by one). */
  readonly failures: Array<{ match: RegExp; status: number }> = [];
  private server: Server | undefined;
  private base = "";

  constructor(
    private readonly hostId: string,
    privateKey: KeyObject,
    private readonly publicKey = createPublicKey(privateKey),
  ) {}

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      void this.handle(req).then(
        ({ status, body }) => {
          res.writeHead(status, { "content-type": Buffer.isBuffer(body) ? "application/octet-stream" : "application/json" });
          res.end(Buffer.isBuffer(body) ? body : JSON.stringify(body));
        },
        (error: Error) => {
          res.writeHead(500, { "content-type": "application/json" });
          res.end(JSON.stringify({ error: { code: "internal", message: error.message } }));
        },
      );
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  uploadBase(backupId: string): string {
    return `${this.base}/api/agent/backups/${backupId}`;
  }

  objectUrl(backupId: string): string {
    return `${this.uploadBase(backupId)}/object`;
  }

  /** The completed upload's bytes, as a restore downloads them. */
  object(backupId: string): Buffer {
    const stored = this.backups.get(backupId);
    if (!stored?.completed) throw new Error(`backup ${backupId} was not completed`);
    return Buffer.concat(stored.completed.parts.map((part) => stored.parts.get(part.partNumber)!));
  }

  /** Stores `bytes` as a completed upload (copies, corrupted or truncated ones). */
  replaceObject(backupId: string, bytes: Buffer): void {
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    this.backups.set(backupId, {
      parts: new Map([[1, bytes]]),
      completed: { size: bytes.length, sha256, parts: [{ partNumber: 1, size: bytes.length, sha256 }] },
    });
  }

  private async handle(req: IncomingMessage): Promise<{ status: number; body: unknown }> {
    const body = Buffer.concat(await req.toArray());
    const { pathname } = new URL(req.url!, this.base);
    this.requests.push(`${req.method} ${pathname}`);
    const failure = this.failures.findIndex((f) => f.match.test(`${req.method} ${pathname}`));
    if (failure >= 0) {
      const { status } = this.failures.splice(failure, 1)[0]!;
      return { status, body: { error: { code: "injected", message: `injected ${status}` } } };
    }
    const header = (name: string) => String(req.headers[name] ?? "");
    const sha256 = createHash("sha256").update(body).digest("hex");
    const input = agentRequestSigningInput(req.method!, pathname, header(AGENT_REQUEST_HEADERS.timestamp), header(AGENT_REQUEST_HEADERS.contentSha256));
    const signed = verify(null, Buffer.from(input, "utf8"), this.publicKey, Buffer.from(header(AGENT_REQUEST_HEADERS.signature), "base64url"));
    if (header(AGENT_REQUEST_HEADERS.host) !== this.hostId || header(AGENT_REQUEST_HEADERS.contentSha256) !== sha256 || !signed) {
      return { status: 401, body: { error: { code: "unauthorized", message: "bad signature" } } };
    }
    const match = /^\/api\/agent\/backups\/([^/]+)\/(parts\/(\d+)|complete|abort|object)$/.exec(pathname);
    if (!match) return { status: 404, body: { error: { code: "not_found", message: pathname } } };
    const backupId = match[1]!;
    const stored: StoredBackup = this.backups.get(backupId) ?? { parts: new Map() };
    this.backups.set(backupId, stored);
    if (req.method === "PUT" && match[3]) {
      stored.parts.set(Number(match[3]), body);
      return { status: 200, body: { partNumber: Number(match[3]), size: body.length, sha256 } };
    }
    if (req.method === "POST" && match[2] === "complete") {
      stored.completed = JSON.parse(body.toString("utf8"));
      return { status: 200, body: { ok: true } };
    }
    if (req.method === "POST" && match[2] === "abort") {
      stored.aborted = JSON.parse(body.toString("utf8")).reason;
      stored.parts.clear();
      return { status: 200, body: { ok: true } };
    }
    if (req.method === "GET" && match[2] === "object") return { status: 200, body: this.object(backupId) };
    return { status: 405, body: { error: { code: "method_not_allowed", message: String(req.method) } } };
  }
}
