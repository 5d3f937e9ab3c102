import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { z } from "zod";
import { BACKUP_MAX_PARTS } from "../../protocol/messages";
import { sha256Hex } from "../crypto/bytes";
import type { Host } from "../db/schema";
import type { RefusalContext } from "../audit/refusals";
import { authenticateAgentRequest, refuseAgentRequest, type SignedAgentRequest } from "../fleet/agent-requests";
import { ApiError } from "../errors";
import type { AgentUploadContext } from "../uploads/parts";
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

/** The number in a part's path (…/parts/:partNumber), as uploads in parts number them. */
export const partNumberParam = z
  .string()
  .regex(/^[1-9][0-9]{0,4}$/, "a part number from 1")
  .transform(Number)
  .pipe(z.number().max(BACKUP_MAX_PARTS));

const contentLength = z
  .string()
  .regex(/^[0-9]{1,10}$/)
  .transform(Number);

/** A streamed part's declared length: R2 needs it before the first byte. */
export function partLength(c: { req: { header(name: string): string | undefined } }): number {
  const length = contentLength.safeParse(c.req.header("content-length"));
  if (!length.success) throw new ApiError(411, "length_required", "Send each part with its Content-Length.");
  return length.data;
}

/** The context of an agent's upload request: the signing host, and how to refuse a body that was not the one signed. */
export function agentUploadContext(c: Context<AgentAppEnv>): AgentUploadContext {
  return {
    ...c.var.ctx,
    host: c.var.agentHost,
    refuseRequest: (reason) => refuseAgentRequest(c.var.refusalContext, c.var.signedRequest, reason),
  };
}
