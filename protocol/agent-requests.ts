// Agents' HTTP requests to the Worker (backup uploads and downloads), each
// carrying a compact JWS (RFC 7515) signed with the host's Ed25519 key and sent
// as `Authorization: Bearer <token>`. Made and checked with `jose`: the agent
// signs, the Worker verifies (and, beyond what is here, admits each `jti` once).
import { errors, importJWK, jwtVerify, SignJWT, type CryptoKey, type KeyObject } from "jose";
import { z } from "zod";

export const AGENT_REQUEST_TOKEN = {
  /** Ed25519 (RFC 8037), the host's key. */
  algorithm: "EdDSA",
  /** Explicit typing (RFC 8725 §3.11): no other JWT a host key might sign passes for one of these. */
  type: "berth-agent-request+jwt",
  /** `exp` − `iat`. The Worker refuses a token that claims a longer life. */
  lifetimeSeconds: 60,
  /** How far a host's clock may be off the Worker's, either way. */
  clockToleranceSeconds: 30,
} as const;

/**
 * A token's claims. `iss` is the host; `method`, `path` and `body_sha256` bind
 * it to one request (a streamed body is hashed as it arrives); `jti` is
 * unique, and the Worker admits each one once.
 */
export const agentRequestClaims = z.strictObject({
  iss: z.string().min(1).max(128),
  iat: z.number().int(),
  exp: z.number().int(),
  jti: z.string().min(16).max(128),
  /** Upper-case HTTP method. */
  method: z.string().regex(/^[A-Z]{1,16}$/),
  /** The request URL's path, without its query. */
  path: z.string().startsWith("/").max(2048),
  /** Lower-case hex SHA-256 of the body (of nothing, for a request without one). */
  body_sha256: z.string().regex(/^[0-9a-f]{64}$/, "lower-case hex SHA-256"),
});
export type AgentRequestClaims = z.infer<typeof agentRequestClaims>;

export interface AgentRequestToSign {
  hostId: string;
  method: string;
  path: string;
  bodySha256: string;
  /** The signer's clock; now by default. */
  issuedAt?: Date;
}

/** The token for one request, signed with the host's private key (a CryptoKey in workerd, a KeyObject in Node). */
export async function signAgentRequest(privateKey: CryptoKey | KeyObject, request: AgentRequestToSign): Promise<string> {
  const iat = Math.floor((request.issuedAt ?? new Date()).getTime() / 1000);
  return new SignJWT({ method: request.method.toUpperCase(), path: request.path, body_sha256: request.bodySha256 })
    .setProtectedHeader({ alg: AGENT_REQUEST_TOKEN.algorithm, typ: AGENT_REQUEST_TOKEN.type })
    .setIssuer(request.hostId)
    .setIssuedAt(iat)
    .setExpirationTime(iat + AGENT_REQUEST_TOKEN.lifetimeSeconds)
    .setJti(crypto.randomUUID())
    .sign(privateKey);
}

/** Why a token proves nothing about the request it came with. */
export type AgentRequestTokenProblem = "missing or malformed token" | "bad signature" | "expired or not yet valid" | "token for another request";

function problemOf(error: unknown): AgentRequestTokenProblem {
  if (error instanceof errors.JWSSignatureVerificationFailed) return "bad signature";
  if (error instanceof errors.JWTExpired) return "expired or not yet valid";
  if (error instanceof errors.JWTClaimValidationFailed && error.claim === "iat") return "expired or not yet valid";
  return "missing or malformed token";
}

/**
 * Checks a token against the host it must come from (`hostId` and its raw
 * base64url Ed25519 public key) and the request it came with, at `now`: typed
 * as an agent request, EdDSA by that key, naming that host, within its life
 * (at most `lifetimeSeconds`, give or take `clockToleranceSeconds`), with every
 * claim, for this method and path. Its `jti` is the caller's to admit once.
 */
export async function verifyAgentRequest(
  token: string,
  host: { hostId: string; publicKey: string },
  request: { method: string; path: string },
  now: Date,
): Promise<{ claims: AgentRequestClaims } | { problem: AgentRequestTokenProblem }> {
  let payload: unknown;
  try {
    const publicKey = await importJWK({ kty: "OKP", crv: "Ed25519", x: host.publicKey }, AGENT_REQUEST_TOKEN.algorithm);
    ({ payload } = await jwtVerify(token, publicKey, {
      algorithms: [AGENT_REQUEST_TOKEN.algorithm],
      typ: AGENT_REQUEST_TOKEN.type,
      issuer: host.hostId,
      currentDate: now,
      maxTokenAge: AGENT_REQUEST_TOKEN.lifetimeSeconds,
      clockTolerance: AGENT_REQUEST_TOKEN.clockToleranceSeconds,
      requiredClaims: ["exp", "jti"],
    }));
  } catch (error) {
    return { problem: problemOf(error) };
  }
  const claims = agentRequestClaims.safeParse(payload);
  if (!claims.success || claims.data.exp - claims.data.iat > AGENT_REQUEST_TOKEN.lifetimeSeconds) return { problem: "missing or malformed token" };
  if (claims.data.method !== request.method || claims.data.path !== request.path) return { problem: "token for another request" };
  return { claims: claims.data };
}

/** Until when (Unix ms) a token's `jti` must be remembered: after that, verifyAgentRequest() refuses the token as expired anyway. */
export function forgetTokenIdAfter(claims: AgentRequestClaims): number {
  return (claims.exp + AGENT_REQUEST_TOKEN.clockToleranceSeconds) * 1000;
}
