import { promiseCheck, type CheckId } from "../checks/registry";
import { Layout, SECURITY_PATH, type Viewer } from "./layout";
import { HOW_WE_KEEP_IT, SECURITY_SECTIONS, type HowTopicId, type Statement } from "./security-statements";

export const howPath = (topic: HowTopicId) => `${SECURITY_PATH}/how/${topic}`;

/** A homeserver of the viewer's, by the name it is known by. */
export interface OwnServer {
  id: string;
  serverName: string;
  /** Whether its server name is the customer's own domain (the delegation check runs for it). */
  customServerName: boolean;
}

/** `servers`: a logged-in viewer's homeservers, each linked to its own latest result of the check. */
function CheckNote(props: { id: CheckId; servers: OwnServer[] | null }) {
  const check = promiseCheck(props.id);
  const subject =
    check.subject === "account" ? "for your account" : check.customServerNamesOnly ? "for each homeserver named by its own domain" : "for each homeserver";
  const servers = props.servers?.filter((server) => !check.customServerNamesOnly || server.customServerName) ?? [];
  return (
    <>
      <p class="hint">
        Checked every {check.every} {subject} (check <code>{check.id}</code>): {check.covers}
      </p>
      {servers.length > 0 ? (
        <p class="hint">
          Its latest result for{" "}
          {servers.map((server, index) => (
            <>
              {index > 0 ? ", " : ""}
              <a href={`/servers/${server.id}/security#${check.id}`}>{server.serverName}</a>
            </>
          ))}
        </p>
      ) : null}
    </>
  );
}

function StatementItem(props: { statement: Statement; servers: OwnServer[] | null }) {
  const { statement } = props;
  return (
    <li id={statement.id} class="statement" data-about={statement.about} data-check={statement.check}>
      <p>{statement.text}</p>
      <p class="hint">
        <a href={howPath(statement.how)}>How we keep it: {HOW_WE_KEEP_IT[statement.how].title}</a>
      </p>
      {statement.check ? <CheckNote id={statement.check} servers={props.servers} /> : null}
    </li>
  );
}

/** `servers`: the logged-in viewer's homeservers, or null for a visitor. */
export function SecurityPage(props: { viewer: Viewer | null; servers: OwnServer[] | null }) {
  return (
    <Layout title="Security" viewer={props.viewer}>
      <h1>Security</h1>
      <p>
        These are our promises about your homeserver, your account and your data. Each one links to how we keep it and to the tests that hold our code to it.
        Each promise about a homeserver is checked every day against every homeserver we host, and the promise about card data for every account; each customer
        sees their own results, with the evidence, on their homeserver's Security tab. A check that does not run yet says so.
      </p>
      {props.servers ? (
        <section class="card" aria-labelledby="your-homeservers">
          <h2 id="your-homeservers">Your homeservers</h2>
          {props.servers.length === 0 ? (
            <p>You have no homeserver yet.</p>
          ) : (
            <ul class="plain">
              {props.servers.map((server) => (
                <li>
                  <a href={`/servers/${server.id}`}>{server.serverName}</a>
                </li>
              ))}
            </ul>
          )}
        </section>
      ) : null}
      <nav aria-label="On this page">
        <ul class="plain">
          {SECURITY_SECTIONS.map((section) => (
            <li>
              <a href={`#${section.id}`}>{section.title}</a>
            </li>
          ))}
        </ul>
      </nav>
      {SECURITY_SECTIONS.map((section) => (
        <section id={section.id} aria-labelledby={`${section.id}-heading`}>
          <h2 id={`${section.id}-heading`}>{section.title}</h2>
          <ul class="statements">
            {section.statements.map((statement) => (
              <StatementItem statement={statement} servers={props.servers} />
            ))}
          </ul>
        </section>
      ))}
    </Layout>
  );
}

/** How one topic's promises are kept: our summary, the statements it keeps, and where it is recorded and tested. */
export function HowWeKeepItPage(props: { viewer: Viewer | null; topic: HowTopicId }) {
  const topic = HOW_WE_KEEP_IT[props.topic];
  const statements = SECURITY_SECTIONS.flatMap((section) => section.statements).filter((statement) => statement.how === props.topic);
  return (
    <Layout title={`${topic.title} · Security`} viewer={props.viewer}>
      <p>
        <a href={SECURITY_PATH}>Security</a> › How we keep it
      </p>
      <h1>{topic.title}</h1>
      {topic.paragraphs.map((paragraph) => (
        <p>{paragraph}</p>
      ))}
      <section aria-labelledby="kept-promises">
        <h2 id="kept-promises">The promises this keeps</h2>
        <ul>
          {statements.map((statement) => (
            <li>
              <a href={`${SECURITY_PATH}#${statement.id}`}>{statement.text}</a>
              {statement.check ? (
                <>
                  {" "}
                  (check <code>{statement.check}</code>)
                </>
              ) : null}
            </li>
          ))}
        </ul>
      </section>
      <section aria-labelledby="recorded">
        <h2 id="recorded">Where it is recorded</h2>
        <p>In our source repository:</p>
        <ul>
          {topic.sources.map((source) => (
            <li>
              <code>{source.doc}</code>, “{source.heading}”
            </li>
          ))}
        </ul>
        <p>The tests that fail if it stops being true:</p>
        <ul>
          {topic.tests.map((test) => (
            <li>
              <code>{test}</code>
            </li>
          ))}
        </ul>
      </section>
    </Layout>
  );
}
