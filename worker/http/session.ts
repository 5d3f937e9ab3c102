import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { createMiddleware } from "hono/factory";
import { authenticate, revokeAllSessions, revokeSession, type Authenticated, type IssuedCookie } from "../auth/sessions";
import { unauthorized } from "../errors";
import type { AppEnv } from "./context";

export const SESSION_COOKIE = "__Host-berth_session";

function setSessionCookie(c: Context<AppEnv>, cookie: IssuedCookie): void {
  setCookie(c, SESSION_COOKIE, cookie.value, {
    path: "/",
    secure: true,
    httpOnly: true,
    sameSite: "Lax",
    expires: cookie.expiresAt,
  });
}

function clearSessionCookie(c: Context<AppEnv>): void {
  deleteCookie(c, SESSION_COOKIE, { path: "/", secure: true, httpOnly: true, sameSite: "Lax" });
}

/** Gives this browser a new session, ending the one it held (no session fixation). */
export async function startSession(c: Context<AppEnv>, cookie: IssuedCookie): Promise<void> {
  if (c.var.auth) await revokeSession(c.var.db, c.var.auth.session.id);
  c.set("auth", null);
  setSessionCookie(c, cookie);
}

/** Ends this browser's session, or with `everywhere` every session of its account, and clears the cookie. */
export async function endSession(c: Context<AppEnv>, scope: "here" | "everywhere" = "here"): Promise<void> {
  const auth = c.var.auth;
  if (auth && scope === "everywhere") await revokeAllSessions(c.var.db, auth.user.id);
  else if (auth) await revokeSession(c.var.db, auth.session.id);
  forgetSession(c);
}

/** For flows that already revoked every session server-side: drop this browser's cookie too. */
export function forgetSession(c: Context<AppEnv>): void {
  c.set("auth", null);
  clearSessionCookie(c);
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
