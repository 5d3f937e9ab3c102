import { Hono } from "hono";
import { enrollRequest } from "../../protocol/messages";
import { clientNetwork, consumeRateLimits, rateLimitRules } from "../auth/rate-limit";
import { turnAwayRefusedClient } from "../audit/refusals";
import { enrollHost } from "../fleet/enrollment";
import { hostStub, requireHost } from "../fleet/hosts";
import { ApiError } from "../errors";
import type { AppEnv } from "../http/context";
import { readJson } from "../http/validation";

// For agents only: enrollment with a join token, then the WebSocket every agent dials.
export const agentRoutes = new Hono<AppEnv>()
  .post("/enroll", async (c) => {
    await consumeRateLimits(
      c.var.db,
      rateLimitRules(c.env.RATE_LIMITS),
      [{ name: "enroll_ip", subject: clientNetwork(c.req.header("cf-connecting-ip")) }],
      c.var.now,
    );
    const request = await readJson(c, enrollRequest);
    const { hostId, region } = await enrollHost(c.var.db, request, c.var.now);
    const connectUrl = new URL("/api/agent/connect", c.req.url);
    connectUrl.protocol = connectUrl.protocol === "https:" ? "wss:" : "ws:";
    connectUrl.searchParams.set("host", hostId);
    return c.json({ hostId, region, connectUrl: connectUrl.toString() }, 201);
  })
  .get("/connect", async (c) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      throw new ApiError(426, "upgrade_required", "Connect with a WebSocket.");
    }
    const hostId = c.req.query("host") ?? "";
    // A client whose connections keep being refused (inside the Durable Object) is turned away here.
    const refusals = { db: c.var.db, now: c.var.now, rateLimits: rateLimitRules(c.env.RATE_LIMITS), client: clientNetwork(c.req.header("cf-connecting-ip")) };
    await turnAwayRefusedClient(refusals, "agent.auth_refused", "rate limited", { host: hostId });
    // Only enrolled hosts get a Durable Object; who is calling is proven inside it, by signature.
    await requireHost(c.var.db, hostId);
    return hostStub(c.env, hostId).fetch(c.req.raw);
  });
