// A real Caddy for the proxy tests: started on ports from test/ports.ts with its own storage,
// config and data directories in a temp dir, stopped (by its pid) and deleted after.
//
// The tests expect `caddy` on PATH: Debian bookworm's package (2.6.2), `apt-get install -y
// caddy` — .ci/run installs it. The package's postinst may try to start a systemd service;
// these tests never use it.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { request as httpsRequest } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PeerCertificate, TLSSocket } from "node:tls";
import { CaddyAdmin } from "../../../agent/proxy/caddy-admin.ts";
import type { ProxyConfigInput } from "../../../agent/proxy/caddy-config.ts";
import { reservePort } from "../../ports.ts";

export function requireCaddy(): string {
  const probe = spawnSync("caddy", ["version"], { encoding: "utf8" });
  if (probe.error || probe.status !== 0) {
    throw new Error(
      "the proxy tests need Caddy on PATH (Debian: `apt-get install -y caddy`, 2.6.2 on bookworm; .ci/run installs it): " +
        (probe.error?.message ?? probe.stderr),
    );
  }
  return probe.stdout.trim();
}

export function makeTempDir(prefix: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A program the tests started, its output in `<dir>/<label>.log`. */
export interface LoggedProcess {
  child: ChildProcess;
  logFile: string;
  logs(): string;
  /** SIGTERM, then SIGKILL after 5 s; resolves once it has exited. */
  stop(): Promise<void>;
}

export interface CaddyProcess extends LoggedProcess {
  admin: CaddyAdmin;
}

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) if (child.pid && child.exitCode === null) child.kill("SIGKILL");
});

/** Starts `command` with only `env` (plus PATH) as its environment, stdout and stderr to its log file; killed when the test process exits. */
export function spawnLogged(dir: string, label: string, command: string, args: string[], env: Record<string, string> = {}): LoggedProcess {
  const logFile = join(dir, `${label}.log`);
  const fd = openSync(logFile, "a");
  const child = spawn(command, args, { stdio: ["ignore", fd, fd], env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env } });
  closeSync(fd);
  running.add(child);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("exit", () => running.delete(child));
  return {
    child,
    logFile,
    logs: () => readFileSync(logFile, "utf8"),
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Starts `caddy run` whose only config is the admin endpoint (as a freshly installed,
 * empty Caddy would be); the proxy under test loads everything else through the API.
 * HOME and the XDG dirs point into `dir`, so autosave.json and any default storage
 * stay there too.
 */
export async function startCaddy(dir: string, adminAddress: string, label = "caddy"): Promise<CaddyProcess> {
  mkdirSync(join(dir, "home"), { recursive: true });
  const bootFile = join(dir, "boot.json");
  writeFileSync(bootFile, JSON.stringify({ admin: { listen: adminAddress } }));
  const caddy = spawnLogged(dir, label, "caddy", ["run", "--config", bootFile], {
    HOME: join(dir, "home"),
    XDG_DATA_HOME: join(dir, "home", "data"),
    XDG_CONFIG_HOME: join(dir, "home", "config"),
  });
  const { child, logs } = caddy;
  const admin = new CaddyAdmin({ address: adminAddress, timeoutMs: 5_000 });

  const started = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`caddy exited with ${child.exitCode} at start:\n${logs()}`);
    try {
      await admin.get("/config/");
      break;
    } catch {
      if (Date.now() - started > 15_000) {
        child.kill("SIGKILL");
        throw new Error(`caddy's admin API at ${adminAddress} did not come up:\n${logs()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  return { ...caddy, admin };
}

/** A proxy config on Caddy's internal CA, listening on loopback ports of its own, its storage in `dir`. */
export async function internalCaProxyConfig(dir: string, adminAddress: string): Promise<ProxyConfigInput> {
  return {
    adminAddress,
    tls: "internal",
    httpsPort: await reservePort(),
    httpPort: await reservePort(),
    listenHost: "127.0.0.1",
    storageDir: join(dir, "storage"),
  };
}

/** A stand-in for Synapse: answers every request with what it saw. */
export interface Upstream {
  name: string;
  port: number;
  requests: Array<{ method: string; url: string; headers: IncomingMessage["headers"]; bodyBytes: number }>;
  close(): Promise<void>;
}

export async function startUpstream(name: string): Promise<Upstream> {
  const requests: Upstream["requests"] = [];
  const server: Server = createServer((req, res) => {
    let bodyBytes = 0;
    req.on("data", (chunk: Buffer) => (bodyBytes += chunk.length));
    req.on("end", () => {
      const seen = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, bodyBytes };
      requests.push(seen);
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ upstream: name, ...seen }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    name,
    port: (server.address() as AddressInfo).port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface HttpsResponse {
  status: number;
  headers: IncomingMessage["headers"];
  text: string;
  json: () => unknown;
  certificate: PeerCertificate;
}

export interface HttpsOptions {
  port: number;
  /** SNI and Host header. */
  serverName: string;
  /** PEM of the only CA to trust; undefined: Node's default store. */
  ca: string | undefined;
  method?: string;
  path?: string;
  host?: string;
  headers?: Record<string, string | number>;
  body?: Buffer | string;
  /** Send this Content-Length and no body; resolve on the response. */
  announceOnly?: number;
}

/** One HTTPS request to 127.0.0.1 with SNI `serverName`, trusting only `ca`. */
export function https(options: HttpsOptions): Promise<HttpsResponse> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: "127.0.0.1",
        port: options.port,
        servername: options.serverName,
        ...(options.ca === undefined ? {} : { ca: options.ca }),
        method: options.method ?? "GET",
        path: options.path ?? "/",
        headers: { Host: options.host ?? options.serverName, ...options.headers },
        agent: false,
        timeout: 20_000,
      },
      (res) => {
        const certificate = (res.socket as TLSSocket).getPeerCertificate();
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) as unknown, certificate });
          if (options.announceOnly !== undefined) req.destroy();
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error("HTTPS request timed out")));
    req.on("error", reject);
    if (options.announceOnly !== undefined) {
      req.setHeader("Content-Length", options.announceOnly);
      req.flushHeaders();
      return;
    }
    req.end(options.body);
  });
}

/**
 * Like https(), retrying while the TLS handshake fails: Caddy obtains a new name's
 * certificate in the background after a config change (milliseconds with its internal CA).
 */
export async function httpsWhenReady(options: HttpsOptions, timeoutMs = 15_000): Promise<HttpsResponse> {
  const started = Date.now();
  for (;;) {
    try {
      return await https(options);
    } catch (error) {
      if (Date.now() - started > timeoutMs) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
