import { AWAITING_DELEGATION_DAYS } from "../checks/delegation";
import type { CheckResultView } from "../checks/results";
import type { User } from "../db/schema";
import type { WellKnown } from "../servers/delegation";
import { Alert, Layout } from "./layout";
import { Evidence } from "./server-security";

/** What a homeserver named by its owner's domain needs published there, and whether it is. */
export interface DelegationPageView {
  serverId: string;
  serverName: string;
  status: string;
  wellKnown: { server: WellKnown; client: WellKnown };
  check: CheckResultView | null;
  checking: boolean;
  publishLaterWarning: string | null;
}

function Document(props: { id: string; title: string; wellKnown: WellKnown }) {
  const { wellKnown } = props;
  return (
    <section class="card" aria-labelledby={`${props.id}-heading`}>
      <h2 id={`${props.id}-heading`}>{props.title}</h2>
      <p>
        Publish at <code>{wellKnown.url}</code> exactly this:
      </p>
      <pre>
        <code>{JSON.stringify(wellKnown.document)}</code>
      </pre>
      <p>with these response headers:</p>
      <pre>
        <code>
          {Object.entries(wellKnown.headers)
            .map(([name, value]) => `${name}: ${value}`)
            .join("\n")}
        </code>
      </pre>
    </section>
  );
}

/** A homeserver's delegation page: the two well-knowns to publish, the latest check and what is wrong, "check again" and, while it waits, "publish later". */
export function DelegationPage(props: { user: User; view: DelegationPageView; error?: string | undefined; notice?: string | undefined }) {
  const { view } = props;
  const waiting = view.status === "awaiting_delegation";
  return (
    <Layout title={`Delegation of ${view.serverName}`} viewer={props.user}>
      <p>
        <a href={`/servers/${view.serverId}`}>← {view.serverName}</a>
      </p>
      <h1>Delegation of {view.serverName}</h1>
      <Alert kind="notice" message={props.notice} />
      <Alert kind="error" message={props.error} />
      <p>
        Your homeserver's Matrix name is your domain, {view.serverName}; we serve it at our address. Two small files on your domain tell Matrix apps and other
        servers where to find it. We need no certificate for your domain, but your domain must answer HTTPS with a valid one of its own.
      </p>
      {waiting ? (
        <p class="alert notice" role="status">
          Your homeserver is set up as soon as both files are right: we check them every hour, and whenever you ask. If they are not right within{" "}
          {AWAITING_DELEGATION_DAYS} days of creating it, it is deleted (nothing of it was made) and your domain is free again.
        </p>
      ) : null}
      {waiting ? (
        <p>
          Moving {view.serverName} here from another host? <a href={`/servers/${view.serverId}/import`}>Import it from an archive</a> before it is set up.
        </p>
      ) : null}
      <Document id="server-well-known" title="For other Matrix servers" wellKnown={view.wellKnown.server} />
      <Document id="client-well-known" title="For Matrix apps" wellKnown={view.wellKnown.client} />
      <section class="card" aria-labelledby="check-heading">
        <h2 id="check-heading">The latest check</h2>
        {view.check ? <Evidence result={view.check} /> : <p>No result yet.</p>}
        {view.checking ? (
          <p class="alert notice" role="status">
            The files are being checked now: reload this page in a moment to see the result.
          </p>
        ) : null}
        <form method="post" action={`/servers/${view.serverId}/delegation/check`}>
          <button type="submit" disabled={view.checking}>
            Check again
          </button>
        </form>
      </section>
      {waiting ? (
        <section class="card" aria-labelledby="later-heading">
          <h2 id="later-heading">Set it up now, publish later</h2>
          <p>
            <strong>Warning:</strong> {view.publishLaterWarning}
          </p>
          <form method="post" action={`/servers/${view.serverId}/delegation/publish-later`}>
            <div class="field">
              <label for="field-confirm">
                <input id="field-confirm" type="checkbox" name="confirm" value="yes" required /> I understand: federation and Matrix apps fail until I publish
                both files.
              </label>
            </div>
            <button type="submit">Set up my homeserver now</button>
          </form>
        </section>
      ) : null}
    </Layout>
  );
}
