import type { LegalExportScope } from "../../protocol/jobs";
import type { LegalExport, User } from "../db/schema";
import type { AuditTrailEntry, LegalExportListing, NamedServer } from "../legal/pages-data";
import { formatBytes } from "./charts";
import { Alert, Choices, Field, utc, type Options } from "./layout";
import { OPERATOR_LEGAL_EXPORTS_PATH, OperatorLayout } from "./operator";

// Operators' pages for legal-request exports: the list, the request form with its confirmation
// step, and one export with its audit trail. Plain forms: they work without JavaScript.

export const LEGAL_EXPORTS_PATH = OPERATOR_LEGAL_EXPORTS_PATH;
export const legalExportPath = (id: string) => `${LEGAL_EXPORTS_PATH}/${id}`;

/** The request form's fields as typed: what is shown again when it is refused or changed. */
export interface LegalExportFormValues {
  server: string;
  reference: string;
  users: string;
  rooms: string;
  from: string;
  until: string;
  content: string;
  recipient: string;
  notice: string;
  reason: string;
}

export const EMPTY_LEGAL_EXPORT_FORM: LegalExportFormValues = {
  server: "",
  reference: "",
  users: "",
  rooms: "",
  from: "",
  until: "",
  content: "",
  recipient: "",
  notice: "",
  reason: "",
};

/** A request the form described, checked and ready to confirm. */
export interface ReviewedLegalExport {
  server: NamedServer;
  reference: string;
  scope: LegalExportScope;
  recipient: string;
  noticeBarredReason: string | null;
}

function plural(count: number, one: string, many: string) {
  return `${count} ${count === 1 ? one : many}`;
}

/** One line for the list: who, where, when, and whether content is in it. */
export function scopeSummary(scope: LegalExportScope): string {
  const users = scope.users.length === 0 ? "all users" : plural(scope.users.length, "user", "users");
  const rooms = scope.rooms.length === 0 ? "all rooms" : plural(scope.rooms.length, "room", "rooms");
  const time =
    scope.from === undefined && scope.until === undefined
      ? "any time"
      : [scope.from === undefined ? null : `from ${utc(scope.from)}`, scope.until === undefined ? null : `until ${utc(scope.until)}`].filter(Boolean).join(" ");
  return `${users}; ${rooms}; ${time}; ${scope.content ? "with content" : "metadata only"}`;
}

/** A scope's list of users or rooms: everything when it is empty. */
function Narrowing(props: { ids: string[]; all: string; only: string }) {
  if (props.ids.length === 0) return <li>{props.all}</li>;
  return (
    <li>
      {props.only}:{" "}
      {props.ids.map((id, index) => (
        <>
          {index > 0 ? ", " : null}
          <code>{id}</code>
        </>
      ))}
    </li>
  );
}

/** What the host exports under this scope, one item a line. */
function ScopeDetails(props: { scope: LegalExportScope }) {
  const { scope } = props;
  return (
    <ul>
      <Narrowing
        ids={scope.users}
        all="Every user of the homeserver."
        only="Only these users, the rooms they were ever members of, their memberships and the events they sent"
      />
      <Narrowing ids={scope.rooms} all="Every room." only="Only these rooms, their events and memberships, and the users who were members" />
      <li>
        {scope.from === undefined && scope.until === undefined
          ? "Events and memberships of any time."
          : `Events and memberships ${scope.from === undefined ? "" : `from ${utc(scope.from)} `}${scope.until === undefined ? "onwards" : `until ${utc(scope.until)} (not included)`}.`}
      </li>
      <li>
        {scope.content
          ? "With content: events as stored — encrypted rooms' events as the ciphertext they are, unencrypted rooms' events as they are."
          : "Metadata only: no event's content."}
      </li>
    </ul>
  );
}

const CONTENT_OPTIONS: Options = [
  ["no", "Metadata only", "users, rooms, memberships and events' metadata"],
  ["yes", "Metadata and content", "events as stored: encrypted rooms' as ciphertext, unencrypted rooms' as they are"],
];
const NOTICE_OPTIONS: Options = [
  ["given", "Notice is given", "the customer sees the request in their audit log and data export"],
  ["barred", "Notice is legally barred", "the customer is not told; the reason below is audited"],
];

function TextArea(props: { name: string; label: string; value: string; hint: string; rows?: number; optional?: boolean }) {
  const id = `field-${props.name}`;
  return (
    <div class="field">
      <label for={id}>{props.label}</label>
      <textarea id={id} name={props.name} rows={props.rows ?? 3} aria-describedby={`${id}-hint`} required={!props.optional} spellcheck={false}>
        {props.value}
      </textarea>
      <p class="hint" id={`${id}-hint`}>
        {props.hint}
      </p>
    </div>
  );
}

function BackToList() {
  return (
    <p>
      <a href={LEGAL_EXPORTS_PATH}>← Legal exports</a>
    </p>
  );
}

export function LegalExportsPage(props: { user: User; exports: LegalExportListing[] }) {
  return (
    <OperatorLayout title="Legal exports" user={props.user} current="legal">
      <h1>Legal exports</h1>
      <p>
        Exports of a homeserver's data under a legal request, newest first. <a href={`${LEGAL_EXPORTS_PATH}/new`}>Request an export</a>
      </p>
      {props.exports.length === 0 ? (
        <p>No export has been requested.</p>
      ) : (
        <ul class="legal-exports">
          {props.exports.map((listed) => (
            <li class="card">
              <h2>
                <a href={legalExportPath(listed.export.id)}>{listed.export.reference}</a>
              </h2>
              <dl class="facts">
                <dt>Homeserver</dt>
                <dd>{listed.serverName}</dd>
                <dt>Scope</dt>
                <dd>{scopeSummary(listed.export.scope)}</dd>
                <dt>Requested</dt>
                <dd>
                  {utc(listed.export.createdAt)} by {listed.operatorEmail ?? listed.export.operatorId}
                </dd>
                <dt>Notice</dt>
                <dd>{listed.export.notice === "barred" ? "Legally barred" : "Given"}</dd>
                <dt>Status</dt>
                <dd>{exportStatus(listed.export)}</dd>
              </dl>
            </li>
          ))}
        </ul>
      )}
    </OperatorLayout>
  );
}

export function RequestLegalExportPage(props: { user: User; values: LegalExportFormValues; error?: string | undefined }) {
  const { values } = props;
  return (
    <OperatorLayout title="Request a legal export" user={props.user} current="legal">
      <BackToList />
      <h1>Request a legal export</h1>
      <Alert kind="error" message={props.error} />
      <form method="post" action={LEGAL_EXPORTS_PATH} class="card">
        <p>The homeserver's host exports it, encrypted to your age recipient. The next page shows what will be exported and who will see the request.</p>
        <Field label="Homeserver" name="server" value={values.server} hint="Its id, its name, or its Matrix server name." maxlength={300} />
        <Field label="Reference" name="reference" value={values.reference} hint="The legal request's reference, as it will be recorded." maxlength={200} />
        <TextArea
          name="users"
          label="Users (optional)"
          value={values.users}
          optional
          hint="Matrix user ids such as @name:example.org, one a line (up to 100). Empty: every user."
        />
        <TextArea
          name="rooms"
          label="Rooms (optional)"
          value={values.rooms}
          optional
          hint="Matrix room ids such as !abc:example.org, one a line (up to 100). Empty: every room."
        />
        <Field label="From (UTC, optional)" name="from" type="datetime-local" value={values.from} optional hint="Events and memberships from this time on." />
        <Field
          label="Until (UTC, optional)"
          name="until"
          type="datetime-local"
          value={values.until}
          optional
          hint="Events and memberships before this time (not included)."
        />
        <Choices legend="Content" name="content" value={values.content} options={CONTENT_OPTIONS} />
        <Field
          label="Age recipient"
          name="recipient"
          value={values.recipient}
          hint="The age public key (age1…) of whoever receives the export: only its identity opens it."
          maxlength={100}
        />
        <Choices legend="Notice to the customer" name="notice" value={values.notice} options={NOTICE_OPTIONS} />
        <TextArea
          name="reason"
          label="Why notice is barred (required when it is)"
          value={values.reason}
          optional
          hint="The legal ground, such as a non-disclosure order (3 to 500 characters). Leave it empty when notice is given."
        />
        <button type="submit" name="step" value="review">
          Review the request
        </button>
      </form>
    </OperatorLayout>
  );
}

/** The confirmation step: what will be exported, who will see that it was, and the fields again (hidden) to send or change. */
export function ConfirmLegalExportPage(props: { user: User; values: LegalExportFormValues; request: ReviewedLegalExport }) {
  const { request, values } = props;
  return (
    <OperatorLayout title="Confirm the legal export" user={props.user} current="legal">
      <BackToList />
      <h1>Confirm the legal export</h1>
      <form method="post" action={LEGAL_EXPORTS_PATH} class="card">
        {Object.entries(values).map(([name, value]) => (
          <input type="hidden" name={name} value={value} />
        ))}
        <h2>What will be exported</h2>
        <p>
          From the homeserver <strong>{request.server.serverName}</strong> (<code>{request.server.id}</code>), under the reference{" "}
          <strong>{request.reference}</strong>: its users, rooms, room memberships and events' metadata, as its database holds them.
        </p>
        <ScopeDetails scope={request.scope} />
        <p>
          And what Berth itself holds about the homeserver, in a second file: its owner's account (email, when it was created and verified), subscriptions and
          invoices, and the server's usage samples and audit entries{" "}
          {request.scope.from === undefined && request.scope.until === undefined ? "" : "in the time range "}
          (the users and rooms listed above do not narrow it).
        </p>
        <h2>Who will see it</h2>
        <ul>
          <li>
            The export is encrypted on the host to <code>{request.recipient}</code>: only whoever holds that recipient's identity can read it.
          </li>
          {request.noticeBarredReason === null ? (
            <li>The customer ({request.server.ownerEmail}) sees this request, its reference and scope, in their audit log and their data export.</li>
          ) : (
            <li>
              The customer ({request.server.ownerEmail}) is <strong>not told</strong>. The request and the reason notice is barred are recorded in the audit log
              for operators: “{request.noticeBarredReason}”.
            </li>
          )}
          <li>Operators see the request in the audit log and on these pages, with your name as the operator who asked.</li>
        </ul>
        <button type="submit" name="step" value="request">
          Request the export
        </button>{" "}
        <button type="submit" name="step" value="edit" class="link">
          Change the request
        </button>
      </form>
    </OperatorLayout>
  );
}

/** Where the export stands, in words: a failure says why, a finished one whether retention has removed its files. */
function exportStatus(row: LegalExport): string {
  if (row.status === "failed") return `Failed: ${row.error ?? "no reason recorded"}`;
  if (row.status !== "ready") return row.status === "running" ? "Running: the host is uploading its file" : "Requested: waiting for the host";
  const finished = row.finishedAt === null ? "" : ` ${utc(row.finishedAt)}`;
  return row.filesDeletedAt === null ? `Ready since${finished}` : `Ready${finished}; its files were deleted ${utc(row.filesDeletedAt)} (retention)`;
}

/** The two files, to download while retention keeps them (each download is audited). */
function ExportFiles(props: { row: LegalExport }) {
  const { row } = props;
  if (row.status !== "ready" || row.filesDeletedAt !== null) return null;
  const files: Array<[string, string, number | null, string]> = [
    [
      "homeserver",
      "The homeserver's file",
      row.sizeBytes,
      row.records ? `${row.records.users} users, ${row.records.rooms} rooms, ${row.records.memberships} memberships, ${row.records.events} events` : "",
    ],
    [
      "worker",
      "Berth's file",
      row.workerSizeBytes,
      row.workerRecords
        ? `${row.workerRecords.accounts} account, ${row.workerRecords.subscriptions} subscriptions, ${row.workerRecords.invoices} invoices, ${row.workerRecords.usageSamples} usage samples, ${row.workerRecords.auditEntries} audit entries`
        : "",
    ],
  ];
  return (
    <>
      <h2>Files</h2>
      <p>
        Each download is recorded in the audit log (and shown to the customer when notice is given). Open them with the recipient's identity:{" "}
        <code>age -d -i</code>.
      </p>
      <ul>
        {files.map(([file, label, size, records]) => (
          <li>
            <a href={`/api/admin/legal-exports/${row.id}/files/${file}`} download>
              {label}
            </a>
            {size === null ? "" : ` (${formatBytes(size)})`}
            {records ? `: ${records}` : ""}
          </li>
        ))}
      </ul>
    </>
  );
}

function AuditDetail(props: { detail: unknown }) {
  if (props.detail === null || props.detail === undefined) return null;
  return <pre>{JSON.stringify(props.detail, null, 2)}</pre>;
}

export function LegalExportPage(props: { user: User; listed: LegalExportListing; audit: AuditTrailEntry[]; notice?: string | undefined }) {
  const { listed } = props;
  const row = listed.export;
  return (
    <OperatorLayout title={`Legal export ${row.reference}`} user={props.user} current="legal">
      <BackToList />
      <h1>Legal export {row.reference}</h1>
      <Alert kind="notice" message={props.notice} />
      <dl class="facts">
        <dt>Homeserver</dt>
        <dd>
          {listed.serverName} (<code>{row.serverId}</code>)
        </dd>
        <dt>Requested</dt>
        <dd>
          {utc(row.createdAt)} by {listed.operatorEmail ?? row.operatorId}
        </dd>
        <dt>Notice</dt>
        <dd>
          {row.notice === "barred" ? `Legally barred: ${row.noticeBarredReason ?? ""}` : "Given: the customer sees it in their audit log and data export"}
        </dd>
        <dt>Recipient</dt>
        <dd>
          <code>{row.recipient}</code>
        </dd>
        <dt>Status</dt>
        <dd>{exportStatus(row)}</dd>
        <dt>Job</dt>
        <dd>
          <code>{row.jobId}</code> {listed.jobStatus ?? "(no longer kept)"}
        </dd>
      </dl>
      <ExportFiles row={row} />
      <h2>Scope</h2>
      <ScopeDetails scope={row.scope} />
      <h2 id="audit-heading">Audit entries about this export</h2>
      <ol class="legal-exports" aria-labelledby="audit-heading">
        {props.audit.map((entry) => (
          <li class="card">
            <h3>{entry.action}</h3>
            <p>
              {utc(entry.at)} by {entry.actorEmail ?? entry.actor}
              {entry.target === null ? null : `, about ${entry.target}`}
            </p>
            <AuditDetail detail={entry.detail} />
          </li>
        ))}
      </ol>
    </OperatorLayout>
  );
}
