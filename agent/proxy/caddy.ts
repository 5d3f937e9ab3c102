// The host's HTTPS front: Caddy, driven only through its admin API. Each homeserver
// gets one route (@id "berth-<serverName>", see caddy-config.ts) that Caddy serves with
// a certificate it obtains itself (ACME in production, its internal CA in development).
//
// The agent keeps its own record of the routes (<stateDir>/proxy-routes.json, the desired
// state) and writes it before touching Caddy, so ensureBaseConfig() can put everything
// back after Caddy restarted with an empty or foreign config. Operations are serialised.
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { checkServerIdentity, connect, type PeerCertificate } from "node:tls";
import type { CertificateReport } from "../../protocol/messages.ts";
import { writeFileAtomic } from "../atomic-file.ts";
import { createLogger, errorMessage, type Logger } from "../log.ts";
import { CaddyAdmin, CaddyAdminError } from "./caddy-admin.ts";
import {
  FALLBACK_ROUTE_ID,
  SERVER_ID,
  assertServerName,
  assertUpstream,
  buildConfig,
  buildRoute,
  deepEqual,
  parseProxyConfig,
  ProxyConfigError,
  routeId,
  sameConfig,
  type ProxyConfig,
  type ProxyConfigInput,
  type RouteRecord,
  type RouteTable,
  type Upstream,
} from "./caddy-config.ts";
import type { HomeserverProxy } from "../homeserver/proxy.ts";

export { CaddyAdmin, CaddyAdminError } from "./caddy-admin.ts";
export { parseProxyConfig, proxyConfigSchema, ProxyConfigError, type ProxyConfig, type ProxyConfigInput } from "./caddy-config.ts";
export type { HomeserverProxy } from "../homeserver/proxy.ts";

export const ROUTES_FILE = "proxy-routes.json";
const DAY_MS = 24 * 60 * 60 * 1000;

export interface CaddyProxyOptions {
  config: ProxyConfigInput;
  /** The agent's state directory; the route record lives in <stateDir>/proxy-routes.json. */
  stateDir: string;
  log?: Logger;
}

/** One name's TLS check: the report, or why there is none. */
export interface CertificateCheck {
  serverName: string;
  report?: CertificateReport;
  /** The chain verified (against the internal root with tls "internal") and the name matches. */
  trusted: boolean;
  error?: string;
}

interface RouteFile {
  version: 1;
  routes: RouteTable;
}

export class CaddyProxy implements HomeserverProxy {
  readonly config: ProxyConfig;
  readonly admin: CaddyAdmin;
  readonly routesFile: string;
  readonly #log: Logger;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: CaddyProxyOptions) {
    this.config = parseProxyConfig(options.config);
    this.admin = new CaddyAdmin({ address: this.config.adminAddress });
    this.routesFile = join(options.stateDir, ROUTES_FILE);
    this.#log = (options.log ?? createLogger({ level: "warn" })).child({ component: "proxy" });
    this.#readRecord(); // fail at start on a corrupt record, not at the first job
  }

  // ---------- HomeserverProxy ----------

  async route(serverName: string, upstream: Upstream, limits?: { maxBodyBytes: number }): Promise<void> {
    assertServerName(serverName);
    assertUpstream(upstream);
    if (limits && (!Number.isInteger(limits.maxBodyBytes) || limits.maxBodyBytes < 1024)) {
      throw new ProxyConfigError(`not a valid body limit: ${limits.maxBodyBytes}`);
    }
    const record = { upstream: { host: upstream.host, port: upstream.port }, suspended: false };
    return this.#serial(() => this.#apply(serverName, limits ? { ...record, maxBodyBytes: limits.maxBodyBytes } : record));
  }

  async suspend(serverName: string): Promise<void> {
    assertServerName(serverName);
    return this.#serial(() => {
      const previous = this.#readRecord()[serverName];
      return this.#apply(serverName, {
        ...(previous?.upstream ? { upstream: previous.upstream } : {}),
        suspended: true,
        ...(previous?.maxBodyBytes ? { maxBodyBytes: previous.maxBodyBytes } : {}),
      });
    });
  }

  async remove(serverName: string): Promise<void> {
    assertServerName(serverName);
    return this.#serial(async () => {
      const routes = this.#readRecord();
      if (routes[serverName]) {
        delete routes[serverName];
        this.#writeRecord(routes);
      }
      try {
        await this.admin.request("DELETE", `/id/${routeId(serverName)}`);
        this.#log.info("route removed", { serverName });
      } catch (error) {
        if (error instanceof CaddyAdminError && error.status === 404) return; // already gone
        throw error;
      }
    });
  }

  // ---------- bootstrap ----------

  /**
   * Makes Caddy's running config exactly the base config plus every recorded route
   * (one POST /load when anything differs, nothing otherwise). Call at agent start and
   * from time to time (keepConfigured) to repair a restarted Caddy.
   */
  ensureBaseConfig(): Promise<{ changed: boolean }> {
    return this.#serial(() => this.#ensureAll());
  }

  /** Runs ensureBaseConfig every intervalMs (errors are logged); returns a stop function. */
  keepConfigured(intervalMs = 60_000): () => void {
    const timer = setInterval(() => {
      this.ensureBaseConfig().then(
        ({ changed }) => {
          if (changed) this.#log.warn("Caddy's config had drifted (restarted?): re-applied the recorded routes");
        },
        (error: unknown) => this.#log.error("cannot ensure Caddy's config", { error: errorMessage(error) }),
      );
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** The routes the agent has recorded (serverName → upstream, suspended). */
  recordedRoutes(): RouteTable {
    return this.#readRecord();
  }

  // ---------- certificates ----------

  /** PEM of the internal CA's root (tls "internal"), from GET /pki/ca/local. */
  async internalRootCertificate(): Promise<string> {
    const ca = (await this.admin.get("/pki/ca/local")) as { root_certificate?: unknown } | undefined;
    if (typeof ca?.root_certificate !== "string") throw new Error("Caddy's /pki/ca/local answered without a root_certificate");
    return ca.root_certificate;
  }

  /** The roots the certificates Caddy serves should chain to: its internal CA's, or (ACME) the public roots, undefined. */
  async servedCertificateRoots(): Promise<string | undefined> {
    return this.config.tls === "internal" ? this.internalRootCertificate() : undefined;
  }

  /** The internal root's file in Caddy's storage, when storageDir is configured. */
  internalRootPath(): string | undefined {
    return this.config.storageDir ? join(this.config.storageDir, "pki", "authorities", "local", "root.crt") : undefined;
  }

  /**
   * The certificate Caddy serves for each recorded name (TLS handshake with SNI on the
   * HTTPS port). Names without a certificate yet (ACME pending) are left out; see
   * checkCertificates() for the reasons. A certificate that does not verify is still
   * reported, with "(untrusted: <reason>)" after its issuer.
   */
  async certificates(): Promise<CertificateReport[]> {
    const checks = await this.checkCertificates();
    return checks.flatMap((c) => (c.report ? [c.report] : []));
  }

  async checkCertificates(): Promise<CertificateCheck[]> {
    const names = Object.keys(this.#readRecord()).sort();
    if (names.length === 0) return [];
    const ca = this.config.tls === "internal" ? await this.internalRootCertificate() : undefined;
    const checks: CertificateCheck[] = [];
    for (const name of names) {
      const check = await this.#checkCertificate(name, ca);
      if (check.error) this.#log.warn("TLS certificate check failed", { serverName: name, error: check.error });
      checks.push(check);
    }
    return checks;
  }

  #checkCertificate(serverName: string, ca: string | undefined): Promise<CertificateCheck> {
    return new Promise((resolve) => {
      const socket = connect({
        host: this.config.connectHost,
        port: this.config.httpsPort,
        servername: serverName,
        ...(ca ? { ca } : {}),
        rejectUnauthorized: false, // judged below, so an expired or wrong certificate is still reported
        ALPNProtocols: ["http/1.1"],
        timeout: 10_000,
      });
      const finish = (check: CertificateCheck) => {
        socket.destroy();
        resolve(check);
      };
      socket.on("timeout", () => finish({ serverName, trusted: false, error: "TLS handshake timed out" }));
      socket.on("error", (error) => finish({ serverName, trusted: false, error: `TLS handshake failed: ${error.message}` }));
      socket.on("secureConnect", () => {
        const cert = socket.getPeerCertificate();
        if (!cert?.valid_to) {
          finish({ serverName, trusted: false, error: "no certificate presented" });
          return;
        }
        const notAfter = Date.parse(cert.valid_to);
        const notBefore = Date.parse(cert.valid_from);
        const identityError = checkServerIdentity(serverName, cert);
        const problem = socket.authorizationError
          ? String((socket.authorizationError as Error & { code?: string }).code ?? socket.authorizationError)
          : identityError
            ? `name mismatch: ${identityError.message}`
            : undefined;
        const issuer = describeIssuer(cert) + (problem ? ` (untrusted: ${problem})` : "");
        finish({
          serverName,
          trusted: !problem,
          report: { serverName, notBefore, notAfter, issuer: issuer.slice(0, 500) },
          ...(problem ? { error: problem } : {}),
        });
      });
    });
  }

  // ---------- internals ----------

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #apply(serverName: string, record: RouteRecord): Promise<void> {
    const routes = this.#readRecord();
    if (!deepEqual(routes[serverName], record)) {
      routes[serverName] = record;
      this.#writeRecord(routes);
    }
    const desired = buildRoute(serverName, record, this.config);
    const id = routeId(serverName);
    const current = await this.admin.find(`/id/${id}`);
    if (deepEqual(current, desired)) return;
    if (current !== undefined) {
      await this.admin.request("PATCH", `/id/${id}`, desired);
    } else if ((await this.admin.find(`/id/${FALLBACK_ROUTE_ID}`)) === undefined) {
      // No base config (Caddy restarted empty, or never bootstrapped). Do not PUT into
      // the missing path: Caddy 2.6 creates the missing parents as objects and fails.
      this.#log.warn("Caddy has no berth server: loading the base config with all recorded routes", { serverName });
      await this.#ensureAll();
      return;
    } else {
      // Insert at the front: host routes exclude each other, the catch-all stays last.
      await this.admin.request("PUT", `/config/apps/http/servers/${SERVER_ID}/routes/0`, desired);
    }
    this.#log.info(record.suspended ? "route suspended" : "route applied", { serverName, routeId: id });
  }

  async #ensureAll(): Promise<{ changed: boolean }> {
    const desired = buildConfig(this.config, this.#readRecord());
    const current = await this.admin.get("/config/");
    if (sameConfig(current, desired)) return { changed: false };
    await this.admin.request("POST", "/load", desired);
    this.#log.info("loaded the Caddy config", { routes: Object.keys(this.#readRecord()).length, tls: this.config.tls });
    return { changed: true };
  }

  #readRecord(): RouteTable {
    let text: string;
    try {
      text = readFileSync(this.routesFile, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
      throw error;
    }
    const parsed = JSON.parse(text) as Partial<RouteFile>;
    if (parsed.version !== 1 || typeof parsed.routes !== "object" || parsed.routes === null) {
      throw new Error(`${this.routesFile} is not a route record (version 1)`);
    }
    return parsed.routes;
  }

  #writeRecord(routes: RouteTable): void {
    const file: RouteFile = { version: 1, routes };
    mkdirSync(dirname(this.routesFile), { recursive: true, mode: 0o700 });
    writeFileAtomic(this.routesFile, `${JSON.stringify(file, null, 2)}\n`, 0o600);
  }
}

function describeIssuer(cert: PeerCertificate): string {
  const issuer = cert.issuer as unknown as Record<string, string | string[] | undefined> | undefined;
  const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
  const cn = first(issuer?.CN);
  const org = first(issuer?.O);
  if (cn && org && !cn.includes(org)) return `${cn} (${org})`;
  return cn ?? org ?? "unknown issuer";
}

/** The reports whose certificate expires within `days` (or has expired). */
export function expiringSoon(reports: CertificateReport[], days = 14, now = Date.now()): CertificateReport[] {
  return reports.filter((r) => r.notAfter - now < days * DAY_MS);
}
