import { Hono } from "hono";
import { z } from "zod";
import { serverChecks } from "../checks/results";
import { checksUnderWay, runChecksNow } from "../checks/runs";
import type { AppEnv } from "../http/context";
import { requireSession } from "../http/session";
import { parseWith } from "../http/validation";
import { ownedServer } from "../servers/servers";

const serverParam = z.object({ id: z.string().min(1).max(128) });

// A homeserver's promise checks, for its owner (mounted under /api/servers): each check's latest
// result with its evidence and 30 days of history, and "check now".
export const serverCheckRoutes = new Hono<AppEnv>()
  .get("/:id/checks", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const server = await ownedServer(ctx.db, user.id, parseWith(serverParam, c.req.param()).id);
    const running = await checksUnderWay(ctx, server.id);
    return c.json({ checks: await serverChecks(ctx.db, server, ctx.now), runningJobId: running?.id ?? null });
  })
  // The host's checks take a minute or so: the answer is the job; GET shows their results once it finished.
  .post("/:id/checks/run", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const job = await runChecksNow(ctx, user, parseWith(serverParam, c.req.param()).id);
    return c.json({ jobId: job.id }, 202);
  });
