// The delegation check: a homeserver with a customer's own server name is found through the two
// Matrix well-knowns the customer publishes on that domain. The agent fetches them (not the Worker:
// docs/decisions.md, "Where the delegation check runs") with every fetch bounded: public addresses
// only, a deadline, a size limit and few redirects.
import { lookup } from "node:dns/promises";
import type { IncomingMessage } from "node:http";
import { request } from "node:https";
import { BlockList, isIP, type LookupFunction } from "node:net";
import type { DelegationOutcome } from "../../protocol/checks.ts";
import { BLOCKED_IPV4, BLOCKED_IPV6 } from "../homeserver/config.ts";
import { wellKnownClient, wellKnownServer, type ProxyConfig } from "../proxy/caddy-config.ts";

export const WELL_KNOWN_SERVER = "/.well-known/matrix/server";
export const WELL_KNOWN_CLIENT = "/.well-known/matrix/client";
/** A well-known is a few hundred bytes; anything far larger is not one. */
export const MAX_WELL_KNOWN_BYTES = 64 * 1024;
export const MAX_REDIRECTS = 3;
const DEFAULT_TIMEOUT_MS = 5_000;
/** How much of a wrong value the evidence quotes (its facts are bounded: protocol/checks.ts). */
const MAX_QUOTED = 100;

export interface DelegationCheckInput {
  /** The Matrix server name: the customer's domain. */
  serverName: string;
  /** Where the homeserver is served: `<name>.<HOMESERVER_DOMAIN>` and the proxy's public HTTPS port. */
  servedHost: string;
  servedPort: number;
  /** The port the customer's domain answers HTTPS on: 443 but in tests. */
  domainPort?: number;
  /** PEM roots to trust for the customer's domain; undefined: Node's default (public) roots. */
  trustedRoots?: string;
  /** Development and tests only: let the customer's domain resolve to a private or loopback address. */
  allowPrivateAddresses?: boolean;
  /** How names become addresses; DNS unless a test's stand-in domain says otherwise. */
  resolve?: (host: string) => Promise<string[]>;
  timeoutMs?: number;
}

/**
 * Development and tests (the proxy's standInDomains): the customers' domains are the proxy's
 * stand-ins, reached at the proxy's address and HTTPS port and trusted through its internal CA.
 * No other domain is reached at all.
 */
export async function standInReach(proxy: {
  config: Pick<ProxyConfig, "standInDomains" | "connectHost" | "httpsPort">;
  servedCertificateRoots(): Promise<string | undefined>;
}): Promise<Pick<DelegationCheckInput, "trustedRoots" | "allowPrivateAddresses" | "resolve" | "domainPort">> {
  const domains = new Set(Object.keys(proxy.config.standInDomains ?? {}));
  const trustedRoots = await proxy.servedCertificateRoots();
  return {
    ...(trustedRoots === undefined ? {} : { trustedRoots }),
    allowPrivateAddresses: true,
    domainPort: proxy.config.httpsPort,
    resolve: async (host) => {
      if (!domains.has(host)) throw new Error(`${host} is not one of the proxy's stand-in domains`);
      return [proxy.config.connectHost];
    },
  };
}

/** The documents the customer must publish, exactly as the dashboard shows them: the ones the proxy serves on the served host. */
export function expectedWellKnowns(servedHost: string, servedPort: number) {
  return { server: wellKnownServer(servedHost, servedPort), client: wellKnownClient(servedHost, servedPort) };
}

const blocked = new BlockList();
for (const range of BLOCKED_IPV4) blocked.addSubnet(range.split("/")[0] ?? "", Number(range.split("/")[1]), "ipv4");
for (const range of BLOCKED_IPV6) blocked.addSubnet(range.split("/")[0] ?? "", Number(range.split("/")[1]), "ipv6");

/** Whether an address is one the check may fetch from in production: not the host's, a provider's or a private network's. */
export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return !blocked.check(address, "ipv4");
  if (family !== 6) return false;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped) return !blocked.check(mapped, "ipv4");
  return !blocked.check(address, "ipv6");
}

class FetchProblem extends Error {}

interface Fetched {
  status: number;
  headers: IncomingMessage["headers"];
  body: string;
}

async function resolvePublic(host: string, input: DelegationCheckInput): Promise<string> {
  const resolve = input.resolve ?? (async (name: string) => (await lookup(name, { all: true })).map((entry) => entry.address));
  let addresses: string[];
  try {
    addresses = await resolve(host);
  } catch {
    throw new FetchProblem(`${host} does not resolve`);
  }
  if (addresses.length === 0) throw new FetchProblem(`${host} does not resolve`);
  // Every address must be public: a name with one private address could be steered onto it.
  if (!input.allowPrivateAddresses && addresses.some((address) => !isPublicAddress(address))) {
    throw new FetchProblem(`${host} resolves to a private or reserved address, which is never fetched`);
  }
  return addresses[0] as string;
}

function getOnce(url: URL, address: string, input: DelegationCheckInput, signal: AbortSignal): Promise<Fetched> {
  // The connection goes to the address just vetted, so a second DNS answer cannot redirect it.
  const pinned: LookupFunction = (_host, options, callback) => {
    if (options.all) callback(null, [{ address, family: isIP(address) }]);
    else callback(null, address, isIP(address));
  };
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "GET", lookup: pinned, ca: input.trustedRoots, signal, headers: { accept: "application/json" } }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_WELL_KNOWN_BYTES) {
          req.destroy(new FetchProblem(`the response is larger than ${MAX_WELL_KNOWN_BYTES / 1024} KiB`));
          return;
        }
        chunks.push(chunk);
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

async function fetchWellKnown(path: string, input: DelegationCheckInput, signal: AbortSignal): Promise<Fetched> {
  const port = input.domainPort ?? 443;
  let url = new URL(`https://${input.serverName}${port === 443 ? "" : `:${port}`}${path}`);
  for (let hop = 0; ; hop++) {
    const address = await resolvePublic(url.hostname, input);
    let fetched: Fetched;
    try {
      fetched = await getOnce(url, address, input, signal);
    } catch (error) {
      if (error instanceof FetchProblem) throw error;
      if (signal.aborted) throw new FetchProblem(`no answer within ${(input.timeoutMs ?? DEFAULT_TIMEOUT_MS) / 1000} s`);
      throw new FetchProblem(`could not be fetched over HTTPS (${(error as NodeJS.ErrnoException).code ?? "connection failed"})`);
    }
    const location = fetched.headers.location;
    if (fetched.status < 300 || fetched.status >= 400 || !location) return fetched;
    if (hop >= MAX_REDIRECTS) throw new FetchProblem(`more than ${MAX_REDIRECTS} redirects`);
    url = new URL(location, url);
    if (url.protocol !== "https:") throw new FetchProblem("redirects to a URL that is not https");
  }
}

function parseJsonObject(body: string): Record<string, unknown> | null {
  try {
    const parsed: unknown = JSON.parse(body);
    return parsed !== null && typeof parsed === "object" && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** A value the customer's document holds, quoted for the evidence: short, since it is theirs and may be anything. */
function quoted(value: unknown): string {
  const text = JSON.stringify(value ?? null) ?? "null";
  return text.length > MAX_QUOTED ? `${text.slice(0, MAX_QUOTED)}…` : text;
}

/** What is wrong with one fetched well-known, or null when it is right. */
function serverProblem(fetched: Fetched, expected: string): string | null {
  if (fetched.status !== 200) return `answers HTTP ${fetched.status}`;
  const document = parseJsonObject(fetched.body);
  if (!document) return "is not a JSON object";
  if (document["m.server"] !== expected) return `says "m.server": ${quoted(document["m.server"])}, not "${expected}"`;
  return null;
}

function clientProblem(fetched: Fetched, expected: string): string | null {
  if (fetched.status !== 200) return `answers HTTP ${fetched.status}`;
  const document = parseJsonObject(fetched.body);
  if (!document) return "is not a JSON object";
  const homeserver = document["m.homeserver"];
  const baseUrl = homeserver !== null && typeof homeserver === "object" ? (homeserver as Record<string, unknown>).base_url : undefined;
  const normalised = typeof baseUrl === "string" ? baseUrl.replace(/\/+$/, "") : baseUrl;
  if (normalised !== expected) return `says "m.homeserver.base_url": ${quoted(baseUrl)}, not "${expected}"`;
  // Web clients read it from another origin: without this header a browser hides it from them.
  if (fetched.headers["access-control-allow-origin"] !== "*") return "lacks the header Access-Control-Allow-Origin: *";
  return null;
}

export async function checkDelegation(input: DelegationCheckInput): Promise<DelegationOutcome> {
  const expected = expectedWellKnowns(input.servedHost, input.servedPort);
  const documents = [
    { path: WELL_KNOWN_SERVER, judge: (fetched: Fetched) => serverProblem(fetched, expected.server["m.server"]) },
    { path: WELL_KNOWN_CLIENT, judge: (fetched: Fetched) => clientProblem(fetched, expected.client["m.homeserver"].base_url) },
  ];
  const facts: DelegationOutcome["evidence"]["facts"] = [];
  const problems: string[] = [];
  for (const { path, judge } of documents) {
    const signal = AbortSignal.timeout(input.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const url = `https://${input.serverName}${path}`;
    let problem: string | null;
    try {
      problem = judge(await fetchWellKnown(path, input, signal));
    } catch (error) {
      if (!(error instanceof FetchProblem)) throw error;
      problem = error.message;
    }
    facts.push({ label: path, value: problem ?? "right" });
    if (problem) problems.push(`${url} ${problem}`);
  }
  if (problems.length === 0) {
    return { result: "holds", evidence: { summary: `${input.serverName} delegates to ${input.servedHost}: both well-knowns are right.`, facts } };
  }
  return { result: "fails", evidence: { summary: `Delegation from ${input.serverName} is broken: ${problems.join("; ")}.`.slice(0, 500), facts } };
}
