import { createMiddleware } from "hono/factory";
import { forbidden } from "../errors";
import type { SessionAppEnv } from "./session";

/**
 * /api/admin, behind requireSession: an operator whose email address is verified, or nothing (a
 * customer gets 403). `npm run operator -- grant` refuses unverified accounts already; this holds
 * even for a role set some other way.
 */
export const requireOperator = createMiddleware<SessionAppEnv>(async (c, next) => {
  const { user } = c.var;
  if (user.role !== "operator") throw forbidden("operator_only", "This needs an operator account.");
  if (!user.emailVerifiedAt) throw forbidden("email_unverified", "An operator account needs a verified email address: follow the link we emailed you.");
  await next();
});
