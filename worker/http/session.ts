import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { createMiddleware } from "hono/factory";
import { authenticate, type Authenticated, type IssuedCookie } from "../auth/sessions";
import { unauthorized } from "../errors";
import type { AppEnv } from "./context";

export const SESSION_COOKIE = "__Host-berth_session";

export function setSessionCookie(c: Context<AppEnv>, cookie: IssuedCookie): void {
  setCookie(c, SESSION_COOKIE, cookie.value, {
    path: "/",
    secure: true,
    httpOnly: true,
    sameSite: "Lax",
    expires: cookie.expiresAt,
  });
}

export function clearSessionCookie(c: Context<AppEnv>): void {
  deleteCookie(c, SESSION_COOKIE, { path: "/", secure: true, httpOnly: true, sameSite: "Lax" });
}

/** Resolves the session cookie, if any, into `c.var.auth`, and re-sends it when it slid forward. */
export const loadSession = createMiddleware<AppEnv>(async (c, next) => {
  const value = getCookie(c, SESSION_COOKIE);
  const auth = value ? await authenticate(c.var.db, c.env.SESSION_KEYRING_SECRET, value, c.var.now) : null;
  c.set("auth", auth);
  await next();
  if (auth?.reissue && c.get("auth") === auth) setSessionCookie(c, auth.reissue);
});

/** For API routes: the caller's session, or a 401. */
export function requireAuth(c: Context<AppEnv>): Authenticated {
  const auth = c.var.auth;
  if (!auth) throw unauthorized();
  return auth;
}
