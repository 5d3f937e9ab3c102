import type { CheckResultView, ServerCheckView } from "../checks/results";
import type { CheckResultKind } from "../checks/registry";
import type { User } from "../db/schema";
import { Alert, Layout, SECURITY_PATH } from "./layout";
import { ServerNav } from "./server-nav";
import { when } from "./servers";

/** A result in words: never colour alone. */
export const RESULT_WORDS: Record<CheckResultKind, string> = {
  holds: "Holds",
  fails: "Fails",
  could_not_check: "Could not check",
};

function Latest(props: { check: ServerCheckView }) {
  const { check } = props;
  if (!check.latest) {
    return (
      <p>
        <strong>Not yet:</strong> it runs every {check.every}; its first result shows here.
      </p>
    );
  }
  return <Evidence result={check.latest} />;
}

/** A result in words, with the facts behind it. */
export function Evidence(props: { result: CheckResultView }) {
  const { result } = props;
  return (
    <>
      <p class={`check-result ${result.result}`}>
        <strong>{RESULT_WORDS[result.result]}</strong>, checked {when(result.checkedAt)}: {result.summary}
      </p>
      {result.facts.length > 0 ? (
        <dl class="facts">
          {result.facts.map((fact) => (
            <>
              <dt>{fact.label}</dt>
              <dd>{fact.value}</dd>
            </>
          ))}
        </dl>
      ) : null}
    </>
  );
}

function History(props: { check: ServerCheckView }) {
  const { check } = props;
  if (check.history.length === 0) return null;
  return (
    <>
      <h3>The last 30 days</h3>
      <div class="scroll">
        <table>
          <caption class="visually-hidden">Results of the {check.id} check in the last 30 days, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Checked</th>
              <th scope="col">Result</th>
              <th scope="col">Evidence</th>
            </tr>
          </thead>
          <tbody>
            {check.history.map((entry) => (
              <tr>
                <td>{when(entry.checkedAt)}</td>
                <td>{RESULT_WORDS[entry.result]}</td>
                <td>{entry.summary}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </>
  );
}

/** A homeserver's Security tab: each promise with its latest result and evidence, 30 days of history, and "check now". */
export function ServerSecurityPage(props: {
  user: User;
  serverId: string;
  serverName: string;
  running: boolean;
  checking: boolean;
  checks: ServerCheckView[];
  error?: string | undefined;
  notice?: string | undefined;
}) {
  return (
    <Layout title={`Security of ${props.serverName}`} viewer={props.user}>
      <p>
        <a href={`/servers/${props.serverId}`}>← {props.serverName}</a>
      </p>
      <h1>Security of {props.serverName}</h1>
      <ServerNav serverId={props.serverId} current="security" />
      <Alert kind="notice" message={props.notice} />
      <Alert kind="error" message={props.error} />
      <p>
        Each promise of our <a href={SECURITY_PATH}>security page</a> about your homeserver and your account is checked every day, against your homeserver as it
        runs. Here is what each check found, and why.
      </p>
      {props.checking ? (
        <p class="alert notice" role="status">
          The checks are running now: reload this page in a minute to see their results.
        </p>
      ) : null}
      <form method="post" action={`/servers/${props.serverId}/security/check`}>
        <button type="submit" disabled={!props.running || props.checking}>
          Check now
        </button>
        {props.running ? null : <span class="hint"> Checks run while the homeserver is running.</span>}
      </form>
      {props.checks.map((check) => (
        <section id={check.id} class="card" aria-labelledby={`${check.id}-heading`}>
          <h2 id={`${check.id}-heading`}>{check.promise}</h2>
          <Latest check={check} />
          <p class="hint">{check.covers}</p>
          <History check={check} />
        </section>
      ))}
    </Layout>
  );
}
