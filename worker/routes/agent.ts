import { Hono } from "hono";
import { enrollRequest } from "../../protocol/messages";
import { consumeRateLimits } from "../auth/rate-limit";
import { turnAwayRefusedClient } from "../audit/refusals";
import { enrollHost } from "../fleet/enrollment";
import { hostStub, requireHost } from "../fleet/hosts";
import { ApiError } from "../errors";
import type { AppEnv } from "../http/context";
import { readJson } from "../http/validation";

// For agents only: enrollment with a join token, then the WebSocket every agent dials.
export const agentRoutes = new Hono<AppEnv>()
  .post("/enroll", async (c) => {
    const { ctx } = c.var;
    await consumeRateLimits(ctx.db, ctx.config.rateLimits, [{ name: "enroll_ip", subject: ctx.client }], ctx.now);
    const request = await readJson(c, enrollRequest);
    const { hostId, region } = await enrollHost(ctx.db, request, ctx.now);
    const connectUrl = new URL("/api/agent/connect", c.req.url);
    connectUrl.protocol = connectUrl.protocol === "https:" ? "wss:" : "ws:";
    connectUrl.searchParams.set("host", hostId);
    return c.json({ hostId, region, connectUrl: connectUrl.toString() }, 201);
  })
  .get("/connect", async (c) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      throw new ApiError(426, "upgrade_required", "Connect with a WebSocket.");
    }
    const { ctx } = c.var;
    const hostId = c.req.query("host") ?? "";
    // A client whose connections keep being refused (inside the Durable Object) is turned away here.
    await turnAwayRefusedClient(ctx, "agent.auth_refused", "rate limited", { host: hostId });
    // Only enrolled hosts get a Durable Object; who is calling is proven inside it, by signature.
    await requireHost(ctx.db, hostId);
    return hostStub(ctx.env, hostId).fetch(c.req.raw);
  });
