import type { User } from "../db/schema";
import { MAX_PASSPHRASE_LENGTH } from "../exports/passphrase";
import type { presentServerImport } from "../http/present";
import { countsText, formatBytes } from "./charts";
import { Alert, Field, Layout } from "./layout";
import { DASHBOARD_SCRIPT_PATH, when } from "./servers";

type ImportView = ReturnType<typeof presentServerImport>;

function State(props: { item: ImportView; serverId: string; serverName: string }) {
  const { item } = props;
  switch (item.status) {
    case "uploading":
      return (
        <p>
          {item.progress.partsReceived} of {item.parts} parts of {formatBytes(item.sizeBytes)} received. Choose the same file again to resume: only what has not
          arrived is sent.
        </p>
      );
    case "uploaded":
      return (
        <p>
          Uploaded. Your homeserver is made from it as soon as <a href={`/servers/${props.serverId}/delegation`}>the delegation of {props.serverName}</a> passes
          its check.
        </p>
      );
    case "importing":
      return <p>Your homeserver is being made from it: {Math.round((item.progress.fraction ?? 0) * 100)} % done.</p>;
    case "imported":
      return (
        <p>
          Imported on {when(item.finishedAt)}
          {item.counts ? `: ${countsText(item.counts)}` : ""}. <a href={`/servers/${props.serverId}`}>Your homeserver</a> runs.
        </p>
      );
    case "failed":
      return (
        <p class="alert error" role="alert">
          The import failed: {item.error}. Nothing of it was kept; you may upload again.
        </p>
      );
    case "cancelled":
      return <p>Cancelled; nothing of it was kept.</p>;
  }
}

/**
 * "Import a homeserver": an archive uploaded into a waiting homeserver on its owner's domain. The
 * upload itself needs the page's script (it hashes and sends the file in parts, and resumes); the
 * state and "cancel" work without it.
 */
export function ServerImportPage(props: {
  user: User;
  serverId: string;
  serverName: string;
  /** Whether the homeserver still waits for its delegation, the only time an archive can go into it. */
  waiting: boolean;
  latest: ImportView | null;
  error?: string | undefined;
  notice?: string | undefined;
}) {
  const { latest } = props;
  const cancellable = latest?.status === "uploading" || latest?.status === "uploaded";
  const canUpload = props.waiting && !(latest && ["uploaded", "importing"].includes(latest.status));
  return (
    <Layout title={`Import into ${props.serverName}`} viewer={props.user} script={DASHBOARD_SCRIPT_PATH}>
      <p>
        <a href={`/servers/${props.serverId}`}>← {props.serverName}</a>
      </p>
      <h1>Import a homeserver</h1>
      <Alert kind="notice" message={props.notice} />
      <Alert kind="error" message={props.error} />
      <p>
        Bring {props.serverName} here from another host: a Berth export (a <code>.age</code> file, with the passphrase it was made with), or a self-hosted
        Synapse's database dump, signing key and media in one <code>.tar</code> or <code>.tar.gz</code>, made with the commands in our documentation. The
        archive's server name must be {props.serverName}. Nothing is made until the archive is whole, checked and your domain delegates to us; if the import
        fails, nothing of it is kept and we tell you why.
      </p>
      {latest ? (
        <section class="card" aria-labelledby="import-state-heading" id="import-state">
          <h2 id="import-state-heading">The latest import</h2>
          <State item={latest} serverId={props.serverId} serverName={props.serverName} />
          {cancellable ? (
            <form method="post" action={`/servers/${props.serverId}/import/cancel`}>
              <button type="submit" class="danger">
                Cancel this import
              </button>
            </form>
          ) : null}
        </section>
      ) : null}
      {canUpload ? (
        <section class="card" aria-labelledby="import-upload-heading">
          <h2 id="import-upload-heading">Upload an archive</h2>
          <noscript>
            <p class="alert notice">Uploading needs this page's script (it sends the archive in checked parts): allow JavaScript, or use the API.</p>
          </noscript>
          <form
            id="import-upload"
            hidden
            data-api={`/api/servers/${props.serverId}/import`}
            data-done={`/servers/${props.serverId}/import?notice=import_uploaded`}
          >
            <div class="field">
              <label for="field-archive">Archive</label>
              <input id="field-archive" name="archive" type="file" required />
            </div>
            <Field
              label="Passphrase of a Berth export"
              name="passphrase"
              type="password"
              autocomplete="off"
              maxlength={MAX_PASSPHRASE_LENGTH}
              optional
              hint="Leave it empty for a self-hosted Synapse's archive. It goes only to the host that opens the archive, and is deleted once it has."
            />
            <button type="submit">Upload and import</button>
            <progress id="import-upload-progress" max={1} value={0} hidden aria-label="Upload progress"></progress>
            <p id="import-upload-status" role="status"></p>
          </form>
        </section>
      ) : props.waiting || latest?.status === "imported" ? null : (
        <p class="alert notice" role="status">
          Only a new homeserver on your own domain can be made from an archive, before it is set up: create one with your domain as its server name, then
          import.
        </p>
      )}
    </Layout>
  );
}
