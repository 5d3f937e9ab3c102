import { PASSWORD_MAX, PASSWORD_MIN } from "../auth/credentials";
import type { User } from "../db/schema";
import { Alert, Field, Layout } from "./layout";

export function AccountPage(props: { user: User; notice?: string | undefined; error?: string | undefined }) {
  const { user } = props;
  return (
    <Layout title="Account" viewer={user}>
      <h1>Your account</h1>
      <Alert kind="notice" message={props.notice} />
      <Alert kind="error" message={props.error} />

      <section class="card" aria-labelledby="email-heading">
        <h2 id="email-heading">Email</h2>
        <p>
          <strong>{user.email}</strong>{" "}
          {user.emailVerifiedAt ? (
            <span class="badge ok">verified</span>
          ) : (
            <span class="badge warn">not verified</span>
          )}
        </p>
        {user.emailVerifiedAt ? null : (
          <form method="post" action="/account/resend-verification">
            <p>You need a verified address before you can subscribe.</p>
            <button type="submit">Send a new confirmation link</button>
          </form>
        )}
        <form method="post" action="/account/email">
          <h3>Change email</h3>
          <p class="hint">We send a confirmation link to the new address and tell the old one.</p>
          <Field label="New email" name="newEmail" type="email" autocomplete="email" />
          <Field label="Current password" name="password" type="password" autocomplete="current-password" />
          <button type="submit">Change email</button>
        </form>
      </section>

      <section class="card" aria-labelledby="password-heading">
        <h2 id="password-heading">Password</h2>
        <form method="post" action="/account/password">
          <Field label="Current password" name="currentPassword" type="password" autocomplete="current-password" />
          <Field
            label="New password"
            name="newPassword"
            type="password"
            autocomplete="new-password"
            minlength={PASSWORD_MIN}
            maxlength={PASSWORD_MAX}
            hint="Other sessions are logged out when you change it."
          />
          <button type="submit">Change password</button>
        </form>
      </section>

      <section class="card" aria-labelledby="sessions-heading">
        <h2 id="sessions-heading">Sessions</h2>
        <form method="post" action="/logout-all">
          <p>Lost a device? End every session, this one included.</p>
          <button type="submit" class="danger">
            Log out everywhere
          </button>
        </form>
      </section>
    </Layout>
  );
}
