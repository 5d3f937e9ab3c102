// The emulator's HTTP server: routes /v1 (the API), /_emulator (test control)
// and the hosted pages, keeps everything in memory, logs one line per request.
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { PLANS } from "../../worker/billing/plans.ts";
import { handleApi } from "./api.ts";
import { handleControl } from "./control.ts";
import type { Env } from "./env.ts";
import { handleHosted } from "./hosted.ts";
import { json, type Incoming, type Outgoing } from "./http.ts";
import { Store } from "./store.ts";
import { Deliveries } from "./webhooks.ts";

export interface StripeEmulatorOptions {
  /** 0 (the default) picks a free port. */
  port?: number;
  host?: string;
  /** Where to POST events; without it they are held for GET /_emulator/deliveries. */
  webhookUrl?: string;
  webhookSecret: string;
  /** The base URL browsers use to reach the emulator, if not http://host:port. */
  publicUrl?: string;
  /** One line per request and per delivery attempt; never request bodies. */
  log?: (line: string) => void;
}

export interface StripeEmulator {
  url: string;
  port: number;
  /** Resolves once every pending webhook delivery has been attempted to completion. */
  flushDeliveries(): Promise<void>;
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 1024 * 1024;

export class BodyTooLarge extends Error {}

export async function readBody(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new BodyTooLarge();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

async function route(incoming: Incoming, env: Env): Promise<Outgoing> {
  if (incoming.path.startsWith("/v1/")) return handleApi(incoming, env);
  if (incoming.path.startsWith("/_emulator/")) return handleControl(incoming, env);
  return handleHosted(incoming, env);
}

function urlHost(host: string): string {
  if (host === "0.0.0.0" || host === "::" || host === "") return "127.0.0.1";
  return host.includes(":") ? `[${host}]` : host;
}

/** Starts `server` listening; its port (the one picked, for 0) and the URL it is reached at. */
export async function listen(server: Server, port: number, host: string): Promise<{ port: number; url: string }> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  return { port: bound, url: `http://${urlHost(host)}:${bound}` };
}

export async function startStripeEmulator(options: StripeEmulatorOptions): Promise<StripeEmulator> {
  if (!options.webhookSecret) throw new Error("startStripeEmulator: webhookSecret is required");
  const log = options.log ?? (() => {});
  const host = options.host ?? "127.0.0.1";
  const deliveries = new Deliveries({ webhookUrl: options.webhookUrl, secret: options.webhookSecret, log });
  const env: Env = { store: new Store(PLANS), deliveries, publicUrl: "" };

  const server = createServer((request, response) => {
    const started = performance.now();
    const url = new URL(request.url ?? "/", "http://emulator.invalid");
    const method = request.method ?? "GET";
    void (async () => {
      let outgoing: Outgoing;
      try {
        const body = await readBody(request);
        outgoing = await route({ method, path: url.pathname, query: url.search.slice(1), headers: request.headers, body }, env);
      } catch (error) {
        outgoing =
          error instanceof BodyTooLarge
            ? json(413, { error: { type: "invalid_request_error", message: "Request body too large." } })
            : json(500, { error: { type: "api_error", message: "The emulator failed; see its log." } });
        if (!(error instanceof BodyTooLarge)) log(`error handling ${method} ${url.pathname}: ${error instanceof Error ? error.stack : String(error)}`);
      }
      const body = typeof outgoing.body === "string" ? Buffer.from(outgoing.body, "utf8") : outgoing.body;
      response.writeHead(outgoing.status, { ...outgoing.headers, "Content-Length": String(body.byteLength) });
      response.end(body);
      // The path only: query strings and bodies may carry personal data (never logged).
      log(`${method} ${url.pathname} ${outgoing.status} ${Math.round(performance.now() - started)}ms`);
    })();
  });

  const { port, url } = await listen(server, options.port ?? 0, host);
  env.publicUrl = (options.publicUrl ?? url).replace(/\/+$/, "");

  return {
    url,
    port,
    flushDeliveries: () => deliveries.flush(),
    close: () =>
      new Promise<void>((resolve, reject) => {
        deliveries.close();
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}
