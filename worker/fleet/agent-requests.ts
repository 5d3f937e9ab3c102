import { eq } from "drizzle-orm";
import { AGENT_REQUEST_MAX_SKEW_MS, agentRequestSigningInput } from "../../protocol/messages";
import { audit } from "../audit/audit";
import type { Database } from "../db/client";
import { hosts, type Host } from "../db/schema";
import { ApiError, unauthorized } from "../errors";
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
 * `contentSha256`. Every refusal is audited, like refused WebSocket hellos.
 */
export async function authenticateAgentRequest(db: Database, request: SignedAgentRequest, now: Date): Promise<Host> {
  const timestamp = Number(request.timestamp);
  if (!/^\d{1,16}$/.test(request.timestamp) || !/^[0-9a-f]{64}$/.test(request.contentSha256) || !request.hostId || !request.signature) {
    throw await refuseAgentRequest(db, request, now, "missing or malformed signature headers");
  }
  if (Math.abs(now.getTime() - timestamp) > AGENT_REQUEST_MAX_SKEW_MS) throw await refuseAgentRequest(db, request, now, "timestamp outside the window");
  const [host] = await db.select().from(hosts).where(eq(hosts.id, request.hostId.slice(0, 128)));
  if (!host || host.status === "revoked") throw await refuseAgentRequest(db, request, now, host ? "revoked host" : "unknown host");
  const input = agentRequestSigningInput(request.method, request.pathname, request.timestamp, request.contentSha256);
  if (!(await verifyHostSignature(host.publicKey, request.signature, input))) throw await refuseAgentRequest(db, request, now, "bad signature");
  return host;
}

export async function refuseAgentRequest(db: Database, request: SignedAgentRequest, now: Date, reason: string): Promise<ApiError> {
  const detail = { reason, method: request.method, path: request.pathname.slice(0, 256) };
  console.warn(JSON.stringify({ event: "agent.request_refused", hostId: request.hostId.slice(0, 128), ...detail }));
  await audit(db, now, "anonymous", "agent.request_refused", request.hostId.slice(0, 128) || null, detail);
  return unauthorized("This request is not signed by an enrolled host.");
}
