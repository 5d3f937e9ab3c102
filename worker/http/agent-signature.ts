import { createMiddleware } from "hono/factory";
import { sha256Hex } from "../crypto/bytes";
import type { Host } from "../db/schema";
import type { RefusalContext } from "../audit/refusals";
import { authenticateAgentRequest, refuseAgentRequest, type SignedAgentRequest } from "../fleet/agent-requests";
import type { AppEnv } from "./context";

/** What handlers behind signedAgentRequest() can read from `c.var`. */
export interface AgentAppEnv extends AppEnv {
  Variables: AppEnv["Variables"] & {
    /** The host whose key signed the request's token. */
    agentHost: Host;
    /** The request as signed: a streamed body must hash to its `contentSha256`. */
    signedRequest: SignedAgentRequest;
    /** For refusing the request after all (a streamed body that is not the one signed). */
    refusalContext: RefusalContext;
  };
}

/**
 * Admits only requests with a token signed by an enrolled host (see
 * authenticateAgentRequest). The body is read — and compared with its signed
 * SHA-256 — only after the token holds. A route that streams its body (backup
 * parts, up to 8 MiB) passes `streamedBody` and checks the digest itself while
 * streaming.
 */
export function signedAgentRequest(options: { streamedBody?: boolean } = {}) {
  return createMiddleware<AgentAppEnv>(async (c, next) => {
    const context: RefusalContext = c.var.ctx;
    const { host, signed } = await authenticateAgentRequest(context, c.var.ctx.env, {
      method: c.req.method,
      pathname: new URL(c.req.url).pathname,
      authorization: c.req.header("authorization"),
    });
    if (!options.streamedBody && (await sha256Hex(await c.req.arrayBuffer())) !== signed.contentSha256) {
      throw await refuseAgentRequest(context, signed, "body does not match its signed digest");
    }
    c.set("agentHost", host);
    c.set("signedRequest", signed);
    c.set("refusalContext", context);
    await next();
  });
}
