import type { Child } from "hono/jsx";
import { raw } from "hono/html";

export interface Viewer {
  email: string;
}

// Messages shown after a redirect; the query string carries only the key, never text.
export const NOTICES = {
  signed_up: "Check your inbox: we sent you a link to confirm your email address. You can log in meanwhile.",
  verified: "Your email address is confirmed.",
  verification_sent: "We sent a new confirmation link. Earlier links no longer work.",
  logged_out: "You are logged out.",
  logged_out_everywhere: "You are logged out on every device.",
  reset_sent: "If that address has an account, we sent it a link to reset the password.",
  password_reset: "Your password was changed and every session logged out. Log in with your new password.",
  password_changed: "Your password was changed. Other sessions were logged out.",
  email_change_sent: "Open the link we sent to the new address to confirm the change.",
  email_changed: "Your email address was changed. Log in again.",
  server_stopping: "The homeserver is stopping.",
  server_starting: "The homeserver is starting.",
  server_deleting: "Deletion has begun: the final backup is being taken.",
  backup_started: "The backup has started.",
  restore_started: "The restore has started. The homeserver is offline until it finishes.",
  admin_password_set: "The admin password is being set on your homeserver.",
  settings_applied: "Your homeserver runs with the new settings.",
  settings_applying: "Your change is being applied: your homeserver restarts with it.",
  checks_started: "The checks have started: reload this page in a minute to see their results.",
  delegation_check_started: "Your domain's files are being checked: reload this page in a moment to see the result.",
  server_provisioning: "Your homeserver is being set up.",
  import_uploaded: "The archive is uploaded: your homeserver is made from it as soon as your domain's delegation passes its check.",
  import_cancelled: "The import is cancelled, and its archive deleted.",
  export_started: "The export has started: reload this page to follow it. We email you when it is ready.",
  host_state_changed: "The host's state is changed.",
  host_override_allowed: "This host may now take customer data although its data root is not encrypted.",
  host_override_withdrawn: "This host no longer takes customer data unless its data root is encrypted.",
  host_revoked: "The host is revoked: it can never connect again.",
  host_drain_started: "The drain has started: the host takes no new homeservers, and its homeservers are moving away.",
  host_drain_cancelled:
    "The drain is cancelled: no more homeservers start moving, those under way finish, and the host stays draining until you set it active.",
  migration_started: "The move has started: the homeserver keeps running here until its final backup.",
} as const;

export type NoticeKey = keyof typeof NOTICES;

export function noticeFor(key: string | undefined): string | undefined {
  return key && key in NOTICES ? NOTICES[key as NoticeKey] : undefined;
}

/** The public security page, linked from every page's footer. */
export const SECURITY_PATH = "/security";

/** A moment to the minute, in UTC, as operators' pages show times. */
export const utc = (at: Date | number) => `${new Date(at).toISOString().slice(0, 16).replace("T", " ")} UTC`;

/** `script`: one same-origin script of progressive enhancement; every page works without it. */
export function Layout(props: { title: string; viewer?: Viewer | null; script?: string; children?: Child }) {
  return (
    <>
      {raw("<!doctype html>")}
      <html lang="en">
        <head>
          <meta charset="utf-8" />
          <meta name="viewport" content="width=device-width, initial-scale=1" />
          <title>{`${props.title} · Berth`}</title>
          <link rel="icon" href="data:," />
          <link rel="stylesheet" href="/assets/app.css" />
          {props.script ? <script src={props.script} defer></script> : null}
        </head>
        <body>
          <header class="site">
            <a class="brand" href="/">
              Berth
            </a>
            <nav aria-label="Account">
              {props.viewer ? (
                <>
                  <a href="/servers">Servers</a>
                  <a href="/billing">Billing</a>
                  <a href="/account">Account</a>
                  <form method="post" action="/logout" class="inline">
                    <button type="submit" class="link">
                      Log out
                    </button>
                  </form>
                </>
              ) : (
                <>
                  <a href="/login">Log in</a>
                  <a href="/signup" class="button">
                    Sign up
                  </a>
                </>
              )}
            </nav>
          </header>
          <main id="main">{props.children}</main>
          <footer class="site">
            <span>Managed Matrix homeservers, hosted in the US.</span>
            <a href={SECURITY_PATH}>Security</a>
          </footer>
        </body>
      </html>
    </>
  );
}

export function Alert(props: { kind: "error" | "notice"; message?: string | undefined }) {
  if (!props.message) return null;
  return (
    <p class={`alert ${props.kind}`} role={props.kind === "error" ? "alert" : "status"}>
      {props.message}
    </p>
  );
}

export function Field(props: {
  label: string;
  name: string;
  /** Needed when another form on the page has a field of the same name: ids must be unique for labels to work. */
  id?: string;
  type?: string;
  value?: string | undefined;
  autocomplete?: string;
  hint?: string;
  minlength?: number;
  maxlength?: number;
  /** For type="number". */
  min?: number;
  max?: number;
  /** May be left empty. */
  optional?: boolean;
}) {
  const id = props.id ?? `field-${props.name}`;
  return (
    <div class="field">
      <label for={id}>{props.label}</label>
      <input
        id={id}
        name={props.name}
        type={props.type ?? "text"}
        value={props.value}
        autocomplete={props.autocomplete}
        minlength={props.minlength}
        maxlength={props.maxlength}
        min={props.min}
        max={props.max}
        aria-describedby={props.hint ? `${id}-hint` : undefined}
        required={!props.optional}
      />
      {props.hint ? (
        <p class="hint" id={`${id}-hint`}>
          {props.hint}
        </p>
      ) : null}
    </div>
  );
}

/** Radio buttons' values, labels and hints. */
export type Options = Array<[value: string, label: string, hint: string]>;

/** Radio buttons, one a line, each with its hint; `children` follow them in the fieldset. */
export function Choices(props: { legend: string; name: string; value: string; options: Options; children?: Child }) {
  return (
    <fieldset class="field">
      <legend>{props.legend}</legend>
      {props.options.map(([value, label, hint]) => (
        <label class="choice">
          <input type="radio" name={props.name} value={value} checked={props.value === value} required /> {label} <span class="hint">— {hint}</span>
        </label>
      ))}
      {props.children}
    </fieldset>
  );
}
