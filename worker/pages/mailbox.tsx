import { Layout, type Viewer } from "./layout";

export interface OutboxMessage {
  to: string;
  subject: string;
  text: string;
  links: string[];
  sentAt: string;
}

export function MailboxPage(props: { messages: OutboxMessage[]; viewer: Viewer | null }) {
  return (
    <Layout title="Dev mailbox" viewer={props.viewer}>
      <h1>Dev mailbox</h1>
      <p class="hint">
        Development only: every email the Worker sent, newest first. Also as <a href="/dev/mailbox.json">JSON</a>.
      </p>
      {props.messages.length === 0 ? <p>No mail yet.</p> : null}
      {props.messages.map((message) => (
        <article class="card mail">
          <h2>{message.subject}</h2>
          <p class="hint">
            To <strong>{message.to}</strong> · <time datetime={message.sentAt}>{message.sentAt}</time>
          </p>
          <pre>{message.text}</pre>
          {message.links.length > 0 ? (
            <ul>
              {message.links.map((link) => (
                <li>
                  <a href={link}>{link}</a>
                </li>
              ))}
            </ul>
          ) : null}
        </article>
      ))}
    </Layout>
  );
}
