import type { ServerDnsStatus } from "../dns/records";
import { PASSWORD_MAX, PASSWORD_MIN } from "../auth/credentials";
import type { Plan } from "../billing/plans";
import { STORAGE_ALERT_THRESHOLDS, type User } from "../db/schema";
import { BACKUP_RETENTION_MS } from "../backups/policy";
import type { presentBackup, presentServer, presentUpkeep } from "../http/present";
import type { movesForCustomer } from "../servers/migration";
import { NAME_MAX, NAME_MIN } from "../servers/names";
import { UsageChart, formatBytes, formatPercent } from "./charts";
import { Alert, Layout } from "./layout";
import { OPERATOR_PATH } from "./operator";
import { ServerNav } from "./server-nav";

export type ServerView = ReturnType<typeof presentServer>;
/** A homeserver's storage quota as its host last measured it. */
export interface QuotaView {
  usedBytes: number;
  quotaBytes: number;
  at: Date;
}
export type BackupView = ReturnType<typeof presentBackup>;
export type UpkeepView = ReturnType<typeof presentUpkeep>;
export type MovesView = Awaited<ReturnType<typeof movesForCustomer>>;

export const DASHBOARD_SCRIPT_PATH = "/assets/dashboard.js";
const RETENTION_DAYS = BACKUP_RETENTION_MS / 86_400_000;

export const when = (iso: string | null) =>
  iso ? `${new Date(iso).toLocaleString("en-US", { dateStyle: "medium", timeStyle: "short", timeZone: "UTC" })} UTC` : "—";

/** Element Web's login screen with our homeserver filled in (hs_url: long-standing, but undocumented for the web app). */
export const elementLink = (homeserverUrl: string) => `https://app.element.io/#/login?hs_url=${encodeURIComponent(homeserverUrl)}`;
/** Element X on a phone, through Element's documented provisioning link: the app finds the homeserver from the server name. */
const elementMobileLink = (serverName: string) => `https://mobile.element.io/element?account_provider=${encodeURIComponent(serverName)}`;

export const STEP_TEXT: Record<string, string> = {
  "homeserver.provision": "Setting up",
  "homeserver.import": "Importing",
  "homeserver.stop": "Stopping",
  "homeserver.start": "Starting",
  "homeserver.suspend": "Suspending",
  "homeserver.resume": "Resuming",
  "homeserver.delete": "Deleting",
  "homeserver.upgrade": "Upgrading",
  "homeserver.set_admin_password": "Setting the admin password",
  "homeserver.backup": "Backing up",
  "homeserver.restore": "Restoring",
  "homeserver.resize": "Applying the new plan",
  "homeserver.upkeep": "Database and media upkeep",
  "homeserver.delegation_check": "Checking your domain's well-knowns",
  "homeserver.restore_verify": "Verifying the latest backup",
  "homeserver.checks": "Checking the promises",
  "homeserver.full_export": "Exporting",
  "homeserver.rooms.list": "Listing rooms",
  "homeserver.rooms.block": "Blocking a room",
  "homeserver.rooms.purge": "Removing a room",
};

function StatusBadge(props: { status: string }) {
  const tone = props.status === "running" ? "ok" : props.status === "failed" ? "bad" : "warn";
  return <span class={`badge ${tone}`}>{props.status}</span>;
}

interface RegionChoice {
  region: string;
  hasRoom: boolean;
}

export function ServersPage(props: {
  user: User;
  servers: ServerView[];
  regions: RegionChoice[];
  /** What a name turns into, for the hint. */
  exampleServerName: string;
  plan: Plan | undefined;
  error?: string | undefined;
  name?: string | undefined;
  region?: string | undefined;
  serverName?: string | undefined;
  publishDelegationLater?: boolean | undefined;
}) {
  return (
    <Layout title="Servers" viewer={props.user} script={DASHBOARD_SCRIPT_PATH}>
      <h1>Your homeservers</h1>
      {props.user.role === "operator" ? (
        <p>
          You are an operator: <a href={OPERATOR_PATH}>open the operator console</a>.
        </p>
      ) : null}
      <Alert kind="error" message={props.error} />
      {props.servers.length === 0 ? (
        <p>You have no homeserver yet.</p>
      ) : (
        <ul class="servers">
          {props.servers.map((server) => (
            <li class="card">
              <h2>
                <a href={`/servers/${server.id}`}>{server.serverName}</a>
              </h2>
              <p>
                <StatusBadge status={server.status} /> · {server.region}
                {server.statusReason ? ` · ${server.statusReason}` : ""}
              </p>
            </li>
          ))}
        </ul>
      )}
      <section class="card" aria-labelledby="create-heading">
        <h2 id="create-heading">Create a homeserver</h2>
        {props.plan ? null : (
          <p>
            A homeserver needs a subscription: <a href="/billing">choose a plan</a> first.
          </p>
        )}
        <form method="post" action="/servers" data-name-check>
          <div class="field">
            <label for="field-name">Name</label>
            <input
              id="field-name"
              name="name"
              value={props.name}
              required
              minlength={NAME_MIN}
              maxlength={NAME_MAX}
              autocomplete="off"
              spellcheck={false}
              aria-describedby="field-name-hint field-name-problem"
            />
            <p class="hint" id="field-name-hint">
              {NAME_MIN} to {NAME_MAX} lower-case letters, digits and hyphens. It becomes your homeserver's address, as in {props.exampleServerName}, and its
              Matrix server name unless you give your own domain below; it can never change.
            </p>
            <p class="problem" id="field-name-problem" aria-live="polite"></p>
          </div>
          <fieldset class="field">
            <legend>Your own domain (optional)</legend>
            <label for="field-server-name">Domain</label>
            <input
              id="field-server-name"
              name="serverName"
              value={props.serverName}
              maxlength={254}
              autocomplete="off"
              spellcheck={false}
              aria-describedby="field-server-name-hint"
            />
            <p class="hint" id="field-server-name-hint">
              For user ids like @alice:example.com, give a domain of yours (example.com): it becomes your Matrix server name instead, and can never change. Your
              homeserver is still served at its name under ours; you publish two small files on your domain, which we show you, and it is set up once they are
              right.
            </p>
            <label for="field-publish-later">
              <input id="field-publish-later" type="checkbox" name="publishDelegationLater" value="yes" checked={props.publishDelegationLater} /> Set it up at
              once: I will publish the files later (until then, federation and Matrix apps fail).
            </label>
          </fieldset>
          <fieldset class="field">
            <legend>Region</legend>
            {props.regions.map((choice, index) => (
              <label class="choice">
                <input
                  type="radio"
                  name="region"
                  value={choice.region}
                  required
                  checked={props.region ? props.region === choice.region : index === props.regions.findIndex((r) => r.hasRoom)}
                />{" "}
                {choice.region} <span class="hint">{choice.hasRoom ? "— has room" : "— full right now"}</span>
              </label>
            ))}
          </fieldset>
          <button type="submit">Create homeserver</button>
        </form>
      </section>
    </Layout>
  );
}

export interface UsageView {
  range: string;
  ranges: string[];
  from: Date;
  to: Date;
  points: {
    at: Date;
    cpuPercent: number;
    memoryBytes: number;
    networkRxBytes: number;
    networkTxBytes: number;
    blockReadBytes: number;
    blockWriteBytes: number;
    storageBytes: number | null;
  }[];
}

function LiveStatus(props: { server: ServerView; dns: ServerDnsStatus | null }) {
  const job = props.server.lastJob;
  const underWay = job && (job.status === "queued" || job.status === "sent" || job.status === "acked");
  return (
    <section class="card" aria-labelledby="status-heading">
      <h2 id="status-heading">Status</h2>
      <div
        id="live-status"
        aria-live="polite"
        data-events={`/api/servers/${props.server.id}/events`}
        data-page={`/servers/${props.server.id}`}
        data-state={`${props.server.status}/${job?.status ?? ""}`}
      >
        <p>
          <span data-field="status">
            <StatusBadge status={props.server.status} />
          </span>{" "}
          <span data-field="reason">{props.server.statusReason ?? ""}</span>
        </p>
        <p data-field="step" hidden={!underWay}>
          {job ? `${STEP_TEXT[job.kind] ?? job.kind}: ${job.message ?? job.status}` : ""}
        </p>
        <progress data-field="progress" max={1} value={job?.progress ?? 0} hidden={!underWay} aria-label="Progress">
          {Math.round((job?.progress ?? 0) * 100)} %
        </progress>
        {job?.status === "failed" && job.error ? <p class="problem">{`${STEP_TEXT[job.kind] ?? job.kind} failed: ${job.error}`}</p> : null}
      </div>
      {props.dns?.state === "waiting" ? (
        <p class="problem" id="dns-waiting">
          {`Waiting for DNS: ${props.dns.reason}. Your homeserver runs meanwhile, but its address does not reach it yet and its certificate waits for it; we try again every hour.`}
        </p>
      ) : null}
      <p class="hint" id="live-note">
        This page shows the state as of {when(props.server.updatedAt)}; <a href={`/servers/${props.server.id}`}>reload</a> for the latest.
      </p>
    </section>
  );
}

/** A move to another host: how far along while it runs, then when it ended and how long the homeserver was down. */
function Move(props: { moves: MovesView }) {
  const { move, lastMove } = props.moves;
  if (!move && !lastMove) return null;
  return (
    <section class="card" id="move" data-refresh aria-labelledby="move-heading">
      <h2 id="move-heading">Host</h2>
      {move ? (
        <>
          <p>
            We are moving this homeserver to another host of its region ({move.message}). It keeps its name, its data and its signing key; it is unreachable for
            a short while during the move.
          </p>
          <progress max={1} value={move.progress} aria-label="Move progress">
            {Math.round(move.progress * 100)} %
          </progress>
        </>
      ) : lastMove?.outcome === "moved" ? (
        <p>
          Moved to another host on {when(lastMove.finishedAt)}; it was unreachable for {downtimeText(lastMove.downtimeMs)}.
        </p>
      ) : lastMove ? (
        <p>
          A move to another host on {when(lastMove.finishedAt)} did not complete; the homeserver stayed where it was, with its data as it was
          {lastMove.downtimeMs ? ` (it was unreachable for ${downtimeText(lastMove.downtimeMs)})` : ""}.
        </p>
      ) : null}
    </section>
  );
}

function downtimeText(ms: number | null): string {
  if (ms === null) return "an unknown time";
  return ms < 60_000 ? `${Math.max(1, Math.round(ms / 1000))} s` : `${Math.round(ms / 60_000)} min`;
}

function Connect(props: { server: ServerView; adminLink?: { url: string; expiresAt: string } | undefined }) {
  const { server } = props;
  return (
    <section class="card" id="connect" data-refresh aria-labelledby="connect-heading">
      <h2 id="connect-heading">How to connect</h2>
      <dl class="facts">
        <dt>Homeserver URL</dt>
        <dd>
          <code>{server.homeserverUrl}</code>
        </dd>
        <dt>Server name</dt>
        <dd>
          <code>{server.serverName}</code>
          {new URL(server.homeserverUrl).hostname === server.serverName ? null : (
            <>
              {" "}
              (your own domain: <a href={`/servers/${server.id}/delegation`}>its delegation</a>)
            </>
          )}
        </dd>
      </dl>
      <p>
        <a class="button" href={elementLink(server.homeserverUrl)} rel="noopener noreferrer">
          Open in Element
        </a>{" "}
        <a href={elementMobileLink(server.serverName)} rel="noopener noreferrer">
          Element X on your phone
        </a>
      </p>
      <p class="hint">In any other Matrix app, choose a custom homeserver and enter the URL above.</p>
      <h3>First admin's password</h3>
      {props.adminLink ? (
        <div>
          <p>
            Your one-time link (valid until {when(props.adminLink.expiresAt)}, usable once): <a href={props.adminLink.url}>set the admin password</a>
          </p>
          <p class="hint">Nobody else sees this link; a new one replaces it.</p>
        </div>
      ) : server.status === "running" ? (
        <form method="post" action={`/servers/${server.id}/admin-password-link`}>
          <p class="hint">The admin account was made with a random password nobody knows. Get a one-time link to set yours.</p>
          <button type="submit">Get a one-time link</button>
        </form>
      ) : (
        <p class="hint">Available once the homeserver is running.</p>
      )}
    </section>
  );
}

function Controls(props: { server: ServerView }) {
  const { server } = props;
  return (
    <section class="card" id="controls" data-refresh aria-labelledby="controls-heading">
      <h2 id="controls-heading">Stop and start</h2>
      {server.status === "running" ? (
        <form method="post" action={`/servers/${server.id}/stop`}>
          <p class="hint">Stopping takes the homeserver offline; nothing is deleted.</p>
          <button type="submit">Stop</button>
        </form>
      ) : server.status === "stopped" ? (
        <form method="post" action={`/servers/${server.id}/start`}>
          <button type="submit">Start</button>
        </form>
      ) : (
        <p class="hint">Stop and start are available when the homeserver is running or stopped.</p>
      )}
    </section>
  );
}

function Backups(props: { server: ServerView; backups: BackupView[] }) {
  const { server } = props;
  const restorable = props.backups.filter((backup) => backup.status === "succeeded");
  return (
    <section class="card" id="backups" data-refresh aria-labelledby="backups-heading">
      <h2 id="backups-heading">Backups</h2>
      <p class="hint">
        A backup is taken every day, encrypted on the host before upload. Each is kept {RETENTION_DAYS} days; the newest successful one is always kept.
      </p>
      <form method="post" action={`/servers/${server.id}/backups`}>
        <button type="submit">Back up now</button>
      </form>
      {props.backups.length === 0 ? (
        <p>No backups yet.</p>
      ) : (
        <div class="scroll">
          <table>
            <caption class="visually-hidden">Backups, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Date</th>
                <th scope="col">Kind</th>
                <th scope="col">Size</th>
                <th scope="col">Status</th>
                <th scope="col">Kept until</th>
              </tr>
            </thead>
            <tbody>
              {props.backups.map((backup) => (
                <tr>
                  <td>{when(backup.createdAt)}</td>
                  <td>{backup.trigger}</td>
                  <td>
                    {backup.sizeBytes !== null
                      ? formatBytes(backup.sizeBytes)
                      : backup.status === "running"
                        ? `${formatBytes(backup.progressBytes ?? 0)} so far`
                        : "—"}
                  </td>
                  <td>
                    {backup.status}
                    {backup.error ? `: ${backup.error}` : ""}
                  </td>
                  <td>{backup.keptUntil ? when(backup.keptUntil) : "while it is the newest"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {restorable.length > 0 ? (
        <form method="post" action={`/servers/${server.id}/restore`} class="restore">
          <h3>Restore</h3>
          <div class="field">
            <label for="field-backupId">Backup to restore</label>
            <select id="field-backupId" name="backupId" required>
              {restorable.map((backup) => (
                <option value={backup.id}>{`${when(backup.createdAt)} (${backup.trigger}, ${formatBytes(backup.sizeBytes ?? 0)})`}</option>
              ))}
            </select>
          </div>
          <p class="warning" id="restore-warning">
            Restoring replaces everything on {server.serverName} — its users, rooms, messages, media and settings — with the backup's copy. Anything that
            happened after the backup was taken is lost. The homeserver is offline while it restores; if the restore fails, it is left as it was.
          </p>
          <label class="choice">
            <input type="checkbox" name="confirm" value="yes" required aria-describedby="restore-warning" /> I understand that the current data will be replaced
          </label>
          <button type="submit" class="danger">
            Restore this backup
          </button>
        </form>
      ) : null}
    </section>
  );
}

const [WARN_AT, FULL_SOON_AT] = STORAGE_ALERT_THRESHOLDS;
const sharePercent = (quota: QuotaView) => Math.floor((quota.usedBytes / quota.quotaBytes) * 100);

/** At 80 % and 95 % of the quota: what happens when it is full, and what to do before. */
function StorageBanner(props: { server: ServerView; quota: QuotaView | undefined }) {
  const { quota } = props;
  if (!quota || quota.usedBytes / quota.quotaBytes < WARN_AT) return null;
  const almostFull = quota.usedBytes / quota.quotaBytes >= FULL_SOON_AT;
  return (
    <div class={`alert ${almostFull ? "error" : "warn"}`} id="storage-banner" role={almostFull ? "alert" : "status"}>
      <p>
        <strong>{almostFull ? "Storage almost full" : "Storage filling up"}:</strong> {props.server.serverName} uses {formatBytes(quota.usedBytes)} of its{" "}
        {formatBytes(quota.quotaBytes)} ({sharePercent(quota)} %).
      </p>
      <p>
        When it is full, uploads (images, files) are refused; messages keep working for a while, until the database has no room left either. Delete media you no
        longer need (in your Matrix app, or purge old rooms on the <a href={`/servers/${props.server.id}/rooms`}>Rooms</a> page), or{" "}
        <a href="/billing">upgrade to a plan with more storage</a>.
      </p>
    </div>
  );
}

function Usage(props: { server: ServerView; usage: UsageView; plan: Plan | undefined; quota: QuotaView | undefined }) {
  const { usage, plan } = props;
  const times = usage.points.map((point) => point.at);
  const series = (pick: (point: UsageView["points"][number]) => number) => usage.points.map(pick);
  const chart = { times, from: usage.from, to: usage.to };
  // Samples taken before the agent first measured the disk (or from older agents) have no storage figure.
  const measured = usage.points.filter((point): point is typeof point & { storageBytes: number } => point.storageBytes !== null);
  return (
    <section class="card" aria-labelledby="usage-heading">
      <h2 id="usage-heading">Usage</h2>
      {plan ? (
        <p id="plan-line">
          Plan: {plan.name} — {plan.resources.memoryMiB} MiB memory, {plan.resources.cpus} CPU, {plan.resources.storageGiB} GiB storage, up to {plan.maxUsers}{" "}
          users
          {props.server.planApplied ? "" : " (being applied to the homeserver)"}.
        </p>
      ) : null}
      {props.quota ? (
        <p id="storage-line">
          Storage: {formatBytes(props.quota.usedBytes)} used of {formatBytes(props.quota.quotaBytes)} ({sharePercent(props.quota)} %), as of{" "}
          {when(props.quota.at.toISOString())}.
        </p>
      ) : null}
      <nav aria-label="Usage period" class="tabs">
        {usage.ranges.map((range) => (
          <a href={`/servers/${props.server.id}?range=${range}#usage-heading`} aria-current={range === usage.range ? "page" : undefined}>
            {range === "24h" ? "24 hours" : range === "7d" ? "7 days" : "30 days"}
          </a>
        ))}
      </nav>
      <UsageChart
        id="chart-cpu"
        title="CPU"
        {...chart}
        lines={[{ label: "CPU", values: series((point) => point.cpuPercent) }]}
        format={formatPercent}
        limit={plan ? { value: plan.resources.cpus * 100, label: `Plan limit ${plan.resources.cpus} CPU (${plan.resources.cpus * 100} %)` } : undefined}
      />
      <UsageChart
        id="chart-memory"
        title="Memory"
        {...chart}
        lines={[{ label: "Memory", values: series((point) => point.memoryBytes) }]}
        format={formatBytes}
        limit={plan ? { value: plan.resources.memoryMiB * 1024 * 1024, label: `Plan limit ${plan.resources.memoryMiB} MiB` } : undefined}
      />
      <UsageChart
        id="chart-storage"
        title="Storage (database, media and keys on disk)"
        times={measured.map((point) => point.at)}
        from={usage.from}
        to={usage.to}
        lines={[{ label: "Stored", values: measured.map((point) => point.storageBytes) }]}
        format={formatBytes}
        limit={
          props.quota
            ? { value: props.quota.quotaBytes, label: `Quota ${formatBytes(props.quota.quotaBytes)}` }
            : plan
              ? { value: plan.resources.storageGiB * 1024 ** 3, label: `Plan includes ${plan.resources.storageGiB} GiB` }
              : undefined
        }
      />
      <UsageChart
        id="chart-network"
        title="Network (total since the homeserver last started)"
        {...chart}
        lines={[
          { label: "Received", values: series((point) => point.networkRxBytes) },
          { label: "Sent", values: series((point) => point.networkTxBytes) },
        ]}
        format={formatBytes}
      />
      <UsageChart
        id="chart-disk"
        title="Storage I/O (total since the homeserver last started)"
        {...chart}
        lines={[
          { label: "Written", values: series((point) => point.blockWriteBytes) },
          { label: "Read", values: series((point) => point.blockReadBytes) },
        ]}
        format={formatBytes}
      />
    </section>
  );
}

const count = (n: number) => n.toLocaleString("en-US");

function Upkeep(props: { upkeep: UpkeepView | null; remoteMediaRetentionDays: number }) {
  const { upkeep } = props;
  return (
    <section class="card" id="upkeep" aria-labelledby="upkeep-heading">
      <h2 id="upkeep-heading">Database and media upkeep</h2>
      <p class="hint">
        Once a day we compress the rooms' stored state, delete cached copies of other servers' media not viewed for {props.remoteMediaRetentionDays} days (they
        are fetched again when someone asks) and tidy the database. Your own uploads are kept.
      </p>
      {upkeep ? (
        <dl class="facts">
          <dt>Last upkeep</dt>
          <dd>{when(upkeep.finishedAt)}</dd>
          <dt>Database size</dt>
          <dd>
            {formatBytes(upkeep.databaseBytes.before)} → {formatBytes(upkeep.databaseBytes.after)}
          </dd>
          <dt>Room state rows</dt>
          <dd>
            {count(upkeep.stateGroupsStateRows.before)} → {count(upkeep.stateGroupsStateRows.after)}
          </dd>
          <dt>Cached media removed</dt>
          <dd>
            {count(upkeep.remoteMediaDeleted)} {upkeep.remoteMediaDeleted === 1 ? "file" : "files"} (media {formatBytes(upkeep.mediaBytes.before)} →{" "}
            {formatBytes(upkeep.mediaBytes.after)})
          </dd>
        </dl>
      ) : (
        <p>No upkeep has run yet.</p>
      )}
    </section>
  );
}

function Delete(props: { server: ServerView }) {
  const { server } = props;
  return (
    <section class="card" aria-labelledby="delete-heading">
      <h2 id="delete-heading">Delete this homeserver</h2>
      <p id="delete-warning">
        We first take a final backup. Once it has succeeded, the homeserver and all its data on our host are destroyed right away; if the backup fails, nothing
        is deleted and the homeserver stays as it is. The final backup, like the others, is kept {RETENTION_DAYS} days from when it was taken and then
        destroyed. The name {server.name} is never given out again.
      </p>
      <form method="post" action={`/servers/${server.id}/delete`}>
        <div class="field">
          <label for="field-confirmName">Type the server's name, {server.name}, to confirm</label>
          <input
            id="field-confirmName"
            name="confirmName"
            required
            autocomplete="off"
            spellcheck={false}
            pattern={server.name}
            aria-describedby="delete-warning"
          />
        </div>
        <button type="submit" class="danger">
          Delete {server.serverName}
        </button>
      </form>
    </section>
  );
}

export function ServerPage(props: {
  user: User;
  server: ServerView;
  plan: Plan | undefined;
  backups: BackupView[];
  usage: UsageView;
  upkeep: UpkeepView | null;
  remoteMediaRetentionDays: number;
  moves: MovesView;
  /** Its storage quota's newest figures; none before its host first reported them. */
  quota: QuotaView | undefined;
  /** Its DNS records: null where none are kept (development). */
  dns: ServerDnsStatus | null;
  adminLink?: { url: string; expiresAt: string } | undefined;
  notice?: string | undefined;
  error?: string | undefined;
}) {
  const { server } = props;
  return (
    <Layout title={server.serverName} viewer={props.user} script={DASHBOARD_SCRIPT_PATH}>
      <p>
        <a href="/servers">← All homeservers</a>
      </p>
      <h1>{server.serverName}</h1>
      <ServerNav serverId={server.id} current="overview" />
      <Alert kind="notice" message={props.notice} />
      <Alert kind="error" message={props.error} />
      <StorageBanner server={server} quota={props.quota} />
      <LiveStatus server={server} dns={props.dns} />
      <Move moves={props.moves} />
      <Connect server={server} adminLink={props.adminLink} />
      <Controls server={server} />
      <Usage server={server} usage={props.usage} plan={props.plan} quota={props.quota} />
      <Backups server={server} backups={props.backups} />
      <Upkeep upkeep={props.upkeep} remoteMediaRetentionDays={props.remoteMediaRetentionDays} />
      <Delete server={server} />
    </Layout>
  );
}

export function AdminPasswordPage(props: { user: User; server: ServerView; token: string; error?: string | undefined }) {
  return (
    <Layout title="Set the admin password" viewer={props.user}>
      <h1>Set the admin password of {props.server.serverName}</h1>
      <Alert kind="error" message={props.error} />
      <form method="post" action={`/servers/${props.server.id}/admin-password`} class="card">
        <input type="hidden" name="token" value={props.token} />
        <div class="field">
          <label for="field-password">New admin password</label>
          <input id="field-password" name="password" type="password" autocomplete="new-password" required minlength={PASSWORD_MIN} maxlength={PASSWORD_MAX} />
        </div>
        <p class="hint">Only a hash of it reaches the host. This link works once.</p>
        <button type="submit">Set password</button>
      </form>
    </Layout>
  );
}

/** The page a one-time link opens for a homeserver's user (who has no account with us) to set their password. */
export function UserPasswordPage(props: {
  viewer: User | null;
  serverId: string;
  token: string;
  link: { userId: string; serverName: string };
  error?: string | undefined;
}) {
  return (
    <Layout title="Set your Matrix password" viewer={props.viewer}>
      <h1>Set the password of {props.link.userId}</h1>
      <Alert kind="error" message={props.error} />
      <form method="post" action={`/homeservers/${props.serverId}/set-password`} class="card">
        <input type="hidden" name="token" value={props.token} />
        <div class="field">
          <label for="field-password">New password</label>
          <input id="field-password" name="password" type="password" autocomplete="new-password" required minlength={PASSWORD_MIN} maxlength={PASSWORD_MAX} />
        </div>
        <p class="hint">
          For logging in to {props.link.serverName} in Element or any Matrix app. Only a hash of it reaches the homeserver; every session this user had is
          logged out. This link works once.
        </p>
        <button type="submit">Set password</button>
      </form>
    </Layout>
  );
}
