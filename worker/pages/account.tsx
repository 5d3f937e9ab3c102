import type { DeletionTerms } from "../account/deletion";
import type { WhatWeCanSee } from "../account/visibility";
import { PASSWORD_MAX, PASSWORD_MIN } from "../auth/credentials";
import type { User } from "../db/schema";
import { Alert, Field, Layout } from "./layout";

export interface AccountPageProps {
  user: User;
  visibility: WhatWeCanSee;
  deletion: DeletionTerms;
  notice?: string | undefined;
  error?: string | undefined;
}

const count = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** The security page's "what we can see", with this customer's own data or counts in each category. */
function WhatWeCanSeeSection({ visibility: v }: { visibility: WhatWeCanSee }) {
  const samples = v.usage.reduce((total, server) => total + server.sampleCount, 0);
  return (
    <section class="card" aria-labelledby="visibility-heading">
      <h2 id="visibility-heading">What we can see</h2>
      <p>
        <strong>{v.cannotSee}</strong> This is everything we hold about you, by category:
      </p>
      <dl class="visibility">
        <dt>Account info</dt>
        <dd>
          {v.account.email} ({v.account.emailVerified ? "verified" : "not verified"}), since {v.account.createdAt.slice(0, 10)};{" "}
          {count(v.account.activeSessions, "active session")}
        </dd>
        <dt>Billing records</dt>
        <dd>
          Subscription: {v.billing.subscriptionStatus}
          {v.billing.plan ? ` (${v.billing.plan})` : ""}; {count(v.billing.invoiceCount, "invoice")}. No card data: Stripe holds it.
        </dd>
        <dt>Server-level resource usage</dt>
        <dd>
          {count(samples, "usage sample")} (CPU, memory, network, disk) for {count(v.usage.length, "homeserver")}
        </dd>
        <dt>Matrix metadata</dt>
        <dd>
          {v.matrixMetadata.length === 0
            ? "No homeservers."
            : v.matrixMetadata.map((server) => (
                <span class="visibility-server">
                  {server.serverName}: {server.status}
                  {server.synapseVersion ? `, Synapse ${server.synapseVersion}` : ""}
                  {server.adminUserId ? `, admin ${server.adminUserId}` : ""}
                </span>
              ))}
        </dd>
      </dl>
      <p>
        <a href="/api/me/export" download>
          Download all of it (JSON)
        </a>
        : every category above in full, and nothing else.
      </p>
    </section>
  );
}

/** Says exactly what deleting the account does, before the customer confirms it with their password. */
function DeleteAccountSection({ deletion }: { deletion: DeletionTerms }) {
  return (
    <section class="card" aria-labelledby="delete-heading">
      <h2 id="delete-heading">Delete your account</h2>
      <DeletionTermsList deletion={deletion} />
      <form method="post" action="/account/delete">
        <Field label="Current password" name="password" id="delete-password" type="password" autocomplete="current-password" />
        <button type="submit" class="danger">
          Delete my account
        </button>
      </form>
    </section>
  );
}

export function DeletionTermsList({ deletion }: { deletion: DeletionTerms }) {
  return (
    <>
      {deletion.servers.length ? (
        <p>
          Your homeservers ({deletion.servers.map((server) => server.name).join(", ")}) are deleted: a final backup is taken first, then each is destroyed on
          its host.
        </p>
      ) : null}
      <p>Deleted now:</p>
      <ul>
        {deletion.deletedNow.map((item) => (
          <li>{item}</li>
        ))}
      </ul>
      <p>Kept:</p>
      <ul>
        {deletion.kept.map((item) => (
          <li>{item}</li>
        ))}
      </ul>
      <p>Everything else is destroyed by {deletion.destroyedBy.slice(0, 10)} at the latest.</p>
    </>
  );
}

export function AccountPage(props: AccountPageProps) {
  const { user } = props;
  return (
    <Layout title="Account" viewer={user}>
      <h1>Your account</h1>
      <Alert kind="notice" message={props.notice} />
      <Alert kind="error" message={props.error} />

      <section class="card" aria-labelledby="email-heading">
        <h2 id="email-heading">Email</h2>
        <p>
          <strong>{user.email}</strong> {user.emailVerifiedAt ? <span class="badge ok">verified</span> : <span class="badge warn">not verified</span>}
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

      <WhatWeCanSeeSection visibility={props.visibility} />
      <DeleteAccountSection deletion={props.deletion} />
    </Layout>
  );
}
