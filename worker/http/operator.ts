import { createMiddleware } from "hono/factory";
import { forbidden } from "../errors";
import type { AppEnv } from "./context";
import { requireAuth } from "./session";

/**
 * /api/admin: a logged-in operator whose email address is verified, or nothing (a
 * customer gets 403, no session 401). `npm run operator -- grant` refuses unverified
 * accounts already; this holds even for a role set some other way.
 */
export const requireOperator = createMiddleware<AppEnv>(async (c, next) => {
  const { user } = requireAuth(c);
  if (user.role !== "operator") throw forbidden("operator_only", "This needs an operator account.");
  if (!user.emailVerifiedAt) throw forbidden("email_unverified", "An operator account needs a verified email address: follow the link we emailed you.");
  await next();
});
