import { Hono } from "hono";
import { z } from "zod";
import { deleteAccount, describeAccountDeletion } from "../account/deletion";
import { exportAccountData } from "../account/export";
import { publicUser } from "../http/present";
import type { AppEnv } from "../http/context";
import { forgetSession, requireSession } from "../http/session";
import { readJson } from "../http/validation";

export const accountRoutes = new Hono<AppEnv>()
  .get("/", requireSession, (c) => {
    const { user, session } = c.var;
    return c.json({
      ...publicUser(user),
      session: { createdAt: session.createdAt.toISOString(), expiresAt: session.expiresAt.toISOString() },
    });
  })
  // Everything we hold about the customer, as one file (docs/data-export.md).
  .get("/export", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const data = await exportAccountData(ctx, user.id);
    c.header("Content-Disposition", `attachment; filename="berth-export-${ctx.now.toISOString().slice(0, 10)}.json"`);
    c.header("Cache-Control", "no-store");
    return c.json(data);
  })
  .get("/deletion", requireSession, async (c) => c.json(await describeAccountDeletion(c.var.ctx.db, c.var.user.id, c.var.ctx.now)))
  .delete("/", requireSession, async (c) => {
    const { password } = await readJson(c, z.strictObject({ password: z.string().min(1).max(1024) }));
    const terms = await deleteAccount(c.var.ctx, c.var.user, c.var.session.id, password);
    // Every session is gone server-side already; this browser's cookie goes too.
    forgetSession(c);
    return c.json(terms, 202);
  });
