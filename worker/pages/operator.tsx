import type { Child } from "hono/jsx";
import type { Host, HostState, Job, Server, ServerMigration, User } from "../db/schema";
import type { LateBackup } from "../backups/maintenance";
import type { FleetCheckStatus } from "../checks/alerts";
import type { Certificate } from "../fleet/certificates";
import type { AuditEntry, HostDetail, HostMoves, HostOverview } from "../fleet/console";
import type { StandingStorageAlert } from "../servers/storage-alerts";
import { MEMORY_OVERCOMMIT } from "../servers/admission";
import { formatBytes, formatPercent } from "./charts";
import { Alert, Choices, Field, Layout, utc, type Options } from "./layout";

// The operator console: hosts, one host with its homeservers, jobs and actions, join tokens, the
// audit log and what needs attention. Plain forms that POST and redirect: no JavaScript needed
// (operator.js only adds copy buttons).

export const OPERATOR_PATH = "/operator";
export const HOSTS_PATH = `${OPERATOR_PATH}/hosts`;
export const hostPath = (id: string) => `${HOSTS_PATH}/${id}`;
export const drainPath = (hostId: string) => `${hostPath(hostId)}/drain`;
export const cancelDrainPath = (hostId: string) => `${drainPath(hostId)}/cancel`;
export const movePath = (hostId: string) => `${hostPath(hostId)}/move`;
export const JOIN_TOKENS_PATH = `${OPERATOR_PATH}/join-tokens`;
export const AUDIT_PATH = `${OPERATOR_PATH}/audit`;
export const ALERTS_PATH = `${OPERATOR_PATH}/alerts`;
export const OPERATOR_LEGAL_EXPORTS_PATH = `${OPERATOR_PATH}/legal-exports`;
export const OPERATOR_SCRIPT_PATH = "/assets/operator.js";

export type OperatorSection = "hosts" | "join" | "audit" | "alerts" | "legal";

const SECTIONS: { section: OperatorSection; label: string; path: string }[] = [
  { section: "hosts", label: "Hosts", path: HOSTS_PATH },
  { section: "join", label: "Add a host", path: JOIN_TOKENS_PATH },
  { section: "audit", label: "Audit log", path: AUDIT_PATH },
  { section: "alerts", label: "Alerts", path: ALERTS_PATH },
  { section: "legal", label: "Legal exports", path: OPERATOR_LEGAL_EXPORTS_PATH },
];

/** The one navigation of every operator page, the current section marked for assistive technology too. */
export function OperatorNav(props: { current: OperatorSection }) {
  return (
    <nav aria-label="Operator console" class="tabs operator-nav">
      {SECTIONS.map(({ section, label, path }) => (
        <a href={path} aria-current={section === props.current ? "page" : undefined}>
          {label}
        </a>
      ))}
    </nav>
  );
}

/** An operator page: the site's layout with the console's navigation above the page's own content. */
export function OperatorLayout(props: { title: string; user: User; current: OperatorSection; script?: string; children?: Child }) {
  return (
    <Layout title={props.title} viewer={props.user} script={props.script}>
      <OperatorNav current={props.current} />
      {props.children}
    </Layout>
  );
}

export const STATE_LABELS: Record<HostState, string> = { active: "Active", draining: "Draining", out_of_service: "Out of service" };

const STATE_OPTIONS: Options = [
  ["active", STATE_LABELS.active, "takes new homeservers"],
  ["draining", STATE_LABELS.draining, "takes no new homeservers; its own are to move away"],
  ["out_of_service", STATE_LABELS.out_of_service, "takes no new homeservers; being worked on"],
];

function StateBadge(props: { state: HostState }) {
  return <span class={`badge ${props.state === "active" ? "ok" : "warn"}`}>{STATE_LABELS[props.state]}</span>;
}

function Connection(props: { overview: HostOverview }) {
  const { host } = props.overview;
  const tone = host.status === "online" ? "ok" : "bad";
  return (
    <>
      <span class={`badge ${tone}`}>{host.status}</span> last seen {host.lastSeenAt ? utc(host.lastSeenAt) : "never"}
    </>
  );
}

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

/** "1 GB used of 7.5 GB, 6.5 GB free": what placement counts. */
function usage(capacity: number, free: number, format: (value: number) => string) {
  return `${format(capacity - free)} used of ${format(capacity)}, ${format(free)} free`;
}

const mebibytes = (mib: number) => formatBytes(mib * MIB);

function Capacity(props: { overview: HostOverview }) {
  const { capacity, room } = props.overview;
  const { memory } = room;
  return (
    <ul class="plain">
      <li>
        Memory: {mebibytes(memory.admittedMiB)} admitted of {mebibytes(memory.capacityMiB)}, {mebibytes(room.freeMemoryMiB)} free; measured use{" "}
        {mebibytes(memory.usedMiB)}
      </li>
      <li>
        Plan limits: {mebibytes(memory.committedMiB)} of the {mebibytes(memory.ceilingMiB)} ceiling ({MEMORY_OVERCOMMIT}× its memory)
      </li>
      <li>Available as the host reports it: {memory.reportedAvailableMiB === null ? "not reported yet" : mebibytes(memory.reportedAvailableMiB)}</li>
      <li>CPUs: {usage(capacity.cpus, room.freeCpus, (cpus) => `${cpus}`)}</li>
      <li>Disk: {usage(capacity.storageGiB, room.freeDiskGiB, (gib) => formatBytes(gib * GIB))}</li>
    </ul>
  );
}

/** Whether memory lets the host take homeservers; a tight one links to its drain. */
function Tightness(props: { overview: HostOverview }) {
  const { host, room } = props.overview;
  if (!room.tight) return <span class="badge ok">Not tight</span>;
  return (
    <>
      <span class="badge bad">Tight</span> since {utc(host.tightSince!)}: takes no new homeservers. <a href={drainPath(host.id)}>Drain {host.name}</a>
    </>
  );
}

function Encryption(props: { overview: HostOverview }) {
  const { host } = props.overview;
  if (host.diskEncrypted === true) return <span class="badge ok">Encrypted</span>;
  if (host.diskEncrypted === null) return <>Not reported yet</>;
  return (
    <>
      <span class="badge bad">Not encrypted</span>
      {host.unencryptedPlacementOverride ? " — an operator allows customer data on it" : ""}
      {host.allowUnencrypted ? " — its agent allows it (development only)" : ""}
    </>
  );
}

function Certificates(props: { overview: HostOverview }) {
  const { certificates } = props.overview;
  if (certificates.count === 0) return <>None reported</>;
  return (
    <>
      {certificates.count} served, the next expiring {utc(certificates.nextExpiry!)}
      {certificates.expiringSoon > 0 ? <span class="badge bad">{certificates.expiringSoon} expiring soon</span> : null}
    </>
  );
}

/** What the hosts list and a host's page both say about a host. */
function HostFacts(props: { overview: HostOverview }) {
  const { overview } = props;
  const { host } = overview;
  return (
    <dl class="facts">
      <dt>Region</dt>
      <dd>{host.region}</dd>
      <dt>State</dt>
      <dd>
        <StateBadge state={host.state} />
      </dd>
      <dt>Connection</dt>
      <dd>
        <Connection overview={overview} />
      </dd>
      <dt>Agent</dt>
      <dd>
        {host.agentVersion}
        {host.protocolVersion === null ? "" : `, protocol ${host.protocolVersion}`}
      </dd>
      <dt>Capacity</dt>
      <dd>
        <Capacity overview={overview} />
      </dd>
      <dt>Memory</dt>
      <dd>
        <Tightness overview={overview} />
      </dd>
      <dt>Homeservers</dt>
      <dd>{overview.homeservers}</dd>
      <dt>Certificates</dt>
      <dd>
        <Certificates overview={overview} />
      </dd>
      <dt>Disk encryption</dt>
      <dd>
        <Encryption overview={overview} />
      </dd>
    </dl>
  );
}

/** The console's front page: promise checks failing across the fleet, by their latest result. */
function FailingChecks(props: { checks: FleetCheckStatus; domain: string }) {
  const { failing, couldNotCheck } = props.checks;
  return (
    <section aria-labelledby="failing-checks-heading">
      <h2 id="failing-checks-heading">Failing promise checks</h2>
      {failing.length === 0 ? (
        <p>Every promise check holds by its latest result.</p>
      ) : (
        <DataTable
          caption="Checks whose latest result fails, the longest failing first"
          hiddenCaption
          headers={["Homeserver", "Owner's account", "Host", "Check", "Finding", "Failing since"]}
        >
          {failing.map((check) => (
            <tr>
              <td>{check.serverName === null ? "(account check)" : `${check.serverName}.${props.domain}`}</td>
              <td>
                <code>{check.userId}</code>
              </td>
              <td>{check.hostId ? <a href={hostPath(check.hostId)}>{check.hostId}</a> : ""}</td>
              <td>{check.checkId}</td>
              <td>{check.summary}</td>
              <td>{utc(check.failingSince)}</td>
            </tr>
          ))}
        </DataTable>
      )}
      <p>
        Could not check: {couldNotCheck} {couldNotCheck === 1 ? "check" : "checks"} by their latest result.
      </p>
    </section>
  );
}

export function HostsPage(props: { user: User; hosts: HostOverview[]; checks: FleetCheckStatus; domain: string }) {
  return (
    <OperatorLayout title="Hosts" user={props.user} current="hosts">
      <h1>Hosts</h1>
      <FailingChecks checks={props.checks} domain={props.domain} />
      <h2>Enrolled hosts</h2>
      <p>
        Every enrolled host, the newest first. Memory counts each homeserver's measured peak (its plan's floor while new) plus headroom; its plans' limits may
        add up to the overcommit ceiling. A tight host takes no new homeservers. <a href={JOIN_TOKENS_PATH}>Add a host</a>
      </p>
      {props.hosts.length === 0 ? (
        <p>No host is enrolled.</p>
      ) : (
        <ul class="hosts">
          {props.hosts.map((overview) => (
            <li class="card">
              <h3>
                <a href={hostPath(overview.host.id)}>{overview.host.name}</a>
              </h3>
              <HostFacts overview={overview} />
            </li>
          ))}
        </ul>
      )}
    </OperatorLayout>
  );
}

/**
 * A table of facts; `children` are its rows. Long ids and details wrap anywhere; what still does
 * not fit scrolls sideways in a region the keyboard can reach.
 */
function DataTable(props: { caption: string; hiddenCaption?: boolean; headers: string[]; children: Child }) {
  return (
    <section class="scroll" aria-label={props.caption} tabindex={0}>
      <table class="facts">
        <caption class={props.hiddenCaption ? "visually-hidden" : undefined}>{props.caption}</caption>
        <thead>
          <tr>
            {props.headers.map((header) => (
              <th scope="col">{header}</th>
            ))}
          </tr>
        </thead>
        <tbody>{props.children}</tbody>
      </table>
    </section>
  );
}

function JobsTable(props: { jobs: Job[] }) {
  if (props.jobs.length === 0) return <p>No job was sent to this host.</p>;
  return (
    <DataTable caption="Recent jobs, newest first" hiddenCaption headers={["Job", "Status", "Created", "Outcome"]}>
      {props.jobs.map((job) => (
        <tr>
          <td>
            {job.kind}
            {job.serverId ? (
              <>
                {" "}
                <span class="hint">for {job.serverId}</span>
              </>
            ) : null}
          </td>
          <td>{job.status}</td>
          <td>{utc(job.createdAt)}</td>
          <td>{job.error ?? (job.finishedAt ? `finished ${utc(job.finishedAt)}` : (job.progressMessage ?? ""))}</td>
        </tr>
      ))}
    </DataTable>
  );
}

function CertificatesTable(props: { certificates: Certificate[]; now: Date }) {
  if (props.certificates.length === 0) return <p>The host's proxy has reported no certificate.</p>;
  return (
    <DataTable caption="Certificates, the nearest expiry first" hiddenCaption headers={["Name", "Expires", "Issuer"]}>
      {props.certificates.map((row) => (
        <tr>
          <td>{row.serverName}</td>
          <td>
            {utc(row.notAfter)}
            {row.alertedAt && row.notAfter > props.now ? " (alerted)" : ""}
          </td>
          <td>{row.issuer}</td>
        </tr>
      ))}
    </DataTable>
  );
}

/** Where a running homeserver may be moved to: the other active hosts of its region. */
const moveTargets = (moves: HostMoves) => moves.regionHosts.filter((host) => host.state === "active");

/** A running homeserver's "Move to…" form: it asks for the target, then the confirmation page says what will happen. */
function MoveForm(props: { hostId: string; server: Server; serverName: string; targets: Host[] }) {
  if (props.server.status !== "running") return <span class="hint">only a running homeserver is moved</span>;
  if (props.targets.length === 0) return <span class="hint">no other active host in {props.server.region}</span>;
  const fieldId = `move-target-${props.server.id}`;
  return (
    <form method="get" action={movePath(props.hostId)}>
      <input type="hidden" name="server" value={props.server.id} />
      <label for={fieldId}>
        <span class="visually-hidden">Move {props.serverName} to</span>
        <select id={fieldId} name="target" required>
          {props.targets.map((target) => (
            <option value={target.id}>
              {target.name} ({target.status})
            </option>
          ))}
        </select>
      </label>{" "}
      <button type="submit">Move to…</button>
    </form>
  );
}

/** The host's live homeservers; each row is where a homeserver's own actions go. */
function HomeserversTable(props: { detail: HostDetail; moves: HostMoves }) {
  if (props.detail.homeservers.length === 0) return <p>No homeserver runs on this host.</p>;
  const targets = moveTargets(props.moves);
  const hostId = props.detail.overview.host.id;
  return (
    <DataTable caption="Homeservers on this host" hiddenCaption headers={["Homeserver", "Status", "Plan", "Created", "Move"]}>
      {props.detail.homeservers.map(({ server, serverName }) => (
        <tr>
          <td>
            {serverName} <span class="hint">{server.id}</span>
          </td>
          <td>{server.status}</td>
          <td>{server.planId}</td>
          <td>{utc(server.createdAt)}</td>
          <td>
            <MoveForm hostId={hostId} server={server} serverName={serverName} targets={targets} />
          </td>
        </tr>
      ))}
    </DataTable>
  );
}

/** "12.3 s": a move's downtime, or what stands for none yet. */
function downtime(ms: number | null): string {
  return ms === null ? "not yet known" : `${(ms / 1000).toFixed(1)} s`;
}

/** How the moves' tables name hosts and homeservers: each a link to the host's page, and the homeserver's name beside its id. */
interface MoveNames {
  hostLink: (id: string) => Child;
  serverLabel: (id: string) => Child;
}

/** Names from the hosts of the region (the page's own host included) and the homeservers the moves name; an id where none is known. */
function moveNames(host: Host, moves: HostMoves): MoveNames {
  const hostNames = new Map([host, ...moves.regionHosts].map((row) => [row.id, row.name]));
  return {
    hostLink: (id) => <a href={hostPath(id)}>{hostNames.get(id) ?? id}</a>,
    serverLabel: (id) => (
      <>
        {moves.serverNames.get(id) ?? id} <span class="hint">{id}</span>
      </>
    ),
  };
}

/** A move as its tables show it: a drain's own moves leave out what the drain says already (their source). */
type MoveRow = Pick<ServerMigration, "serverId" | "targetHostId" | "phase" | "downtimeMs"> &
  Partial<Pick<ServerMigration, "sourceHostId" | "startedAt" | "error">>;

function MigrationsTable(props: { caption: string; migrations: MoveRow[]; names: MoveNames }) {
  const { hostLink, serverLabel } = props.names;
  return (
    <DataTable caption={props.caption} hiddenCaption headers={["Homeserver", "From", "To", "Phase", "Started", "Downtime", "Error"]}>
      {props.migrations.map((move) => (
        <tr>
          <td>{serverLabel(move.serverId)}</td>
          <td>{move.sourceHostId ? hostLink(move.sourceHostId) : ""}</td>
          <td>{hostLink(move.targetHostId)}</td>
          <td>{move.phase.replaceAll("_", " ")}</td>
          <td>{move.startedAt ? utc(move.startedAt) : ""}</td>
          <td>{downtime(move.downtimeMs)}</td>
          <td>{move.error ?? ""}</td>
        </tr>
      ))}
    </DataTable>
  );
}

/** The host's newest drain as it stands (counts, what is left and why, its moves), or the way to start one. */
function DrainSection(props: { host: Host; moves: HostMoves; names: MoveNames }) {
  const { drain } = props.moves;
  const running = drain !== null && drain.finishedAt === null;
  return (
    <section class="card" aria-labelledby="drain-heading">
      <h2 id="drain-heading">Drain</h2>
      {drain === null ? <p>This host was never drained.</p> : null}
      {drain === null ? null : (
        <>
          <p>
            {running ? "A drain is under way" : "The last drain ended"}: started {utc(new Date(drain.startedAt))}
            {drain.finishedAt ? `, ended ${utc(new Date(drain.finishedAt))}` : `, ${drain.concurrency} homeservers at a time`}.
            {drain.cancelledAt
              ? ` Cancelled ${utc(new Date(drain.cancelledAt))}: no more moves start${running ? "; those under way finish or roll back" : ""}. The host stays draining until you set it active.`
              : null}
          </p>
          <dl class="facts">
            <dt>Homeservers</dt>
            <dd>{drain.total}</dd>
            <dt>Moved</dt>
            <dd>{drain.moved}</dd>
            <dt>Failed (still here)</dt>
            <dd>{drain.failed}</dd>
            <dt>Moving</dt>
            <dd>{drain.moving}</dd>
            <dt>Remaining</dt>
            <dd>{drain.remaining}</dd>
          </dl>
          {drain.remainingServers.length === 0 ? null : (
            <ul>
              {drain.remainingServers.map((left) => (
                <li>
                  {props.names.serverLabel(left.serverId)}: {left.reason}
                </li>
              ))}
            </ul>
          )}
          {drain.migrations.length === 0 ? null : <MigrationsTable caption="The drain's moves" migrations={drain.migrations} names={props.names} />}
        </>
      )}
      {running && !drain.cancelledAt ? (
        <p>
          <a href={cancelDrainPath(props.host.id)}>Cancel this drain…</a>
        </p>
      ) : null}
      {running || props.host.status === "revoked" ? null : (
        <p>
          <a href={drainPath(props.host.id)}>{drain === null ? "Drain this host…" : "Drain this host again…"}</a>
        </p>
      )}
    </section>
  );
}

/** The form values a refused form shows again. */
export interface HostFormValues {
  state?: string | undefined;
  reason?: string | undefined;
  allow?: string | undefined;
  overrideReason?: string | undefined;
}

export function HostPage(props: {
  user: User;
  detail: HostDetail;
  moves: HostMoves;
  now: Date;
  notice?: string | undefined;
  error?: string | undefined;
  values?: HostFormValues;
}) {
  const { detail } = props;
  const { host } = detail.overview;
  const values = props.values ?? {};
  const revoked = host.status === "revoked";
  const names = moveNames(host, props.moves);
  return (
    <OperatorLayout title={`Host ${host.name}`} user={props.user} current="hosts">
      <p>
        <a href={HOSTS_PATH}>← Hosts</a>
      </p>
      <h1>Host {host.name}</h1>
      <Alert kind="notice" message={props.notice} />
      <Alert kind="error" message={props.error} />
      <HostFacts overview={detail.overview} />
      <p>
        Enrolled {utc(host.enrolledAt)}, id <code>{host.id}</code>
        {host.revokedAt ? `, revoked ${utc(host.revokedAt)}` : ""}.{" "}
        <a href={`${AUDIT_PATH}?target=${encodeURIComponent(host.id)}`}>Audit entries about this host</a>
      </p>

      <section class="card" aria-labelledby="state-heading">
        <h2 id="state-heading">State</h2>
        <form method="post" action={`${hostPath(host.id)}/state`}>
          <Choices legend="What the host is for" name="state" value={values.state ?? host.state} options={STATE_OPTIONS} />
          <Field
            label="Reason (optional)"
            name="reason"
            id="field-state-reason"
            value={values.reason}
            optional
            maxlength={500}
            hint="Recorded in the audit log with the change (3 to 500 characters)."
          />
          <button type="submit">Set the state</button>
        </form>
      </section>

      <DrainSection host={host} moves={props.moves} names={names} />

      <section aria-labelledby="homeservers-heading">
        <h2 id="homeservers-heading">Homeservers</h2>
        <HomeserversTable detail={detail} moves={props.moves} />
      </section>

      <section aria-labelledby="migrations-heading">
        <h2 id="migrations-heading">Recent moves</h2>
        {props.moves.migrations.length === 0 ? (
          <p>No homeserver moved into or out of this host.</p>
        ) : (
          <MigrationsTable caption="Moves into or out of this host, newest first" migrations={props.moves.migrations} names={names} />
        )}
      </section>

      <section aria-labelledby="jobs-heading">
        <h2 id="jobs-heading">Recent jobs</h2>
        <JobsTable jobs={detail.jobs} />
      </section>

      <section aria-labelledby="certificates-heading">
        <h2 id="certificates-heading">Certificates</h2>
        <CertificatesTable certificates={detail.certificates} now={props.now} />
      </section>

      <section class="card" aria-labelledby="override-heading">
        <h2 id="override-heading">Customer data on an unencrypted data root</h2>
        <p>
          In production homeservers go only to hosts whose data root is encrypted, unless an operator allows this host here. It{" "}
          {host.unencryptedPlacementOverride ? "is allowed now." : "is not allowed now."}
        </p>
        <form method="post" action={`${hostPath(host.id)}/unencrypted-placement`}>
          <Choices
            legend="Customer data on this host although its data root is not encrypted"
            name="allow"
            value={values.allow ?? (host.unencryptedPlacementOverride ? "yes" : "no")}
            options={[
              ["yes", "Allowed", "homeservers may be placed here"],
              ["no", "Not allowed", "only once its data root is encrypted"],
            ]}
          />
          <Field
            label="Reason"
            name="reason"
            id="field-override-reason"
            value={values.overrideReason}
            minlength={3}
            maxlength={500}
            hint="Recorded in the audit log (3 to 500 characters)."
          />
          <button type="submit">Record the decision</button>
        </form>
      </section>

      {revoked ? null : (
        <section class="card warning" aria-labelledby="revoke-heading">
          <h2 id="revoke-heading">Revoke</h2>
          <p>A revoked host can never connect again; its homeservers stay where they are, unreachable from the control plane.</p>
          <p>
            <a href={`${hostPath(host.id)}/revoke`}>Revoke this host…</a>
          </p>
        </section>
      )}
    </OperatorLayout>
  );
}

/** A page that asks to confirm an action on a host: the way back, what it is, and the form (the children) that does it. */
function HostActionPage(props: { user: User; host: Host; title: string; action: string; error?: string | undefined; children: Child }) {
  const { host } = props;
  return (
    <OperatorLayout title={props.title} user={props.user} current="hosts">
      <p>
        <a href={hostPath(host.id)}>← Host {host.name}</a>
      </p>
      <h1>{props.title}</h1>
      <Alert kind="error" message={props.error} />
      <form method="post" action={props.action} class="card warning">
        {props.children}
      </form>
    </OperatorLayout>
  );
}

export function RevokeHostPage(props: { user: User; detail: HostDetail; error?: string | undefined; typed?: string | undefined }) {
  const { host } = props.detail.overview;
  return (
    <HostActionPage user={props.user} host={host} title={`Revoke host ${host.name}`} action={`${hostPath(host.id)}/revoke`} error={props.error}>
      <p>
        Its agent's identity stops working at once and for good: its connection is closed and it can never authenticate again. Its{" "}
        {props.detail.homeservers.length === 1 ? "one homeserver keeps" : `${props.detail.homeservers.length} homeservers keep`} running on it, but nothing can
        be sent to them. To use the machine again, enroll it anew with a join token.
      </p>
      <Field
        label={`Type the host's name, ${host.name}, to confirm`}
        name="confirm"
        value={props.typed}
        maxlength={300}
        hint="This cannot be undone."
        autocomplete="off"
      />
      <button type="submit" class="danger">
        Revoke the host
      </button>
    </HostActionPage>
  );
}

/** Confirms a drain: what it does to the host and to its homeservers, then the one button that starts it. */
export function DrainHostPage(props: { user: User; detail: HostDetail; concurrency: number; error?: string | undefined }) {
  const { host } = props.detail.overview;
  const running = props.detail.homeservers.filter(({ server }) => server.status === "running").length;
  return (
    <HostActionPage user={props.user} host={host} title={`Drain host ${host.name}`} action={drainPath(host.id)} error={props.error}>
      <p>
        The host stops taking new homeservers (its state becomes draining). Its{" "}
        {running === 1 ? "one running homeserver moves" : `${running} running homeservers move`} to other hosts of {host.region}, {props.concurrency} at a time;
        each is offline from its final backup until it serves on its new host. What cannot move (no room elsewhere, not running) stays here, with the reason on
        the host's page.
      </p>
      <input type="hidden" name="confirm" value="drain" />
      <button type="submit" class="danger">
        Drain the host
      </button>
    </HostActionPage>
  );
}

/** Confirms cancelling a drain: what stops, what goes on, and that the host stays draining. */
export function CancelDrainPage(props: { user: User; host: Host; moving: number; error?: string | undefined }) {
  const { host } = props;
  return (
    <HostActionPage user={props.user} host={host} title={`Cancel the drain of host ${host.name}`} action={cancelDrainPath(host.id)} error={props.error}>
      <p>
        No more of its homeservers start moving. Moves under way now: {props.moving}. Each goes on to its end: its homeserver serves on its new host, or is
        rolled back here. The host stays draining (it takes no new homeservers) until you set it active on its page.
      </p>
      <input type="hidden" name="confirm" value="cancel" />
      <button type="submit" class="danger">
        Cancel the drain
      </button>
    </HostActionPage>
  );
}

/** Confirms a move: the homeserver, where it runs and where it goes, then the one button that starts it. */
export function MoveServerPage(props: { user: User; source: Host; target: Host; server: Server; serverName: string; error?: string | undefined }) {
  const { source, target, server } = props;
  return (
    <HostActionPage user={props.user} host={source} title={`Move ${props.serverName}`} action={movePath(source.id)} error={props.error}>
      <p>
        {props.serverName} moves from host {source.name} to host {target.name} ({target.region}). It keeps running on {source.name} until its final backup; it
        is offline from then until it serves on {target.name}. If the move fails before the switch, it keeps running on {source.name} as it was.
      </p>
      <input type="hidden" name="server" value={server.id} />
      <input type="hidden" name="target" value={target.id} />
      <input type="hidden" name="confirm" value="move" />
      <button type="submit" class="danger">
        Move the homeserver
      </button>
    </HostActionPage>
  );
}

/** The join-token form's values as typed. */
export interface JoinTokenFormValues {
  region: string;
  minutes: string;
}

export function JoinTokenPage(props: { user: User; regions: readonly string[]; maxMinutes: number; values: JoinTokenFormValues; error?: string | undefined }) {
  return (
    <OperatorLayout title="Add a host" user={props.user} current="join">
      <h1>Add a host</h1>
      <Alert kind="error" message={props.error} />
      <form method="post" action={JOIN_TOKENS_PATH} class="card">
        <p>A join token lets one new host enroll, once, in the region you choose. It is shown once, on the next page.</p>
        <Choices legend="Region" name="region" value={props.values.region} options={props.regions.map((region) => [region, region, "US"])} />
        <Field
          label="Valid for (minutes)"
          name="minutes"
          type="number"
          min={1}
          max={props.maxMinutes}
          value={props.values.minutes}
          hint={`From 1 to ${props.maxMinutes} minutes; unused, it stops working then.`}
        />
        <button type="submit">Create a join token</button>
      </form>
    </OperatorLayout>
  );
}

/** Text to copy: selectable as it is, and operator.js adds a button ("Copy <what>") that copies it. */
function Copyable(props: { id: string; label: string; what: string; text: string }) {
  return (
    <div class="copyable">
      <p>
        <strong>{props.label}</strong>
      </p>
      <pre id={props.id} data-copy={props.what}>
        {props.text}
      </pre>
    </div>
  );
}

export function JoinTokenCreatedPage(props: { user: User; token: string; region: string; expiresAt: Date; enrollCommand: string }) {
  return (
    <OperatorLayout title="Join token created" user={props.user} current="join" script={OPERATOR_SCRIPT_PATH}>
      <h1>Join token created</h1>
      <p class="alert notice" role="status">
        The token is shown only this once: we keep only its hash. It enrolls one host in {props.region}, until {utc(props.expiresAt)}.
      </p>
      <Copyable id="join-token" label="Join token" what="join token" text={props.token} />
      <Copyable id="enroll-command" label="On the new host, with berth-agent installed, run" what="enrollment command" text={props.enrollCommand} />
      <p class="hint">
        Passing the token in the environment keeps it out of the process list. The host appears under <a href={HOSTS_PATH}>Hosts</a> once it enrolled.
      </p>
    </OperatorLayout>
  );
}

/** The audit log's filters as typed (what the form shows again, and what the next page's link carries). */
export interface AuditFilterValues {
  actor: string;
  action: string;
  target: string;
  from: string;
  until: string;
}

export const EMPTY_AUDIT_FILTER: AuditFilterValues = { actor: "", action: "", target: "", from: "", until: "" };

function auditLink(values: AuditFilterValues, before?: number): string {
  const query = new URLSearchParams(Object.entries(values).filter(([, value]) => value !== ""));
  if (before !== undefined) query.set("before", String(before));
  const text = query.toString();
  return text === "" ? AUDIT_PATH : `${AUDIT_PATH}?${text}`;
}

export function AuditPage(props: {
  user: User;
  values: AuditFilterValues;
  entries: AuditEntry[];
  /** The id the next (older) page starts before, when there is one. */
  olderBefore: number | undefined;
  paged: boolean;
  error?: string | undefined;
}) {
  const { values } = props;
  return (
    <OperatorLayout title="Audit log" user={props.user} current="audit">
      <h1>Audit log</h1>
      <Alert kind="error" message={props.error} />
      <form method="get" action={AUDIT_PATH} class="card">
        <Field
          label="Actor (optional)"
          name="actor"
          value={values.actor}
          optional
          maxlength={320}
          hint="An email address, a host's name, system, or user:… / host:…"
        />
        <Field
          label="Action (optional)"
          name="action"
          value={values.action}
          optional
          maxlength={100}
          hint="An action such as host.state_changed, or a family such as host."
        />
        <Field
          label="Target (optional)"
          name="target"
          value={values.target}
          optional
          maxlength={300}
          hint="The id the entry is about: a host's, a homeserver's, a user's."
        />
        <Field label="From (UTC, optional)" name="from" type="datetime-local" value={values.from} optional hint="Entries at or after this time." />
        <Field label="Until (UTC, optional)" name="until" type="datetime-local" value={values.until} optional hint="Entries before this time." />
        <button type="submit">Filter</button> <a href={AUDIT_PATH}>Clear the filters</a>
      </form>
      {props.entries.length === 0 ? (
        <p>No entry matches.</p>
      ) : (
        <DataTable caption={props.paged ? "Older entries, newest first" : "Entries, newest first"} headers={["When", "Actor", "Action", "Target", "Detail"]}>
          {props.entries.map((entry) => (
            <tr>
              <td>{utc(entry.at)}</td>
              <td>
                {entry.actorName ?? entry.actor}
                {entry.actorName ? (
                  <>
                    {" "}
                    <span class="hint">{entry.actor}</span>
                  </>
                ) : null}
              </td>
              <td>{entry.action}</td>
              <td>{entry.target ?? ""}</td>
              <td>{entry.detail === null ? "" : <code>{JSON.stringify(entry.detail)}</code>}</td>
            </tr>
          ))}
        </DataTable>
      )}
      <nav aria-label="Audit log pages" class="tabs">
        {props.paged ? <a href={auditLink(values)}>Newest entries</a> : null}
        {props.olderBefore === undefined ? null : <a href={auditLink(values, props.olderBefore)}>Older entries</a>}
      </nav>
    </OperatorLayout>
  );
}

function LateBackupsTable(props: { late: LateBackup[]; domain: string }) {
  if (props.late.length === 0) return <p>Every homeserver has a successful backup from the last 26 hours.</p>;
  return (
    <DataTable
      caption="Homeservers without a successful backup for 26 hours"
      hiddenCaption
      headers={["Homeserver", "Host", "Last successful backup", "Last failure since"]}
    >
      {props.late.map((row) => (
        <tr>
          <td>
            {row.server.name}.{props.domain}
          </td>
          <td>{row.server.hostId ? <a href={hostPath(row.server.hostId)}>{row.server.hostId}</a> : ""}</td>
          <td>{row.lastSucceededAt ? utc(row.lastSucceededAt) : "never"}</td>
          <td>{row.lastFailure ? `${utc(row.lastFailure.at)}: ${row.lastFailure.error ?? "no reason recorded"}` : "none"}</td>
        </tr>
      ))}
    </DataTable>
  );
}

function StorageAlertsTable(props: { alerts: StandingStorageAlert[]; domain: string }) {
  if (props.alerts.length === 0) return <p>No homeserver's storage is past 80 % of its quota.</p>;
  return (
    <DataTable
      caption="Homeservers past a storage threshold, the fullest first"
      hiddenCaption
      headers={["Homeserver", "Host", "Threshold", "Used now", "Crossed"]}
    >
      {props.alerts.map((alert) => {
        const figures = alert.current ?? alert;
        return (
          <tr>
            <td>
              {alert.name}.{props.domain}
            </td>
            <td>{alert.hostId ? <a href={hostPath(alert.hostId)}>{alert.hostId}</a> : ""}</td>
            <td>{formatPercent(alert.threshold * 100)}</td>
            <td>
              {formatBytes(figures.usedBytes)} of {formatBytes(figures.quotaBytes)} ({formatPercent((100 * figures.usedBytes) / figures.quotaBytes)})
            </td>
            <td>
              {utc(alert.crossedAt)}
              {alert.notifiedAt ? `, mailed ${utc(alert.notifiedAt)}` : ", not mailed yet"}
            </td>
          </tr>
        );
      })}
    </DataTable>
  );
}

export function AlertsPage(props: { user: User; late: LateBackup[]; storage: StandingStorageAlert[]; domain: string }) {
  return (
    <OperatorLayout title="Alerts" user={props.user} current="alerts">
      <h1>Alerts</h1>
      <section aria-labelledby="late-heading">
        <h2 id="late-heading">Late backups</h2>
        <p>Homeservers whose last successful backup is older than 26 hours (the audit log alerts at two days).</p>
        <LateBackupsTable late={props.late} domain={props.domain} />
      </section>
      <section aria-labelledby="storage-heading">
        <h2 id="storage-heading">Storage quotas</h2>
        <p>Homeservers whose storage is past 80 % or 95 % of its quota; owner and operators were mailed once per threshold.</p>
        <StorageAlertsTable alerts={props.storage} domain={props.domain} />
      </section>
      <p>
        Legal requests: <a href={OPERATOR_LEGAL_EXPORTS_PATH}>legal exports</a>.
      </p>
    </OperatorLayout>
  );
}
