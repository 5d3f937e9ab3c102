import { eq } from "drizzle-orm";
import { decodeJwt } from "jose";
import { forgetTokenIdAfter, verifyAgentRequest } from "../../protocol/agent-requests";
import { countAgainstRefusalLimit, recordRefusal, turnAwayRefusedClient, type RefusalContext, type RefusalReason } from "../audit/refusals";
import { hosts, type Host } from "../db/schema";
import type { Env } from "../env";
import { type ApiError, unauthorized } from "../errors";
import { hostStub } from "./hosts";

/** An agent's HTTP request: what its token must match. */
export interface AgentRequest {
  method: string;
  pathname: string;
  /** The `Authorization` header. */
  authorization: string | undefined;
}

/** An agent's HTTP request as signed. Until its token is verified, `hostId` is only what it claims. */
export interface SignedAgentRequest {
  method: string;
  pathname: string;
  hostId: string;
  /** The body's signed SHA-256: a body read or streamed later must hash to it. */
  contentSha256: string;
}

const BEARER = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/i;
const MAX_TOKEN_LENGTH = 4096;

/** The `iss` a token claims, unverified: for finding the key that must have signed it, and for counting a refusal. */
function claimedHost(token: string | undefined): string {
  if (!token) return "";
  try {
    const { iss } = decodeJwt(token);
    return typeof iss === "string" ? iss : "";
  } catch {
    return "";
  }
}

/**
 * The host that signed this request, or 401. The request carries
 * `Authorization: Bearer <JWS>` (protocol/agent-requests.ts): a token typed as
 * an agent request, signed (EdDSA) by the key of the enrolled, unrevoked host
 * its `iss` names, within its life (60 s, give or take 30 s of clock), for
 * this method and path (verifyAgentRequest), and never used before: its
 * `jti` is admitted once, by the host's Durable Object. The body is the
 * caller's to check against the returned `contentSha256`. A client over its
 * limit of refusals gets a 429 before any of that is looked at.
 */
export async function authenticateAgentRequest(ctx: RefusalContext, env: Env, request: AgentRequest): Promise<{ host: Host; signed: SignedAgentRequest }> {
  const token = BEARER.exec(request.authorization ?? "")?.[1];
  const claimed: SignedAgentRequest = { method: request.method, pathname: request.pathname, hostId: claimedHost(token), contentSha256: "" };
  await turnAwayRefusedClient(ctx, "agent.request_refused", "rate limited", { host: claimed.hostId });
  if (!token || token.length > MAX_TOKEN_LENGTH || !claimed.hostId) throw await refuseAgentRequest(ctx, claimed, "missing or malformed token");
  const [host] = await ctx.db
    .select()
    .from(hosts)
    .where(eq(hosts.id, claimed.hostId.slice(0, 128)));
  if (!host || host.status === "revoked") throw await refuseAgentRequest(ctx, claimed, host ? "revoked host" : "unknown host");

  const verified = await verifyAgentRequest(token, { hostId: host.id, publicKey: host.publicKey }, { method: request.method, path: request.pathname }, ctx.now);
  if ("problem" in verified) throw await refuseAgentRequest(ctx, claimed, verified.problem);
  const { claims } = verified;
  if (!(await hostStub(env, host.id).admitRequestToken(claims.jti, forgetTokenIdAfter(claims), ctx.now.getTime()))) {
    throw await refuseAgentRequest(ctx, claimed, "replayed token");
  }
  return { host, signed: { ...claimed, contentSha256: claims.body_sha256 } };
}

/**
 * A request that proves nothing: counted for operators (never audited, since
 * the host its token names is the caller's choice), and a 401 — or the 429 of
 * a client that has now been refused too often.
 */
export async function refuseAgentRequest(ctx: RefusalContext, request: SignedAgentRequest, reason: RefusalReason<"agent.request_refused">): Promise<ApiError> {
  await recordRefusal(ctx.db, ctx.now, "agent.request_refused", reason, { host: request.hostId, method: request.method });
  return (await countAgainstRefusalLimit(ctx)) ?? unauthorized("This request is not signed by an enrolled host.");
}
