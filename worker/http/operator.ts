import { createMiddleware } from "hono/factory";
import { forbidden } from "../errors";
import type { AppEnv } from "./context";
import { requireAuth } from "./session";

/** /api/admin: a logged-in operator, or nothing (a customer gets 403, no session 401). */
export const requireOperator = createMiddleware<AppEnv>(async (c, next) => {
  if (requireAuth(c).user.role !== "operator") throw forbidden("operator_only", "This needs an operator account.");
  await next();
});
