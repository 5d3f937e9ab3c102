import { Hono } from "hono";
import { z } from "zod";
import { deleteAccount, describeAccountDeletion } from "../account/deletion";
import { whatWeCanSee } from "../account/visibility";
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
import type { RequestContext } from "../context";
import type { User } from "../db/schema";
import type { AppEnv } from "../http/context";
import { handleForm, submitForm, type PageContext } from "../http/forms";
import { endSession, forgetSession, requireLogin, startSession } from "../http/session";
import { parseWith } from "../http/validation";
import { AccountPage, DeletionTermsList } from "../pages/account";
import { ConfirmTokenPage, ForgotPasswordPage, LoginPage, MessagePage, ResetPasswordPage, SignupPage } from "../pages/auth";
import { HomePage } from "../pages/home";
import { noticeFor, type NoticeKey } from "../pages/layout";
import { STYLESHEET } from "../pages/styles";

/** The account page with what it shows besides the user: what we can see, and what deletion would do. */
async function accountPage(ctx: RequestContext, user: User, state: { notice?: string | undefined; error?: string | undefined }) {
  const [visibility, deletion] = await Promise.all([whatWeCanSee(ctx, user.id), describeAccountDeletion(ctx.db, user.id, ctx.now)]);
  return <AccountPage user={user} visibility={visibility} deletion={deletion} {...state} />;
}

// The account pages: server-rendered, and their forms work without JavaScript.

const redirectWithNotice = <E extends AppEnv>(c: PageContext<E>, path: string, notice: NoticeKey) => c.redirect(`${path}?notice=${notice}`, 303);

const tokenField = z.object({ token: z.string().min(1, "is missing").max(256) });

export const pageRoutes = new Hono<AppEnv>()
  .get("/assets/app.css", (c) => {
    c.header("Cache-Control", "public, max-age=3600");
    return c.body(STYLESHEET, 200, { "Content-Type": "text/css; charset=utf-8" });
  })
  .get("/", (c) => c.html(<HomePage viewer={c.var.auth?.user ?? null} />))

  .get("/signup", (c) => c.html(<SignupPage />))
  .post("/signup", (c) =>
    submitForm(
      c,
      async (fields) => {
        const { email, password } = parseWith(z.object({ email: emailSchema, password: passwordSchema }), fields);
        await signUp(c.var.ctx, email, password);
        return redirectWithNotice(c, "/login", "signed_up");
      },
      (error, fields) => <SignupPage error={error} email={fields.email} />,
    ),
  )

  .get("/login", (c) => c.html(<LoginPage notice={noticeFor(c.req.query("notice"))} />))
  .post("/login", (c) =>
    submitForm(
      c,
      async (fields) => {
        const { email, password } = parseWith(z.object({ email: emailSchema, password: currentPasswordSchema }), fields);
        const { cookie } = await logIn(c.var.ctx, email, password);
        await startSession(c, cookie);
        return c.redirect("/account", 303);
      },
      (error, fields) => <LoginPage error={error} email={fields.email} />,
    ),
  )

  .post("/logout", async (c) => {
    await endSession(c);
    return redirectWithNotice(c, "/login", "logged_out");
  })
  .post("/logout-all", async (c) => {
    await endSession(c, "everywhere");
    return redirectWithNotice(c, "/login", "logged_out_everywhere");
  })

  .get("/verify-email", (c) =>
    c.html(
      <ConfirmTokenPage
        title="Confirm your email address"
        text="Press the button to confirm this address for your Berth account."
        action="/verify-email"
        token={c.req.query("token") ?? ""}
        button="Confirm my email"
        viewer={c.var.auth?.user ?? null}
      />,
    ),
  )
  .post("/verify-email", async (c) => {
    const viewer = c.var.auth?.user ?? null;
    return submitForm(
      c,
      async (fields) => {
        await verifyEmail(c.var.ctx, parseWith(tokenField, fields).token);
        return c.html(<MessagePage title="Email confirmed" message="Your email address is confirmed." viewer={viewer} />);
      },
      (error) => <MessagePage title="Link not valid" message={error} viewer={viewer} status="error" />,
    );
  })

  .get("/forgot-password", (c) => c.html(<ForgotPasswordPage notice={noticeFor(c.req.query("notice"))} />))
  .post("/forgot-password", (c) =>
    submitForm(
      c,
      async (fields) => {
        await requestPasswordReset(c.var.ctx, parseWith(z.object({ email: emailSchema }), fields).email);
        return redirectWithNotice(c, "/forgot-password", "reset_sent");
      },
      (error, fields) => <ForgotPasswordPage error={error} email={fields.email} />,
    ),
  )

  .get("/reset-password", (c) => c.html(<ResetPasswordPage token={c.req.query("token") ?? ""} />))
  .post("/reset-password", (c) =>
    submitForm(
      c,
      async (fields) => {
        const { token, password } = parseWith(tokenField.extend({ password: passwordSchema }), fields);
        await confirmPasswordReset(c.var.ctx, token, password);
        forgetSession(c);
        return redirectWithNotice(c, "/login", "password_reset");
      },
      (error, fields) => <ResetPasswordPage token={fields.token ?? ""} error={error} />,
    ),
  )

  .get("/confirm-email-change", (c) =>
    c.html(
      <ConfirmTokenPage
        title="Confirm your new email address"
        text="Press the button to make this address your Berth account's email. You will be logged out everywhere."
        action="/confirm-email-change"
        token={c.req.query("token") ?? ""}
        button="Confirm new address"
        viewer={c.var.auth?.user ?? null}
      />,
    ),
  )
  .post("/confirm-email-change", (c) =>
    submitForm(
      c,
      async (fields) => {
        await confirmEmailChange(c.var.ctx, parseWith(tokenField, fields).token);
        forgetSession(c);
        return redirectWithNotice(c, "/login", "email_changed");
      },
      (error) => <MessagePage title="Link not valid" message={error} status="error" />,
    ),
  )

  .get("/account", requireLogin, async (c) => c.html(await accountPage(c.var.ctx, c.var.user, { notice: noticeFor(c.req.query("notice")) })))
  .post("/account/resend-verification", requireLogin, async (c) => {
    const { user } = c.var;
    return handleForm(
      c,
      async () => {
        await resendVerification(c.var.ctx, user);
        return redirectWithNotice(c, "/account", "verification_sent");
      },
      (error) => accountPage(c.var.ctx, user, { error }),
    );
  })
  .post("/account/email", requireLogin, async (c) => {
    const { user } = c.var;
    return submitForm(
      c,
      async (fields) => {
        const { newEmail, password } = parseWith(z.object({ newEmail: emailSchema, password: currentPasswordSchema }), fields);
        await requestEmailChange(c.var.ctx, user, newEmail, password);
        return redirectWithNotice(c, "/account", "email_change_sent");
      },
      (error) => accountPage(c.var.ctx, user, { error }),
    );
  })
  .post("/account/delete", requireLogin, async (c) => {
    const { user, session } = c.var;
    return submitForm(
      c,
      async (fields) => {
        const { password } = parseWith(z.object({ password: currentPasswordSchema }), fields);
        const terms = await deleteAccount(c.var.ctx, user, session.id, password);
        forgetSession(c);
        return c.html(
          <MessagePage title="Your account is deleted" message="We emailed you a confirmation of what follows.">
            <DeletionTermsList deletion={terms} />
          </MessagePage>,
        );
      },
      (error) => accountPage(c.var.ctx, user, { error }),
    );
  })
  .post("/account/password", requireLogin, async (c) => {
    const { user, session } = c.var;
    return submitForm(
      c,
      async (fields) => {
        const body = parseWith(z.object({ currentPassword: currentPasswordSchema, newPassword: passwordSchema }), fields);
        await changePassword(c.var.ctx, user, session.id, body.currentPassword, body.newPassword);
        return redirectWithNotice(c, "/account", "password_changed");
      },
      (error) => accountPage(c.var.ctx, user, { error }),
    );
  });
