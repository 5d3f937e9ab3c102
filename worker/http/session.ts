import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { createMiddleware } from "hono/factory";
import { authenticate, revokeAllSessions, revokeSession, type IssuedCookie } from "../auth/sessions";
import type { Session, User } from "../db/schema";
import { unauthorized } from "../errors";
import type { AppEnv } from "./context";

export const SESSION_COOKIE = "__Host-berth_session";

function setSessionCookie<E extends AppEnv>(c: Context<E>, cookie: IssuedCookie): void {
  setCookie(c, SESSION_COOKIE, cookie.value, {
    path: "/",
    secure: true,
    httpOnly: true,
    sameSite: "Lax",
    expires: cookie.expiresAt,
  });
}

function clearSessionCookie<E extends AppEnv>(c: Context<E>): void {
  deleteCookie(c, SESSION_COOKIE, { path: "/", secure: true, httpOnly: true, sameSite: "Lax" });
}

/** Gives this browser a new session, ending the one it held (no session fixation). */
export async function startSession<E extends AppEnv>(c: Context<E>, cookie: IssuedCookie): Promise<void> {
  if (c.var.auth) await revokeSession(c.var.ctx.db, c.var.auth.session.id);
  c.set("auth", null);
  setSessionCookie(c, cookie);
}

/** Ends this browser's session, or with `everywhere` every session of its account, and clears the cookie. */
export async function endSession<E extends AppEnv>(c: Context<E>, scope: "here" | "everywhere" = "here"): Promise<void> {
  const auth = c.var.auth;
  if (auth && scope === "everywhere") await revokeAllSessions(c.var.ctx.db, auth.user.id);
  else if (auth) await revokeSession(c.var.ctx.db, auth.session.id);
  forgetSession(c);
}

/** For flows that already revoked every session server-side: drop this browser's cookie too. */
export function forgetSession<E extends AppEnv>(c: Context<E>): void {
  c.set("auth", null);
  clearSessionCookie(c);
}

/** Resolves the session cookie, if any, into `c.var.auth`, and re-sends it when it slid forward. */
export const loadSession = createMiddleware<AppEnv>(async (c, next) => {
  const value = getCookie(c, SESSION_COOKIE);
  const { db, config, now } = c.var.ctx;
  const auth = value ? await authenticate(db, config.sessionKeyringSecret, value, now) : null;
  c.set("auth", auth);
  await next();
  if (auth?.reissue && c.get("auth") === auth) setSessionCookie(c, auth.reissue);
});

/** What handlers behind requireSession or requireLogin read from `c.var`: whose session it is. */
export interface SessionAppEnv extends AppEnv {
  Variables: AppEnv["Variables"] & { user: User; session: Session };
}

function withSession(refuse: (c: Context<SessionAppEnv>) => Response) {
  return createMiddleware<SessionAppEnv>(async (c, next) => {
    const auth = c.var.auth;
    if (!auth) return refuse(c);
    c.set("user", auth.user);
    c.set("session", auth.session);
    await next();
  });
}

/** For API routes: a session, or a 401 before the handler runs. */
export const requireSession = withSession(() => {
  throw unauthorized();
});

/** For pages: a session, or the log-in page. */
export const requireLogin = withSession((c) => c.redirect("/login", 303));
