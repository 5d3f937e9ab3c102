import { Hono } from "hono";
import { and, eq } from "drizzle-orm";
import { z } from "zod";
import { servers } from "../db/schema";
import { notFound } from "../errors";
import { USAGE_RANGES, workloadUsageSeries, type UsageRange } from "../fleet/usage";
import type { AppEnv } from "../http/context";
import { presentUsage } from "../http/present";
import { requireAuth } from "../http/session";
import { parseWith } from "../http/validation";

const rangeQuery = z.object({
  range: z.enum(Object.keys(USAGE_RANGES) as [UsageRange, ...UsageRange[]]).default("24h"),
});

// A customer's homeservers: reached only through their owner (someone else's id is a plain 404).
export const serverRoutes = new Hono<AppEnv>().get("/:id/usage", async (c) => {
  const { user } = requireAuth(c);
  const [server] = await c.var.db
    .select()
    .from(servers)
    .where(and(eq(servers.id, c.req.param("id")), eq(servers.userId, user.id)));
  if (!server) throw notFound("No such server.");
  const { range } = parseWith(rangeQuery, c.req.query());
  const series = await workloadUsageSeries(c.var.db, [server.id], range, c.var.now);
  return c.json(presentUsage(series, ["workloadId", "hostId", "resolution"]));
});
