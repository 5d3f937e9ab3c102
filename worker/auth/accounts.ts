import { and, eq } from "drizzle-orm";
import type { RequestContext } from "../context";
import { isUniqueViolation, type Database } from "../db/client";
import { users, type User } from "../db/schema";
import { badRequest, conflict, forbidden, unauthorized } from "../errors";
import { mailerFor, type Mail } from "../mail/mailer";
import { templates } from "../mail/templates";
import { burnVerificationTime, hashPassword, needsRehash, verifyPassword } from "./password";
import { clearRateLimit, consumeRateLimits, type RateLimitCheck } from "./rate-limit";
import { createSession, revokeAllSessions } from "./sessions";
import { consumeToken, issueToken, revokeTokens } from "./tokens";

const throttle = (ctx: RequestContext, checks: RateLimitCheck[]) => consumeRateLimits(ctx.db, ctx.config.rateLimits, checks, ctx.now);

const send = (ctx: RequestContext, mail: Mail) => mailerFor(ctx).send(mail);

/** One account as guessed at from one client: the subject of the per-account-and-client limits. */
const accountFromClient = (ctx: RequestContext, email: string) => `${email}\n${ctx.client}`;

/**
 * Counts one wrong password given under a session (to change the password or
 * delete the account): per session, so that guessing at the log-in, which
 * anyone who knows the address can do, never locks the owner out of these.
 */
export const throttlePasswordCheck = (ctx: RequestContext, sessionId: string) => throttle(ctx, [{ name: "password_check_session", subject: sessionId }]);

const invalidToken = () => badRequest("invalid_token", "This link is invalid, was already used, or has expired.");

async function findUserByEmail(db: Database, email: string): Promise<User | undefined> {
  const [user] = await db.select().from(users).where(eq(users.email, email));
  return user;
}

async function findUser(db: Database, id: string): Promise<User | undefined> {
  const [user] = await db.select().from(users).where(eq(users.id, id));
  return user;
}

async function sendVerification(ctx: RequestContext, user: Pick<User, "id" | "email">): Promise<void> {
  const token = await issueToken(ctx.db, user.id, "verify_email", user.email, ctx.now);
  await send(ctx, templates.verifyEmail(user.email, ctx.link(`/verify-email?token=${token}`)));
}

/**
 * Answers the same whether or not the address already has an account: a new
 * address gets a verification link, a known one a note that it is taken.
 * Both paths hash the password, so timing tells nothing either.
 */
export async function signUp(ctx: RequestContext, email: string, password: string): Promise<void> {
  await throttle(ctx, [
    { name: "signup_ip", subject: ctx.client },
    { name: "signup_email", subject: email },
  ]);
  const passwordHash = await hashPassword(password);
  const existing = await findUserByEmail(ctx.db, email);
  if (existing) {
    await send(ctx, templates.accountAlreadyExists(email, ctx.link("/login"), ctx.link("/forgot-password")));
    return;
  }
  const user = { id: crypto.randomUUID(), email, passwordHash, createdAt: ctx.now, updatedAt: ctx.now };
  const inserted = await ctx.db.insert(users).values(user).onConflictDoNothing().returning({ id: users.id });
  if (inserted.length === 0) {
    // Lost a race with a concurrent sign-up for the same address.
    await send(ctx, templates.accountAlreadyExists(email, ctx.link("/login"), ctx.link("/forgot-password")));
    return;
  }
  await sendVerification(ctx, user);
}

export async function verifyEmail(ctx: RequestContext, token: string): Promise<void> {
  const row = await consumeToken(ctx.db, token, "verify_email", ctx.now);
  if (!row) throw invalidToken();
  const verified = await ctx.db
    .update(users)
    .set({ emailVerifiedAt: ctx.now, updatedAt: ctx.now })
    // A link for an address the account no longer has proves nothing.
    .where(and(eq(users.id, row.userId), eq(users.email, row.email)))
    .returning({ id: users.id });
  if (verified.length === 0) throw invalidToken();
}

export async function resendVerification(ctx: RequestContext, user: User): Promise<void> {
  if (user.emailVerifiedAt) throw conflict("already_verified", "Your email address is already verified.");
  await throttle(ctx, [
    { name: "verify_resend_ip", subject: ctx.client },
    { name: "verify_resend_account", subject: user.id },
  ]);
  await sendVerification(ctx, user);
}

export async function logIn(ctx: RequestContext, email: string, password: string) {
  const accountLimits: RateLimitCheck[] = [
    { name: "login_account_client", subject: accountFromClient(ctx, email) },
    { name: "login_account", subject: email },
  ];
  await throttle(ctx, [{ name: "login_ip", subject: ctx.client }, ...accountLimits]);
  const user = await findUserByEmail(ctx.db, email);
  if (!user) {
    await burnVerificationTime(password);
    throw unauthorized("Email or password is incorrect.");
  }
  if (!(await verifyPassword(password, user.passwordHash))) throw unauthorized("Email or password is incorrect.");

  for (const limit of accountLimits) await clearRateLimit(ctx.db, ctx.config.rateLimits, limit, ctx.now);
  if (needsRehash(user.passwordHash)) {
    await ctx.db
      .update(users)
      .set({ passwordHash: await hashPassword(password), updatedAt: ctx.now })
      .where(eq(users.id, user.id));
  }
  return { user, ...(await createSession(ctx.db, ctx.config.sessionKeyringSecret, user.id, ctx.now)) };
}

/** Same answer, same kind of email, for known and unknown addresses. */
export async function requestPasswordReset(ctx: RequestContext, email: string): Promise<void> {
  await throttle(ctx, [
    { name: "password_reset_ip", subject: ctx.client },
    { name: "password_reset_email_client", subject: accountFromClient(ctx, email) },
    { name: "password_reset_email", subject: email },
  ]);
  const user = await findUserByEmail(ctx.db, email);
  if (!user) {
    await send(ctx, templates.passwordResetWithoutAccount(email, ctx.link("/signup")));
    return;
  }
  const token = await issueToken(ctx.db, user.id, "password_reset", user.email, ctx.now);
  await send(ctx, templates.passwordReset(user.email, ctx.link(`/reset-password?token=${token}`)));
}

/** Sets the new password and logs out every session; the user then logs in afresh. */
export async function confirmPasswordReset(ctx: RequestContext, token: string, password: string): Promise<void> {
  const row = await consumeToken(ctx.db, token, "password_reset", ctx.now);
  if (!row) throw invalidToken();
  const user = await findUser(ctx.db, row.userId);
  if (!user || user.email !== row.email) throw invalidToken();
  await ctx.db
    .update(users)
    .set({
      passwordHash: await hashPassword(password),
      // The link reached this inbox, which proves the address.
      emailVerifiedAt: user.emailVerifiedAt ?? ctx.now,
      updatedAt: ctx.now,
    })
    .where(eq(users.id, user.id));
  await revokeAllSessions(ctx.db, user.id);
  await revokeTokens(ctx.db, user.id, ["email_change"]);
  await send(ctx, templates.passwordChanged(user.email, ctx.link("/forgot-password")));
}

async function requireCurrentPassword(user: User, password: string): Promise<void> {
  if (!(await verifyPassword(password, user.passwordHash))) {
    throw forbidden("invalid_password", "Your current password is incorrect.");
  }
}

/** Changes the password from a logged-in session, which stays; every other session is logged out. */
export async function changePassword(ctx: RequestContext, user: User, sessionId: string, currentPassword: string, newPassword: string): Promise<void> {
  await throttlePasswordCheck(ctx, sessionId);
  await requireCurrentPassword(user, currentPassword);
  await ctx.db
    .update(users)
    .set({ passwordHash: await hashPassword(newPassword), updatedAt: ctx.now })
    .where(eq(users.id, user.id));
  await revokeAllSessions(ctx.db, user.id, sessionId);
  await revokeTokens(ctx.db, user.id, ["password_reset", "email_change"]);
  await send(ctx, templates.passwordChanged(user.email, ctx.link("/forgot-password")));
}

/**
 * Sends a confirmation link to the NEW address and tells the old one. Whether
 * the new address already has an account is not revealed to the requester:
 * that address gets a note instead of a link.
 */
export async function requestEmailChange(ctx: RequestContext, user: User, newEmail: string, password: string): Promise<void> {
  await throttle(ctx, [{ name: "email_change_account", subject: user.id }]);
  await requireCurrentPassword(user, password);
  if (newEmail === user.email) throw badRequest("same_email", "That is already your email address.");
  const taken = await findUserByEmail(ctx.db, newEmail);
  if (taken) {
    await revokeTokens(ctx.db, user.id, ["email_change"]);
    await send(ctx, templates.emailChangeTargetTaken(newEmail, ctx.link("/login")));
  } else {
    const token = await issueToken(ctx.db, user.id, "email_change", newEmail, ctx.now);
    await send(ctx, templates.confirmEmailChange(newEmail, ctx.link(`/confirm-email-change?token=${token}`)));
  }
  await send(ctx, templates.emailChangeRequested(user.email, newEmail, ctx.link("/forgot-password")));
}

/** Moves the account to the confirmed address, logs out every session and tells the old address. */
export async function confirmEmailChange(ctx: RequestContext, token: string): Promise<void> {
  const row = await consumeToken(ctx.db, token, "email_change", ctx.now);
  if (!row) throw invalidToken();
  const user = await findUser(ctx.db, row.userId);
  if (!user) throw invalidToken();
  try {
    await ctx.db.update(users).set({ email: row.email, emailVerifiedAt: ctx.now, updatedAt: ctx.now }).where(eq(users.id, user.id));
  } catch (error) {
    // The address got its own account after the link was sent.
    if (isUniqueViolation(error)) throw conflict("email_taken", "That address now belongs to another account.");
    throw error;
  }
  await revokeAllSessions(ctx.db, user.id);
  await revokeTokens(ctx.db, user.id, ["verify_email", "password_reset"]);
  await send(ctx, templates.emailChanged(user.email, row.email));
}
