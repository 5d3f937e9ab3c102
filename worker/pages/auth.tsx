import type { Child } from "hono/jsx";
import { PASSWORD_MAX, PASSWORD_MIN } from "../auth/credentials";
import { Alert, Field, Layout, type Viewer } from "./layout";

const passwordHint = `${PASSWORD_MIN} to ${PASSWORD_MAX} characters. A long passphrase is best.`;

interface FormState {
  error?: string | undefined;
  notice?: string | undefined;
  email?: string | undefined;
}

export function SignupPage(props: FormState) {
  return (
    <Layout title="Sign up">
      <h1>Create your account</h1>
      <Alert kind="error" message={props.error} />
      <form method="post" action="/signup" class="card">
        <Field label="Email" name="email" type="email" value={props.email} autocomplete="email" />
        <Field
          label="Password"
          name="password"
          type="password"
          autocomplete="new-password"
          minlength={PASSWORD_MIN}
          maxlength={PASSWORD_MAX}
          hint={passwordHint}
        />
        <button type="submit">Sign up</button>
      </form>
      <p>
        Already have an account? <a href="/login">Log in</a>
      </p>
    </Layout>
  );
}

export function LoginPage(props: FormState) {
  return (
    <Layout title="Log in">
      <h1>Log in</h1>
      <Alert kind="notice" message={props.notice} />
      <Alert kind="error" message={props.error} />
      <form method="post" action="/login" class="card">
        <Field label="Email" name="email" type="email" value={props.email} autocomplete="username" />
        <Field label="Password" name="password" type="password" autocomplete="current-password" />
        <button type="submit">Log in</button>
      </form>
      <p>
        <a href="/forgot-password">Forgot your password?</a> · <a href="/signup">Create an account</a>
      </p>
    </Layout>
  );
}

/** Opening an emailed link shows a button; only pressing it spends the token, so mail scanners cannot. */
export function ConfirmTokenPage(props: {
  title: string;
  text: string;
  action: string;
  token: string;
  button: string;
  error?: string | undefined;
  viewer?: Viewer | null;
}) {
  return (
    <Layout title={props.title} viewer={props.viewer}>
      <h1>{props.title}</h1>
      <Alert kind="error" message={props.error} />
      <form method="post" action={props.action} class="card">
        <p>{props.text}</p>
        <input type="hidden" name="token" value={props.token} />
        <button type="submit">{props.button}</button>
      </form>
    </Layout>
  );
}

export function MessagePage(props: {
  title: string;
  message: string;
  viewer?: Viewer | null;
  status?: "error";
  next?: { href: string; label: string };
  children?: Child;
}) {
  const next = props.next ?? (props.viewer ? { href: "/account", label: "Go to your account" } : { href: "/login", label: "Log in" });
  return (
    <Layout title={props.title} viewer={props.viewer}>
      <h1>{props.title}</h1>
      <Alert kind={props.status ?? "notice"} message={props.message} />
      {props.children}
      <p>
        <a href={next.href}>{next.label}</a>
      </p>
    </Layout>
  );
}

/** What a homeserver's page answers for a server that is not the viewer's (or not at all): the refusal's message, and the way back. */
export const noSuchServerPage = (viewer: Viewer) => (error: string) => (
  <MessagePage title="No such server" message={error} viewer={viewer} status="error" next={{ href: "/servers", label: "Your homeservers" }} />
);

export function ForgotPasswordPage(props: FormState) {
  return (
    <Layout title="Forgot password">
      <h1>Forgot your password?</h1>
      <Alert kind="notice" message={props.notice} />
      <Alert kind="error" message={props.error} />
      <form method="post" action="/forgot-password" class="card">
        <p>We will email a link to reset it. The link works once, for one hour.</p>
        <Field label="Email" name="email" type="email" value={props.email} autocomplete="email" />
        <button type="submit">Send reset link</button>
      </form>
    </Layout>
  );
}

export function ResetPasswordPage(props: { token: string; error?: string | undefined }) {
  return (
    <Layout title="Choose a new password">
      <h1>Choose a new password</h1>
      <Alert kind="error" message={props.error} />
      <form method="post" action="/reset-password" class="card">
        <input type="hidden" name="token" value={props.token} />
        <Field
          label="New password"
          name="password"
          type="password"
          autocomplete="new-password"
          minlength={PASSWORD_MIN}
          maxlength={PASSWORD_MAX}
          hint={`${passwordHint} Every session will be logged out.`}
        />
        <button type="submit">Set new password</button>
      </form>
    </Layout>
  );
}
