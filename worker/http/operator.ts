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

/**
 * The operators' pages (/operator, behind requireLogin): anyone else gets the very page an address
 * with nothing at it gets, so the console does not announce itself. An operator whose address is
 * unverified is told so, as /api/admin tells them.
 */
export const requireOperatorPage = createMiddleware<SessionAppEnv>(async (c, next) => {
  if (c.var.user.role !== "operator") return c.notFound();
  await requireOperator(c, next);
});
