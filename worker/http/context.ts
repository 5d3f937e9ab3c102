import { createMiddleware } from "hono/factory";
import type { Authenticated } from "../auth/sessions";
import { clientNetwork } from "../auth/rate-limit";
import { ConfigError, isDevelopment } from "../config";
import { workContext, type RequestContext, type WorkContext } from "../context";
import type { WorkerEnv } from "../env";
import { ApiError } from "../errors";

// What every handler can read from `c.var`.
export interface AppEnv {
  Bindings: WorkerEnv;
  Variables: {
    /** What the request's work runs with; domain services take it as it is. */
    ctx: RequestContext;
    auth: Authenticated | null;
  };
}

/**
 * Sets `c.var.ctx`. A Worker whose settings are not valid answers every request with a 503
 * and nothing more (the settings at fault were logged when they were parsed).
 */
export const requestContext = createMiddleware<AppEnv>(async (c, next) => {
  let work: WorkContext;
  try {
    work = workContext(c.env, new Date());
  } catch (error) {
    if (error instanceof ConfigError) throw new ApiError(503, "misconfigured", "Berth is not available right now: its configuration is being put right.");
    throw error;
  }
  // Links in email never come from the request's Host header (which an attacker could set to
  // poison a reset link); development, which runs on whatever port it was given, uses its own origin.
  const origin = isDevelopment(work.config) ? new URL(c.req.url).origin : work.config.publicOrigin;
  c.set("ctx", {
    ...work,
    // Cloudflare sets this header itself at the edge; a client cannot supply it.
    client: clientNetwork(c.req.header("cf-connecting-ip")),
    link: (path) => `${origin}${path}`,
    waitUntil: (work) => c.executionCtx.waitUntil(work),
  });
  await next();
});
