// The certificates check: a TLS handshake with the host's proxy for the homeserver's name, judged
// against the roots the agent trusts, and the client and federation endpoints asked over it.
import { request } from "node:https";
import { checkServerIdentity, connect, type PeerCertificate } from "node:tls";
import type { HostCheckOutcome } from "../../protocol/checks.ts";

const DAY_MS = 24 * 60 * 60 * 1000;
const DEFAULT_TIMEOUT_MS = 10_000;
/** The endpoints a Matrix client and another homeserver ask first; both must answer over the certificate. */
export const MATRIX_ENDPOINTS = ["/_matrix/client/versions", "/_matrix/federation/v1/version"] as const;

/**
 * Caddy renews at a third of a certificate's lifetime left; below a sixth, renewal has failed for
 * half of the time it had (days for a 90-day certificate, minutes for a test's short one).
 */
export const OVERDUE_FRACTION = 1 / 6;

export interface CertificateCheckInput {
  serverName: string;
  /** Where the proxy's HTTPS listener answers (the proxy config's connectHost and httpsPort). */
  proxy: { host: string; port: number };
  /** PEM roots to trust: Caddy's internal root, or Pebble's; undefined: Node's default (public) roots. */
  trustedRoots?: string;
  timeoutMs?: number;
  now?: number;
}

type Fact = HostCheckOutcome["evidence"]["facts"][number];

interface Handshake {
  certificate: PeerCertificate;
  /** Why the chain is not trusted (OpenSSL's code), when it is not. */
  chainError?: string;
}

function handshake(input: CertificateCheckInput, timeoutMs: number): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: input.proxy.host,
      port: input.proxy.port,
      servername: input.serverName,
      ...(input.trustedRoots === undefined ? {} : { ca: input.trustedRoots }),
      rejectUnauthorized: false, // judged below, so an untrusted or expired certificate is still described
      checkServerIdentity: () => undefined, // the name is judged apart from the chain, below
      ALPNProtocols: ["http/1.1"],
      timeout: timeoutMs,
    });
    socket.once("timeout", () => {
      socket.destroy();
      reject(new Error("the TLS handshake timed out"));
    });
    socket.once("error", (error) => reject(error));
    socket.once("secureConnect", () => {
      const certificate = socket.getPeerCertificate();
      // Node reports the chain's verification error as OpenSSL's code (a string, despite its type).
      const chainError = socket.authorizationError ? String(socket.authorizationError) : undefined;
      socket.end();
      resolve({ certificate, ...(chainError ? { chainError } : {}) });
    });
  });
}

/** One GET over TLS to the proxy with the homeserver's name; the status, or why there was none. */
function endpointStatus(input: CertificateCheckInput, path: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const req = request(
      {
        host: input.proxy.host,
        port: input.proxy.port,
        servername: input.serverName,
        ...(input.trustedRoots === undefined ? {} : { ca: input.trustedRoots }),
        path,
        headers: { Host: input.serverName },
        agent: false,
        timeout: timeoutMs,
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(String(res.statusCode ?? 0)));
        res.on("error", (error) => resolve(`failed: ${error.message}`));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", (error) => resolve(`failed: ${error.message}`));
    req.end();
  });
}

function issuerOf(certificate: PeerCertificate): string {
  const issuer = certificate.issuer as unknown as Record<string, string | string[]> | undefined;
  const name = [issuer?.O, issuer?.CN].flat().filter(Boolean).join(", ");
  return name || "unnamed issuer";
}

function could(summary: string, facts: Fact[]): HostCheckOutcome {
  return { checkId: "certificates", result: "could_not_check", evidence: { summary, facts } };
}

/**
 * Whether the certificate the proxy serves for `serverName` is valid for it, trusted, not expired and
 * not overdue for renewal (OVERDUE_FRACTION), and whether the client and federation endpoints answer
 * over it. Could not check when the proxy does not complete a handshake.
 */
export async function checkCertificate(input: CertificateCheckInput): Promise<HostCheckOutcome> {
  const timeoutMs = input.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const now = input.now ?? Date.now();
  const address = `${input.proxy.host}:${input.proxy.port}`;
  let seen: Handshake;
  try {
    seen = await handshake(input, timeoutMs);
  } catch (error) {
    return could(`The proxy did not complete a TLS handshake for ${input.serverName}.`, [
      { label: "Proxy", value: address },
      { label: "Error", value: (error as Error).message.slice(0, 500) },
    ]);
  }
  const { certificate } = seen;
  if (!certificate?.valid_to) return could(`The proxy presented no certificate for ${input.serverName}.`, [{ label: "Proxy", value: address }]);

  const notBefore = Date.parse(certificate.valid_from);
  const notAfter = Date.parse(certificate.valid_to);
  const lifetimeMs = notAfter - notBefore;
  const leftMs = notAfter - now;
  const nameError = checkServerIdentity(input.serverName, certificate);
  const endpoints = await Promise.all(MATRIX_ENDPOINTS.map((path) => endpointStatus(input, path, timeoutMs)));

  const problems: string[] = [];
  if (nameError) problems.push(`it is not valid for ${input.serverName}`);
  if (seen.chainError && seen.chainError !== "CERT_HAS_EXPIRED") problems.push(`its issuer is not trusted (${seen.chainError})`);
  if (leftMs <= 0) problems.push(`it expired on ${new Date(notAfter).toISOString()}`);
  else if (leftMs < lifetimeMs * OVERDUE_FRACTION)
    problems.push(`its renewal is overdue: ${formatDuration(leftMs)} of its ${formatDuration(lifetimeMs)} lifetime left, less than a sixth`);
  MATRIX_ENDPOINTS.forEach((path, i) => {
    if (endpoints[i] !== "200") problems.push(`${path} answered ${endpoints[i]} over it`);
  });

  const facts: Fact[] = [
    { label: "Valid for the name", value: nameError ? `no: ${nameError.message}`.slice(0, 500) : `yes (${input.serverName})` },
    { label: "Issuer", value: issuerOf(certificate).slice(0, 500) },
    { label: "Trusted chain", value: seen.chainError && seen.chainError !== "CERT_HAS_EXPIRED" ? `no (${seen.chainError})` : "yes" },
    { label: "Expires", value: new Date(notAfter).toISOString() },
    { label: "Days left", value: String(Math.max(0, Math.floor(leftMs / DAY_MS))) },
    { label: "Renewal overdue below", value: `${formatDuration(lifetimeMs * OVERDUE_FRACTION)} left (a sixth of its lifetime)` },
    ...MATRIX_ENDPOINTS.map((path, i) => ({ label: path, value: endpoints[i] === "200" ? "answers (200)" : `${endpoints[i]}`.slice(0, 500) })),
  ];
  if (problems.length > 0) {
    const summary = `The certificate for ${input.serverName} fails: ${problems.join("; ")}.`;
    return { checkId: "certificates", result: "fails", evidence: { summary: summary.slice(0, 500), facts } };
  }
  const summary = `The certificate for ${input.serverName} is valid, issued by ${issuerOf(certificate)}, and expires in ${formatDuration(leftMs)}; the client and federation endpoints answer over it.`;
  return { checkId: "certificates", result: "holds", evidence: { summary: summary.slice(0, 500), facts } };
}

/** A duration in the largest whole unit that fits: days, hours, minutes or seconds. */
export function formatDuration(ms: number): string {
  const units: Array<[string, number]> = [
    ["day", DAY_MS],
    ["hour", 3_600_000],
    ["minute", 60_000],
  ];
  for (const [unit, size] of units) {
    const n = Math.floor(ms / size);
    if (n >= 1) return `${n} ${unit}${n === 1 ? "" : "s"}`;
  }
  const seconds = Math.max(0, Math.floor(ms / 1000));
  return `${seconds} second${seconds === 1 ? "" : "s"}`;
}
