// The Caddy JSON config the agent keeps loaded, built from the agent's own record of
// routes (pure functions; caddy.ts talks to the admin API). One HTTP server ("berth")
// with automatic HTTPS; per homeserver one route with @id "berth-<serverName>" that
// matches the host name and holds a subroute: the two Matrix well-knowns (answered by
// Caddy), then either the reverse proxy to Synapse or, when suspended, a static 503.
// A last catch-all route answers 404 for hosts Caddy has a certificate for but no route.
import { isIP } from "node:net";
import { z } from "zod";

export const SERVER_ID = "berth";
export const ROUTE_ID_PREFIX = "berth-";
export const FALLBACK_ROUTE_ID = "berth-fallback";
export const STAND_IN_ROUTE_ID_PREFIX = "stand-in-";
/** Synapse's max_upload_size as the homeserver config sets it (50M = 50 MiB). */
export const DEFAULT_MAX_BODY_BYTES = 50 * 1024 * 1024;

export type TlsMode = "acme" | "internal";

// ---------- options ----------

/** The TCP port of an admin address ("127.0.0.1:2019" → 2019); none for a unix socket. */
export function adminPortOf(address: string): number | undefined {
  const match = /:(\d{1,5})$/.exec(address);
  return match && !address.startsWith("unix/") ? Number(match[1]) : undefined;
}

/** host:port on 127.0.0.0/8, [::1] or localhost, or a unix socket (unix//path). */
export function isLoopbackAdminAddress(address: string): boolean {
  if (/^unix\/\/?\S+$/.test(address)) return true;
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address);
  if (!match) return false;
  const port = Number(match[3]);
  if (port < 1 || port > 65535) return false;
  const host = (match[1] ?? match[2] ?? "").toLowerCase();
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) return host === "::1" || host === "0:0:0:0:0:0:0:1";
  return false;
}

const port = z.number().int().min(1).max(65535);
/** Lower-case DNS labels ending in .test, the top-level domain reserved for testing (RFC 2606). */
const STAND_IN_DOMAIN = /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+test$/;

/** The proxy's settings (the `proxy` section of agent.json, when wired there). */
export const proxyConfigSchema = z
  .strictObject({
    /** Caddy's admin endpoint, loopback only: "127.0.0.1:2019" (Caddy's default) or "unix//run/caddy/admin.sock". */
    adminAddress: z
      .string()
      .default("127.0.0.1:2019")
      .refine(isLoopbackAdminAddress, "the Caddy admin endpoint must be on loopback (127.0.0.1, [::1], localhost) or a unix socket"),
    /** "acme": Let's Encrypt (ZeroSSL as fallback), Caddy's default issuers. "internal": Caddy's own CA (development, tests). */
    tls: z.enum(["acme", "internal"]).default("acme"),
    /** Contact address for the ACME account (required with tls "acme"). */
    acmeEmail: z.email().optional(),
    /** ACME directory URL instead of Let's Encrypt production, e.g. its staging directory (then no ZeroSSL fallback). */
    acmeCa: z.url({ protocol: /^https?$/ }).optional(),
    /** PEM file of the root(s) that acmeCa's HTTPS is verified against, for a private ACME CA; readable by Caddy. Default: the system's roots. */
    acmeCaRootsFile: z.string().min(1).startsWith("/").optional(),
    /** How often Caddy looks for certificates due for renewal (Caddy's default: 10 minutes). Only tests with short-lived certificates change it. */
    renewCheckIntervalSeconds: z.number().int().min(1).max(86_400).optional(),
    /** The port Caddy serves HTTPS on, and the port certificates() connects to. */
    httpsPort: port.default(443),
    /** Caddy's HTTP port: HTTP→HTTPS redirects and ACME HTTP-01 challenges. */
    httpPort: port.default(80),
    /** Interface address the HTTPS server binds; "" means all interfaces. */
    listenHost: z.string().max(253).default(""),
    /** The HTTPS port the world uses (what the well-knowns announce). Only tests change it. */
    publicHttpsPort: port.default(443),
    /** Request body limit in bytes of a route that names none (each homeserver's route names its max_upload_size). */
    maxBodyBytes: z.number().int().min(1024).default(DEFAULT_MAX_BODY_BYTES),
    /** Caddy's storage root (certificates, the internal CA). Default: Caddy's own (for the Debian package /var/lib/caddy/.local/share/caddy). */
    storageDir: z.string().min(1).startsWith("/").optional(),
    /** Where certificates() connects (with SNI per name). */
    connectHost: z.string().min(1).default("127.0.0.1"),
    /**
     * Development and tests only: customers' domains this proxy stands in for (`acme.test` →
     * a local HTTP server serving that domain's well-knowns), each with a certificate from the
     * internal CA. Their homeservers' delegation is then checked, discovered and federated
     * through on one machine (agent/proxy/README.md, "Stand-in domains").
     */
    standInDomains: z
      .record(z.string(), z.strictObject({ host: z.string().min(1), port }))
      .refine(
        (domains) => Object.keys(domains).every((domain) => STAND_IN_DOMAIN.test(domain)),
        "a stand-in domain is a name under .test (reserved for testing)",
      )
      .optional(),
  })
  .refine((c) => c.tls !== "acme" || c.acmeEmail !== undefined, {
    message: 'tls "acme" needs acmeEmail (the ACME account contact)',
    path: ["acmeEmail"],
  })
  .refine((c) => c.acmeCaRootsFile === undefined || (c.tls === "acme" && c.acmeCa !== undefined), {
    message: 'acmeCaRootsFile needs tls "acme" and the acmeCa it is the root of',
    path: ["acmeCaRootsFile"],
  })
  .refine((c) => c.httpPort !== c.httpsPort, { message: "httpPort and httpsPort must differ", path: ["httpPort"] })
  .refine((c) => c.standInDomains === undefined || c.tls === "internal", {
    message: 'standInDomains are for development: they need tls "internal"',
    path: ["standInDomains"],
  });

export type ProxyConfigInput = z.input<typeof proxyConfigSchema>;
export type ProxyConfig = z.output<typeof proxyConfigSchema>;

export class ProxyConfigError extends Error {
  override name = "ProxyConfigError";
}

export function parseProxyConfig(input: ProxyConfigInput): ProxyConfig {
  const parsed = proxyConfigSchema.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.length ? i.path.join(".") : "proxy"}: ${i.message}`).join("; ");
    throw new ProxyConfigError(`invalid proxy config: ${problems}`);
  }
  return parsed.data;
}

// ---------- names ----------

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** A homeserver's host name: lower-case DNS labels, at least two. */
export function assertServerName(serverName: string): void {
  const labels = serverName.split(".");
  if (serverName.length > 253 || labels.length < 2 || !labels.every((l) => LABEL.test(l))) {
    throw new ProxyConfigError(`not a valid homeserver host name: ${JSON.stringify(serverName)} (lower-case DNS labels, e.g. alice.example.org)`);
  }
}

export function routeId(serverName: string): string {
  return `${ROUTE_ID_PREFIX}${serverName}`;
}

export interface Upstream {
  host: string;
  port: number;
}

export function assertUpstream(upstream: Upstream): void {
  const okHost = isIP(upstream.host) !== 0 || /^[a-zA-Z0-9](?:[a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?$/.test(upstream.host);
  if (!okHost || !Number.isInteger(upstream.port) || upstream.port < 1 || upstream.port > 65535) {
    throw new ProxyConfigError(`not a valid upstream: ${JSON.stringify(upstream)}`);
  }
}

/** Caddy's dial address: IPv6 in brackets. */
export function dialAddress(upstream: Upstream): string {
  return isIP(upstream.host) === 6 ? `[${upstream.host}]:${upstream.port}` : `${upstream.host}:${upstream.port}`;
}

// ---------- the agent's record ----------

export interface RouteRecord {
  /** Absent when the name was suspended before the agent knew its upstream. */
  upstream?: Upstream;
  suspended: boolean;
  /** This homeserver's request body limit (its max_upload_size); absent: the proxy's maxBodyBytes. */
  maxBodyBytes?: number;
}

export type RouteTable = Record<string, RouteRecord>;

// ---------- routes ----------

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type CaddyRoute = { [key: string]: Json };

const JSON_HEADERS = { "Content-Type": ["application/json"], "Access-Control-Allow-Origin": ["*"] };

function jsonResponse(status: number, body: unknown, extraHeaders: Record<string, string[]> = {}): { [key: string]: Json } {
  return { handler: "static_response", status_code: status, headers: { ...JSON_HEADERS, ...extraHeaders }, body: JSON.stringify(body) };
}

export function wellKnownServer(serverName: string, publicPort: number): { "m.server": string } {
  return { "m.server": `${serverName}:${publicPort}` };
}

export function wellKnownClient(serverName: string, publicPort: number): { "m.homeserver": { base_url: string } } {
  return { "m.homeserver": { base_url: publicPort === 443 ? `https://${serverName}` : `https://${serverName}:${publicPort}` } };
}

export const SUSPENDED_BODY = { errcode: "M_UNAVAILABLE", error: "This homeserver is suspended" };

export function buildRoute(serverName: string, record: RouteRecord, config: Pick<ProxyConfig, "maxBodyBytes" | "publicHttpsPort">): CaddyRoute {
  const wellKnowns: Json[] = [
    {
      match: [{ path: ["/.well-known/matrix/server"] }],
      handle: [jsonResponse(200, wellKnownServer(serverName, config.publicHttpsPort))],
    },
    {
      match: [{ path: ["/.well-known/matrix/client"] }],
      handle: [jsonResponse(200, wellKnownClient(serverName, config.publicHttpsPort))],
    },
  ];
  const maxBodyBytes = record.maxBodyBytes ?? config.maxBodyBytes;
  const rest: Json[] =
    record.suspended || !record.upstream
      ? [{ handle: [jsonResponse(503, SUSPENDED_BODY)] }]
      : [
          // Caddy 2.6's request_body limit surfaces as 502 from reverse_proxy when the body
          // is announced with Content-Length; answer those up front with Synapse's 413.
          {
            match: [{ header_regexp: { "Content-Length": { pattern: greaterThanPattern(maxBodyBytes) } } }],
            handle: [jsonResponse(413, { errcode: "M_TOO_LARGE", error: `Request body is larger than ${maxBodyBytes} bytes` })],
          },
          {
            handle: [
              { handler: "request_body", max_size: maxBodyBytes },
              // X-Forwarded-For/-Proto/-Host are set by reverse_proxy (client values replaced).
              { handler: "reverse_proxy", upstreams: [{ dial: dialAddress(record.upstream) }] },
            ],
          },
        ];
  return {
    "@id": routeId(serverName),
    match: [{ host: [serverName] }],
    handle: [{ handler: "subroute", routes: [...wellKnowns, ...rest] }],
    terminal: true,
  };
}

/** A stand-in for a customer's domain: everything asked of it goes to the local server standing in for it. */
export function standInRoute(domain: string, upstream: Upstream): CaddyRoute {
  return {
    "@id": `${STAND_IN_ROUTE_ID_PREFIX}${domain}`,
    match: [{ host: [domain] }],
    handle: [{ handler: "reverse_proxy", upstreams: [{ dial: dialAddress(upstream) }] }],
    terminal: true,
  };
}

export function fallbackRoute(): CaddyRoute {
  return {
    "@id": FALLBACK_ROUTE_ID,
    handle: [jsonResponse(404, { errcode: "M_NOT_FOUND", error: "No homeserver is served at this host name" })],
  };
}

/**
 * Errors Caddy itself raises (upstream down → 502, a chunked body over the limit → 413)
 * get a Matrix JSON body with CORS, so browser clients can read them.
 */
export function errorRoutes(): Json[] {
  return [
    {
      match: [{ vars: { "{http.error.status_code}": ["413"] } }],
      handle: [jsonResponse(413, { errcode: "M_TOO_LARGE", error: "Request body too large" })],
    },
    {
      handle: [
        {
          handler: "static_response",
          status_code: "{http.error.status_code}",
          headers: JSON_HEADERS,
          body: '{"errcode":"M_UNKNOWN","error":"{http.error.status_text}"}',
        },
      ],
    },
  ];
}

// ---------- the whole config ----------

export function tlsPolicies(config: Pick<ProxyConfig, "tls" | "acmeEmail" | "acmeCa" | "acmeCaRootsFile">): Json[] {
  if (config.tls === "internal") return [{ issuers: [{ module: "internal" }] }];
  const email = config.acmeEmail ?? "";
  if (config.acmeCa) {
    const issuer: { [key: string]: Json } = { module: "acme", ca: config.acmeCa, email };
    if (config.acmeCaRootsFile) issuer.trusted_roots_pem_files = [config.acmeCaRootsFile];
    return [{ issuers: [issuer] }];
  }
  // Caddy's defaults (Let's Encrypt, then ZeroSSL), with our contact address.
  return [
    {
      issuers: [
        { module: "acme", email },
        { module: "zerossl", email },
      ],
    },
  ];
}

export function buildConfig(config: ProxyConfig, routes: RouteTable): { [key: string]: Json } {
  const names = Object.keys(routes).sort();
  const root: { [key: string]: Json } = {
    // Loading a config that named no admin endpoint would move it to Caddy's default.
    admin: { listen: config.adminAddress },
    apps: {
      http: {
        http_port: config.httpPort,
        https_port: config.httpsPort,
        servers: {
          [SERVER_ID]: {
            listen: [`${config.listenHost.includes(":") ? `[${config.listenHost}]` : config.listenHost}:${config.httpsPort}`],
            routes: [
              ...names.map((name) => buildRoute(name, routes[name]!, config)),
              ...Object.entries(config.standInDomains ?? {}).map(([domain, upstream]) => standInRoute(domain, upstream)),
              fallbackRoute(),
            ],
            errors: { routes: errorRoutes() },
          },
        },
      },
      tls: {
        automation: {
          policies: tlsPolicies(config),
          ...(config.renewCheckIntervalSeconds ? { renew_interval: `${config.renewCheckIntervalSeconds}s` } : {}),
        },
      },
      // Never touch the host's trust store (Caddy would try to install its root as root).
      pki: { certificate_authorities: { local: { install_trust: false } } },
    },
  };
  if (config.storageDir) root.storage = { module: "file_system", root: config.storageDir };
  return root;
}

/** Compares two Caddy configs, ignoring the order of the berth server's routes (except the fallback, last). */
export function sameConfig(a: unknown, b: unknown): boolean {
  return deepEqual(normalise(a), normalise(b));
}

function normalise(config: unknown): unknown {
  const copy = structuredClone(config) as { apps?: { http?: { servers?: Record<string, { routes?: Array<{ "@id"?: string }> }> } } } | null;
  const routes = copy?.apps?.http?.servers?.[SERVER_ID]?.routes;
  if (Array.isArray(routes)) routes.sort((x, y) => routeOrderKey(x).localeCompare(routeOrderKey(y)));
  return copy;
}

function routeOrderKey(route: { "@id"?: string }): string {
  const id = route["@id"] ?? "";
  return id === FALLBACK_ROUTE_ID ? "\uffff" : id;
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.hasOwn(b, k) && deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** A regular expression (RE2 syntax) matching decimal integers strictly greater than `n`. */
export function greaterThanPattern(n: number): string {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`not a non-negative integer: ${n}`);
  const s = String(n);
  const alternatives = [`[1-9][0-9]{${s.length},}`];
  for (let i = 0; i < s.length; i++) {
    const digit = Number(s[i]);
    if (digit === 9) continue;
    const rest = s.length - i - 1;
    const head = s.slice(0, i);
    alternatives.push(`${head}[${digit + 1}-9]${rest ? `[0-9]{${rest}}` : ""}`);
  }
  return `^0*(?:${alternatives.join("|")})$`;
}
