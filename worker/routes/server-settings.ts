import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../http/context";
import { requireSession } from "../http/session";
import { parseWith, readJson } from "../http/validation";
import { changeSettings, describeSettings, settingsChange } from "../servers/settings";

const serverParam = z.object({ id: z.string().min(1).max(128) });

// A homeserver's settings, for its owner (mounted under /api/servers). A change is a job on the
// host that restarts Synapse: the request waits a few seconds for it, then answers 202 with the job.
export const serverSettingsRoutes = new Hono<AppEnv>()
  .get("/:id/settings", requireSession, async (c) => {
    const { ctx, user } = c.var;
    return c.json(await describeSettings(ctx, user, parseWith(serverParam, c.req.param()).id));
  })
  // PATCH: the fields it names change, the others stay as they are.
  .patch("/:id/settings", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const { id } = parseWith(serverParam, c.req.param());
    const result = await changeSettings(ctx, user, id, await readJson(c, settingsChange));
    return "done" in result ? c.json(result.done) : c.json({ job: result.pending }, 202);
  });
