// The Worker's agent backup endpoints as the agent sees them (PUT parts,
// complete, abort, GET object), in this process: it checks every request's
// token against the test host's key with the Worker's own checks
// (verifyAgentRequest), refuses a token used twice and a body that is not the
// one signed, as the Worker does, keeps parts in
// memory, and can be told to fail. The Worker's own side is tested in workerd
// (test/worker/backups/) and with the real agent end to end (test/e2e/).
import { createHash, createPublicKey, type KeyObject } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { verifyAgentRequest, type AgentRequestClaims } from "../../../protocol/agent-requests.ts";

export interface StoredBackup {
  parts: Map<number, Buffer>;
  completed?: { size: number; sha256: string; parts: Array<{ partNumber: number; size: number; sha256: string }> };
  aborted?: string;
}

export class BackupTarget {
  readonly backups = new Map<string, StoredBackup>();
  readonly requests: string[] = [];
  /** The claims of every token admitted, in order. */
  readonly admitted: AgentRequestClaims[] = [];
  /** Requests refused as the Worker would refuse them: `<method> <path>: <why>`. */
  readonly refused: string[] = [];
  /** Answers the next matching requests with this status instead (consumed one by one). */
  readonly failures: Array<{ match: RegExp; status: number }> = [];
  private server: Server | undefined;
  private base = "";

  private readonly hostId: string;
  private readonly publicKey: string;

  // Plain fields, not parameter properties: bench/ loads this file with Node's type stripping.
  constructor(hostId: string, privateKey: KeyObject) {
    this.hostId = hostId;
    this.publicKey = createPublicKey(privateKey).export({ format: "jwk" }).x!;
  }

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
    const sha256 = createHash("sha256").update(body).digest("hex");
    const token = /^Bearer (.+)$/.exec(String(req.headers.authorization ?? ""))?.[1] ?? "";
    const verified = await verifyAgentRequest(token, { hostId: this.hostId, publicKey: this.publicKey }, { method: req.method!, path: pathname }, new Date());
    const problem =
      "problem" in verified
        ? verified.problem
        : this.admitted.some((claims) => claims.jti === verified.claims.jti)
          ? "replayed token"
          : verified.claims.body_sha256 !== sha256
            ? "body does not match its signed digest"
            : null;
    if (problem) {
      this.refused.push(`${req.method} ${pathname}: ${problem}`);
      return { status: 401, body: { error: { code: "unauthorized", message: problem } } };
    }
    if ("claims" in verified) this.admitted.push(verified.claims);
    // After the token is spent, as when the Worker fails a request it admitted: a retry needs a token of its own.
    const failure = this.failures.findIndex((f) => f.match.test(`${req.method} ${pathname}`));
    if (failure >= 0) {
      const { status } = this.failures.splice(failure, 1)[0]!;
      return { status, body: { error: { code: "injected", message: `injected ${status}` } } };
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
