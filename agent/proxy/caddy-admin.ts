// A small client for Caddy's admin API (JSON over HTTP on a loopback port or a unix
// socket). Errors carry Caddy's own message ({"error": "..."}).
import { request } from "node:http";
import { isLoopbackAdminAddress } from "./caddy-config.ts";

export class CaddyAdminError extends Error {
  override name = "CaddyAdminError";
  /** The HTTP status, or undefined when Caddy could not be reached. */
  readonly status: number | undefined;
  /** Caddy's message (its {"error"} field), or the connection error. */
  readonly caddyMessage: string;
  constructor(method: string, path: string, status: number | undefined, caddyMessage: string, address: string) {
    super(
      status === undefined
        ? `cannot reach the Caddy admin API at ${address} (${method} ${path}): ${caddyMessage}`
        : `Caddy admin API ${method} ${path} → ${status}: ${caddyMessage}`,
    );
    this.status = status;
    this.caddyMessage = caddyMessage;
  }
}

export interface CaddyAdminOptions {
  /** "127.0.0.1:2019", "[::1]:2019", "localhost:2019" or "unix//path/to/admin.sock". */
  address: string;
  timeoutMs?: number;
}

export class CaddyAdmin {
  readonly address: string;
  readonly #timeoutMs: number;
  readonly #target: { socketPath: string } | { host: string; port: number };

  constructor(options: CaddyAdminOptions) {
    if (!isLoopbackAdminAddress(options.address)) {
      throw new Error(`refusing a Caddy admin endpoint that is not on loopback: ${options.address}`);
    }
    this.address = options.address;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    if (options.address.startsWith("unix/")) {
      this.#target = { socketPath: options.address.replace(/^unix\/\/?/, "/") };
    } else {
      const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(options.address)!;
      this.#target = { host: match[1] ?? match[2]!, port: Number(match[3]) };
    }
  }

  get(path: string): Promise<unknown> {
    return this.request("GET", path);
  }

  /** GET that answers undefined for Caddy's 404 ("unknown object ID", no such path). */
  async find(path: string): Promise<unknown> {
    try {
      return await this.request("GET", path);
    } catch (error) {
      if (error instanceof CaddyAdminError && (error.status === 404 || isMissingPath(error))) return undefined;
      throw error;
    }
  }

  async request(method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE", path: string, body?: unknown): Promise<unknown> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string | number> = {};
    if (payload) {
      headers["Content-Type"] = "application/json";
      headers["Content-Length"] = payload.length;
    }
    // Caddy 2.6 checks the Host header against the endpoint: for a unix socket it must be
    // empty (Node would send "localhost"), for TCP it is the address itself.
    if ("socketPath" in this.#target) headers.Host = "";
    return new Promise((resolve, reject) => {
      const req = request(
        { ...this.#target, method, path, headers, setHost: !("socketPath" in this.#target), timeout: this.#timeoutMs, agent: false },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("error", reject);
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            const status = res.statusCode ?? 0;
            let parsed: unknown;
            try {
              parsed = text.trim() === "" ? undefined : JSON.parse(text);
            } catch {
              parsed = undefined;
            }
            if (status >= 200 && status < 300) {
              resolve(parsed);
              return;
            }
            const message =
              parsed && typeof parsed === "object" && typeof (parsed as { error?: unknown }).error === "string"
                ? (parsed as { error: string }).error
                : text.trim() || res.statusMessage || "no message";
            reject(new CaddyAdminError(method, path, status, message, this.address));
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`no answer within ${this.#timeoutMs} ms`)));
      req.on("error", (error: NodeJS.ErrnoException) => {
        reject(new CaddyAdminError(method, path, undefined, error.code ? `${error.code}: ${error.message}` : error.message, this.address));
      });
      req.end(payload);
    });
  }
}

/**
 * Caddy answers a path through config that does not exist with 400 and messages like
 * "invalid traversal path at: config/apps" or "... key not found" (2.6).
 */
export function isMissingPath(error: CaddyAdminError): boolean {
  return (
    error.status !== undefined &&
    error.status >= 400 &&
    error.status < 500 &&
    /unknown object ID|invalid traversal path|not found|does not exist|no such|invalid index/i.test(error.caddyMessage)
  );
}
