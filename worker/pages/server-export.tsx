import type { User } from "../db/schema";
import { EXPORT_DOWNLOAD_DAYS } from "../exports/exports";
import { MAX_PASSPHRASE_LENGTH, MIN_PASSPHRASE_LENGTH } from "../exports/passphrase";
import type { presentServerExport } from "../http/present";
import { formatBytes } from "./charts";
import { Alert, Field, Layout } from "./layout";
import { ServerNav } from "./server-nav";
import { when } from "./servers";

type ExportView = ReturnType<typeof presentServerExport>;

const STATUS_WORDS: Record<ExportView["status"], string> = {
  queued: "Waiting for the host",
  running: "Being made",
  ready: "Ready",
  failed: "Failed",
  expired: "Deleted",
};

function Progress(props: { item: ExportView }) {
  const { item } = props;
  if (item.status === "ready") {
    return (
      <>
        <a href={item.downloadUrl!} download>
          Download ({formatBytes(item.sizeBytes ?? 0)})
        </a>
        <span class="hint"> until {when(item.expiresAt)}</span>
      </>
    );
  }
  if (item.status === "queued" || item.status === "running") {
    return (
      <>
        {Math.round((item.progress.fraction ?? 0) * 100)} % done, {formatBytes(item.progress.bytesUploaded)} uploaded
      </>
    );
  }
  if (item.status === "failed") return <>{item.error}</>;
  return <>Offered for {EXPORT_DOWNLOAD_DAYS} days, then deleted</>;
}

/** "Download your homeserver": ask for an export with a passphrase, follow it, download it for a week. */
export function ServerExportPage(props: {
  user: User;
  serverId: string;
  serverName: string;
  exports: ExportView[];
  error?: string | undefined;
  notice?: string | undefined;
}) {
  const underWay = props.exports.some((item) => item.status === "queued" || item.status === "running");
  return (
    <Layout title={`Download ${props.serverName}`} viewer={props.user}>
      <p>
        <a href={`/servers/${props.serverId}`}>← {props.serverName}</a>
      </p>
      <h1>Download your homeserver</h1>
      <ServerNav serverId={props.serverId} current="export" />
      <Alert kind="notice" message={props.notice} />
      <Alert kind="error" message={props.error} />
      <p>
        An export is everything needed to run {props.serverName} on your own Synapse with PostgreSQL: the database, the uploaded media, the server's signing key
        and its settings, with a README that says how, step by step. It is encrypted on our host with a passphrase you choose, and offered here for{" "}
        {EXPORT_DOWNLOAD_DAYS} days; then we delete it. We email you when it is ready.
      </p>
      <section class="card" aria-labelledby="new-export-heading">
        <h2 id="new-export-heading">New export</h2>
        <form method="post" action={`/servers/${props.serverId}/export`}>
          <Field
            label="Passphrase"
            name="passphrase"
            type="password"
            autocomplete="new-password"
            minlength={MIN_PASSPHRASE_LENGTH}
            maxlength={MAX_PASSPHRASE_LENGTH}
            hint={`At least ${MIN_PASSPHRASE_LENGTH} characters, not one character repeated: a few unrelated words work well. Keep it safe: we do not keep it, and without it the export cannot be opened.`}
          />
          <button type="submit" disabled={underWay}>
            Export
          </button>
          {underWay ? <span class="hint"> An export is being made; reload this page to follow it.</span> : null}
        </form>
      </section>
      {props.exports.length > 0 ? (
        <section class="card" aria-labelledby="exports-heading">
          <h2 id="exports-heading">Exports</h2>
          <div class="scroll">
            <table>
              <caption class="visually-hidden">Exports of {props.serverName}, newest first</caption>
              <thead>
                <tr>
                  <th scope="col">Asked for</th>
                  <th scope="col">State</th>
                  <th scope="col">Progress or download</th>
                </tr>
              </thead>
              <tbody>
                {props.exports.map((item) => (
                  <tr>
                    <td>{when(item.createdAt)}</td>
                    <td>{STATUS_WORDS[item.status]}</td>
                    <td>
                      <Progress item={item} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </section>
      ) : null}
    </Layout>
  );
}
