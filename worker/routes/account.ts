import { Hono } from "hono";
import { z } from "zod";
import { deleteAccount, describeAccountDeletion } from "../account/deletion";
import { exportAccountData } from "../account/export";
import type { AppEnv } from "../http/context";
import { accountDeletionContext } from "../http/domain-context";
import { publicUser } from "../http/present";
import { forgetSession, requireAuth } from "../http/session";
import { readJson } from "../http/validation";

export const accountRoutes = new Hono<AppEnv>()
  .get("/", (c) => {
    const { user, session } = requireAuth(c);
    return c.json({
      ...publicUser(user),
      session: { createdAt: session.createdAt.toISOString(), expiresAt: session.expiresAt.toISOString() },
    });
  })
  // Everything we hold about the customer, as one file (docs/data-export.md).
  .get("/export", async (c) => {
    const { user } = requireAuth(c);
    const data = await exportAccountData(c.var.db, c.env, user.id, c.var.now);
    c.header("Content-Disposition", `attachment; filename="berth-export-${c.var.now.toISOString().slice(0, 10)}.json"`);
    c.header("Cache-Control", "no-store");
    return c.json(data);
  })
  .get("/deletion", async (c) => c.json(await describeAccountDeletion(c.var.db, requireAuth(c).user.id, c.var.now)))
  .delete("/", async (c) => {
    const { user, session } = requireAuth(c);
    const { password } = await readJson(c, z.strictObject({ password: z.string().min(1).max(1024) }));
    const terms = await deleteAccount(accountDeletionContext(c), user, session.id, password);
    // Every session is gone server-side already; this browser's cookie goes too.
    forgetSession(c);
    return c.json(terms, 202);
  });
