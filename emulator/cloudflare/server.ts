// The Cloudflare DNS emulator's HTTP server: /client/v4 (the API, for the official SDK) and
// /_emulator (test control), state in memory, one log line per request (method, path, status:
// never the query, body or headers, where the token is).
import { createServer } from "node:http";
import { json, type Outgoing } from "../stripe/http.ts";
import { BodyTooLarge, listen, readBody } from "../stripe/server.ts";
import { API_PREFIX, handleApi } from "./api.ts";
import { handleControl } from "./control.ts";
import { Store } from "./store.ts";

export interface CloudflareEmulatorOptions {
  /** 0 (the default) picks a free port. */
  port?: number;
  host?: string;
  /** The only token the API accepts, scoped to the one zone. */
  apiToken: string;
  zoneId: string;
  /** The zone's name: records outside it are refused. */
  zoneName: string;
  log?: (line: string) => void;
}

export interface CloudflareEmulator {
  /** Its origin; the SDK's base URL is this plus /client/v4. */
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function startCloudflareEmulator(options: CloudflareEmulatorOptions): Promise<CloudflareEmulator> {
  if (!options.apiToken || !options.zoneId) throw new Error("startCloudflareEmulator: apiToken and zoneId are required");
  const log = options.log ?? (() => {});
  const host = options.host ?? "127.0.0.1";
  const store = new Store(options.zoneId, options.zoneName);
  const env = { store, apiToken: options.apiToken };

  const server = createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://emulator.invalid");
    const method = request.method ?? "GET";
    void (async () => {
      let outgoing: Outgoing | null;
      try {
        const incoming = { method, path: url.pathname, query: url.search.slice(1), headers: request.headers, body: await readBody(request) };
        outgoing = url.pathname.startsWith(`${API_PREFIX}/`) ? handleApi(incoming, env) : handleControl(incoming, store);
      } catch (error) {
        outgoing = json(error instanceof BodyTooLarge ? 413 : 500, {
          success: false,
          errors: [{ code: 10001, message: "The emulator failed; see its log." }],
          messages: [],
          result: null,
        });
        if (!(error instanceof BodyTooLarge)) log(`error handling ${method} ${url.pathname}: ${error instanceof Error ? error.stack : String(error)}`);
      }
      // An injected timeout: the request stays unanswered until the client gives up.
      if (outgoing === null) {
        log(`${method} ${url.pathname} held (timeout)`);
        return;
      }
      const body = typeof outgoing.body === "string" ? Buffer.from(outgoing.body, "utf8") : outgoing.body;
      // A connection per request: a kept-alive one the server closes while idle races the client's next request (ECONNRESET).
      response.writeHead(outgoing.status, { ...outgoing.headers, "Content-Length": String(body.byteLength), Connection: "close" });
      response.end(body);
      log(`${method} ${url.pathname} ${outgoing.status}`);
    })();
  });

  const { port, url } = await listen(server, options.port ?? 0, host);
  return {
    url,
    port,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}
