import { MAX_FEDERATION_SERVERS, MAX_RETENTION_DAYS, MIN_RETENTION_DAYS } from "../../protocol/homeserver-settings";
import type { User } from "../db/schema";
import type { describeSettings } from "../servers/settings";
import { Alert, Choices, Field, Layout, type Options } from "./layout";
import { ServerNav } from "./server-nav";

export type SettingsView = Awaited<ReturnType<typeof describeSettings>>;

/** The form's fields as strings: the settings shown, or what the owner sent when it was refused. */
export interface SettingsFormValues {
  registration: string;
  federation: string;
  allowList: string;
  messageRetentionDays: string;
  mediaRetentionDays: string;
  maxUploadMiB: string;
}

export function settingsFormValues(settings: SettingsView["settings"]): SettingsFormValues {
  return {
    registration: settings.registration,
    federation: settings.federation.mode,
    allowList: settings.federation.mode === "allow_list" ? settings.federation.servers.join("\n") : "",
    messageRetentionDays: settings.messageRetentionDays === null ? "" : String(settings.messageRetentionDays),
    mediaRetentionDays: settings.mediaRetentionDays === null ? "" : String(settings.mediaRetentionDays),
    maxUploadMiB: String(settings.maxUploadMiB),
  };
}

/** The latest change that is not applied, in plain words: under way, or failed and why. */
function ChangeState(props: { change: SettingsView["change"] }) {
  const { change } = props;
  if (!change) return null;
  if (change.job.status === "pending") {
    return (
      <p class="alert notice" role="status">
        Your change is being applied: your homeserver restarts with it, which takes a minute or two. Reload this page to see when it is done. Until then it runs
        with the settings below.
      </p>
    );
  }
  return (
    <p class="alert error" role="alert">
      Your last change was not applied: {change.job.error?.message ?? "the homeserver could not apply it."} Your homeserver runs with the settings below.
    </p>
  );
}

const REGISTRATION_OPTIONS: Options = [
  ["closed", "Nobody", "you add users yourself"],
  ["token", "Anyone with a registration token", "tokens you create let people register from Element"],
];
const FEDERATION_OPTIONS: Options = [
  ["on", "On", "users can talk to anyone on Matrix"],
  ["off", "Off", "only users of this homeserver talk to each other"],
  ["allow_list", "Only with the servers listed below", "every other server is refused"],
];
const RETENTION_FIELDS = [
  ["messageRetentionDays", "Delete messages older than (days)", `From ${MIN_RETENTION_DAYS} to ${MAX_RETENTION_DAYS} days; rooms may keep theirs for less.`],
  ["mediaRetentionDays", "Delete media not viewed for (days)", "Uploaded files and copies of other servers' files."],
] as const;

/** A homeserver's settings, for its owner: what its Synapse runs with, and the form that changes it. */
export function ServerSettingsPage(props: {
  user: User;
  serverId: string;
  serverName: string;
  running: boolean;
  view: SettingsView;
  values: SettingsFormValues;
  error?: string | undefined;
  notice?: string | undefined;
}) {
  const { view, values } = props;
  return (
    <Layout title={`Settings of ${props.serverName}`} viewer={props.user}>
      <p>
        <a href={`/servers/${props.serverId}`}>← {props.serverName}</a>
      </p>
      <h1>Settings of {props.serverName}</h1>
      <ServerNav serverId={props.serverId} current="settings" />
      <Alert kind="notice" message={props.notice} />
      <Alert kind="error" message={props.error} />
      <ChangeState change={view.change} />
      {props.running ? null : <p class="hint">Settings can be changed while the homeserver is running.</p>}
      <form method="post" action={`/servers/${props.serverId}/settings`} class="card">
        <Choices legend="Who can create an account" name="registration" value={values.registration} options={REGISTRATION_OPTIONS} />
        <Choices legend="Federation with other Matrix servers" name="federation" value={values.federation} options={FEDERATION_OPTIONS}>
          <label for="field-allowList">Servers allowed (with “only with the servers listed”)</label>
          <textarea id="field-allowList" name="allowList" rows={4} aria-describedby="field-allowList-hint">
            {values.allowList}
          </textarea>
          <p class="hint" id="field-allowList-hint">
            One server name a line, such as example.org or matrix.example.org:8448; up to {MAX_FEDERATION_SERVERS}.
          </p>
        </Choices>
        {RETENTION_FIELDS.map(([name, label, hint]) => (
          <Field
            label={label}
            name={name}
            type="number"
            value={values[name]}
            min={MIN_RETENTION_DAYS}
            max={MAX_RETENTION_DAYS}
            optional
            hint={`${hint} Leave it empty to keep them for as long as the homeserver exists.`}
          />
        ))}
        <Field
          label="Largest upload (MiB)"
          name="maxUploadMiB"
          type="number"
          value={values.maxUploadMiB}
          min={1}
          max={view.plan.maxUploadMiB}
          hint={`Up to ${view.plan.maxUploadMiB} MiB on the ${view.plan.name} plan.`}
        />
        <p class="hint">
          Saving restarts your homeserver with the new settings (a minute or two). If it does not come back, the previous settings are put back.
        </p>
        <button type="submit" disabled={!props.running}>
          Save settings
        </button>
      </form>
    </Layout>
  );
}
