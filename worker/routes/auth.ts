import { Hono } from "hono";
import { z } from "zod";
import {
  changePassword,
  confirmEmailChange,
  confirmPasswordReset,
  logIn,
  requestEmailChange,
  requestPasswordReset,
  resendVerification,
  signUp,
  verifyEmail,
} from "../auth/accounts";
import { currentPasswordSchema, emailSchema, passwordSchema } from "../auth/credentials";
import type { AppEnv } from "../http/context";
import { endSession, forgetSession, requireSession, startSession } from "../http/session";
import { readJson } from "../http/validation";
import { publicUser } from "../http/present";

const credentials = z.strictObject({ email: emailSchema, password: passwordSchema });
const loginCredentials = z.strictObject({ email: emailSchema, password: currentPasswordSchema });
const tokenBody = z.strictObject({ token: z.string().min(1, "is required").max(256, "is too long") });

export const authRoutes = new Hono<AppEnv>()
  .post("/signup", async (c) => {
    const { email, password } = await readJson(c, credentials);
    await signUp(c.var.ctx, email, password);
    return c.json({ status: "pending_verification", message: "Check your inbox: we sent a link to confirm your address." }, 202);
  })
  .post("/verify-email", async (c) => {
    const { token } = await readJson(c, tokenBody);
    await verifyEmail(c.var.ctx, token);
    return c.json({ verified: true });
  })
  .post("/verify-email/resend", requireSession, async (c) => {
    await resendVerification(c.var.ctx, c.var.user);
    return c.json({ status: "sent" }, 202);
  })
  .post("/login", async (c) => {
    const { email, password } = await readJson(c, loginCredentials);
    const { user, cookie } = await logIn(c.var.ctx, email, password);
    await startSession(c, cookie);
    return c.json({ user: publicUser(user) });
  })
  .post("/logout", async (c) => {
    await endSession(c);
    return c.body(null, 204);
  })
  .post("/logout-all", requireSession, async (c) => {
    await endSession(c, "everywhere");
    return c.body(null, 204);
  })
  .post("/password-reset/request", async (c) => {
    const { email } = await readJson(c, z.strictObject({ email: emailSchema }));
    await requestPasswordReset(c.var.ctx, email);
    return c.json({ status: "sent", message: "If that address has an account, we sent it a reset link." }, 202);
  })
  .post("/password-reset/confirm", async (c) => {
    const { token, password } = await readJson(c, tokenBody.extend({ password: passwordSchema }));
    await confirmPasswordReset(c.var.ctx, token, password);
    return c.json({ status: "password_reset", message: "Your password was changed. Log in with it." });
  })
  .post("/password-change", requireSession, async (c) => {
    const { user, session } = c.var;
    const body = await readJson(c, z.strictObject({ currentPassword: currentPasswordSchema, newPassword: passwordSchema }));
    await changePassword(c.var.ctx, user, session.id, body.currentPassword, body.newPassword);
    return c.json({ status: "password_changed" });
  })
  .post("/email-change/request", requireSession, async (c) => {
    const { user } = c.var;
    const { newEmail, password } = await readJson(c, z.strictObject({ newEmail: emailSchema, password: currentPasswordSchema }));
    await requestEmailChange(c.var.ctx, user, newEmail, password);
    return c.json({ status: "sent", message: "Open the link we sent to the new address to confirm it." }, 202);
  })
  .post("/email-change/confirm", async (c) => {
    const { token } = await readJson(c, tokenBody);
    await confirmEmailChange(c.var.ctx, token);
    forgetSession(c);
    return c.json({ status: "email_changed", message: "Your email address was changed. Log in again." });
  });
