import { createMiddleware } from "hono/factory";
import { forbidden } from "../errors";
import type { AppEnv } from "./context";

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * Refuses unsafe requests that a browser sent from any other origin. Customer
 * homeservers live on our subdomains, which are same-SITE, so SameSite=Lax
 * alone would let them post with our cookie: the check is exact-origin.
 *
 * Sec-Fetch-Site decides when present: our pages send Referrer-Policy
 * no-referrer, under which browsers post same-origin forms with `Origin: null`.
 * Without it, Origin must be ours. A request with neither comes from a client
 * that is not a browser, which carries no victim's cookie and so cannot be
 * forged across sites.
 */
export const csrfProtection = createMiddleware<AppEnv>(async (c, next) => {
  if (SAFE_METHODS.has(c.req.method)) return next();
  const fetchSite = c.req.header("sec-fetch-site");
  const origin = c.req.header("origin");
  const sameOrigin =
    fetchSite !== undefined ? fetchSite === "same-origin" || fetchSite === "none" : origin === undefined || origin === new URL(c.req.url).origin;
  if (!sameOrigin) throw forbidden("csrf_rejected", "Cross-site request refused.");
  return next();
});
