import { createMiddleware } from "hono/factory";
import { forbidden } from "../errors";
import type { AppEnv } from "./context";

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * Refuses unsafe requests that a browser sent from any other origin. Customer
 * homeservers live on our subdomains, which are same-SITE, so SameSite=Lax
 * alone would let them post with our cookie: the check is exact-origin.
 * Browsers always send Origin or Sec-Fetch-Site on such requests; a request
 * with neither comes from a non-browser client, which carries no ambient
 * cookie of a victim and so cannot be forged across sites.
 */
export const csrfProtection = createMiddleware<AppEnv>(async (c, next) => {
  if (SAFE_METHODS.has(c.req.method)) return next();
  const origin = c.req.header("origin");
  const fetchSite = c.req.header("sec-fetch-site");
  const ownOrigin = new URL(c.req.url).origin;
  if (origin !== undefined ? origin !== ownOrigin : fetchSite !== undefined && fetchSite !== "same-origin" && fetchSite !== "none") {
    throw forbidden("csrf_rejected", "Cross-site request refused.");
  }
  return next();
});
