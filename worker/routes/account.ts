import { Hono } from "hono";
import type { AppEnv } from "../http/context";
import { publicUser } from "../http/present";
import { requireAuth } from "../http/session";

export const accountRoutes = new Hono<AppEnv>().get("/", (c) => {
  const { user, session } = requireAuth(c);
  return c.json({
    ...publicUser(user),
    session: { createdAt: session.createdAt.toISOString(), expiresAt: session.expiresAt.toISOString() },
  });
});
