import { eq } from "drizzle-orm";
import { AGENT_REQUEST_MAX_SKEW_MS, agentRequestSigningInput } from "../../protocol/messages";
import { countAgainstRefusalLimit, recordRefusal, turnAwayRefusedClient, type RefusalContext, type RefusalReason } from "../audit/refusals";
import { hosts, type Host } from "../db/schema";
import { type ApiError, unauthorized } from "../errors";
import { verifyHostSignature } from "./signatures";

/** An agent's HTTP request as signed: what agentRequestSigningInput() covers, and who claims to have signed it. */
export interface SignedAgentRequest {
  method: string;
  pathname: string;
  hostId: string;
  timestamp: string;
  contentSha256: string;
  signature: string;
}

/**
 * The host that signed this request, or 401: an enrolled, unrevoked host whose
 * Ed25519 key signed this method, path, body digest and a timestamp within
 * five minutes of our clock. The body itself is the caller's to check against
 * `contentSha256`. A client over its limit of refusals gets a 429 before any
 * of that is looked at.
 */
export async function authenticateAgentRequest(ctx: RefusalContext, request: SignedAgentRequest): Promise<Host> {
  await turnAwayRefusedClient(ctx, "agent.request_refused", "rate limited", { host: request.hostId });
  const timestamp = Number(request.timestamp);
  if (!/^\d{1,16}$/.test(request.timestamp) || !/^[0-9a-f]{64}$/.test(request.contentSha256) || !request.hostId || !request.signature) {
    throw await refuseAgentRequest(ctx, request, "missing or malformed signature headers");
  }
  if (Math.abs(ctx.now.getTime() - timestamp) > AGENT_REQUEST_MAX_SKEW_MS) throw await refuseAgentRequest(ctx, request, "timestamp outside the window");
  const [host] = await ctx.db.select().from(hosts).where(eq(hosts.id, request.hostId.slice(0, 128)));
  if (!host || host.status === "revoked") throw await refuseAgentRequest(ctx, request, host ? "revoked host" : "unknown host");
  const input = agentRequestSigningInput(request.method, request.pathname, request.timestamp, request.contentSha256);
  if (!(await verifyHostSignature(host.publicKey, request.signature, input))) throw await refuseAgentRequest(ctx, request, "bad signature");
  return host;
}

/**
 * A request that proves nothing: counted for operators (never audited, since
 * its host header is the caller's choice), and a 401 — or the 429 of a client
 * that has now been refused too often.
 */
export async function refuseAgentRequest(ctx: RefusalContext, request: SignedAgentRequest, reason: RefusalReason<"agent.request_refused">): Promise<ApiError> {
  await recordRefusal(ctx.db, ctx.now, "agent.request_refused", reason, { host: request.hostId, method: request.method });
  return (await countAgainstRefusalLimit(ctx)) ?? unauthorized("This request is not signed by an enrolled host.");
}
