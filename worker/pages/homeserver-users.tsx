import type { Plan } from "../billing/plans";
import type { User } from "../db/schema";
import { DEACTIVATION_REMOVES, ERASURE_REMOVES, type settleAdministrationJob } from "../servers/users";
import { formatBytes } from "./charts";
import { Alert, Layout } from "./layout";
import { ServerNav } from "./server-nav";
import { DASHBOARD_SCRIPT_PATH, type ServerView, when } from "./servers";

type Settled = ReturnType<typeof settleAdministrationJob>;
export type UserList = Extract<Settled, { users: unknown }>;
type HomeserverUser = UserList["users"][number];
export type TokenList = Extract<Settled, { tokens: unknown }>;
export type TokenView = TokenList["tokens"][number];

/** A job the homeserver has not finished yet: `poll` is its JSON, `outcome` the page that shows how it ended. */
export interface PendingView {
  poll: string;
  outcome: string;
  activity: string;
}

/** A one-time link to set a user's password, shown once, in the response that made it. */
export interface PasswordLinkView {
  userId: string;
  url: string;
  expiresAt: string;
  /** A new user's first link, or a reset of an existing user's password. */
  reset: boolean;
}

/** Users a page lists. */
export const USERS_PER_PAGE = 25;
const yesNo = (value: boolean) => (value ? "yes" : "no");
const listOf = (items: string[]) => `${items.slice(0, -1).join(", ")} and ${items.at(-1)}`;

/** Said while a job runs: without JavaScript the person checks again; the script replaces the note and follows the job. */
export function JobPending(props: { pending: PendingView }) {
  const { pending } = props;
  return (
    <div class="alert notice" role="status" id="job-pending" data-job={pending.poll} data-outcome={pending.outcome}>
      <p>Your homeserver is still {pending.activity}. This can take a minute.</p>
      <p>
        <a href={pending.outcome}>Check again</a> <span id="job-note">to see the result.</span>
      </p>
    </div>
  );
}

function ServerHeading(props: { server: ServerView; title: string; current: "users" | "registration" }) {
  return (
    <>
      <p>
        <a href="/servers">← All homeservers</a>
      </p>
      <h1>
        {props.title} of {props.server.serverName}
      </h1>
      <ServerNav serverId={props.server.id} current={props.current} />
    </>
  );
}

function OneTimeLink(props: { link: PasswordLinkView }) {
  const { link } = props;
  return (
    <section class="card" id="password-link" aria-labelledby="password-link-heading">
      <h2 id="password-link-heading">{link.reset ? `A new password link for ${link.userId}` : `${link.userId} was created`}</h2>
      <p>Give this one-time link to the person who uses {link.userId}: they open it to choose their password.</p>
      <p>
        <a href={link.url}>
          <code>{link.url}</code>
        </a>
      </p>
      <p class="hint">
        It works once and expires {when(link.expiresAt)}. It is shown only here, this once: copy it now. A new link replaces it.
        {link.reset ? ` When the password is set through it, every session ${link.userId} has is logged out.` : ""}
      </p>
    </section>
  );
}

function UserCard(props: { serverId: string; user: HomeserverUser; index: number }) {
  const { user, index } = props;
  const base = `/servers/${props.serverId}/users/${encodeURIComponent(user.userId)}`;
  const warning = `deactivate-warning-${index}`;
  return (
    <li class="card user">
      <h3>
        <code>{user.userId}</code>
      </h3>
      {user.displayName ? <p>{user.displayName}</p> : null}
      <dl class="facts">
        <dt>Admin</dt>
        <dd>{yesNo(user.admin)}</dd>
        <dt>Deactivated</dt>
        <dd>{yesNo(user.deactivated)}</dd>
        <dt>Created</dt>
        <dd>{when(user.createdAt)}</dd>
        <dt>Last seen</dt>
        <dd>{user.lastSeenAt ? when(user.lastSeenAt) : "never"}</dd>
        <dt>Devices</dt>
        <dd>{user.devices}</dd>
        <dt>Media</dt>
        <dd>{formatBytes(user.mediaBytes)}</dd>
      </dl>
      {user.deactivated ? null : (
        <details>
          <summary>
            Manage <span class="visually-hidden">{user.userId}</span>
          </summary>
          <form method="post" action={`${base}/password-link`}>
            <p class="hint">
              A one-time link for them to choose a new password; earlier links stop working. Setting the password logs out every other session they have.
            </p>
            <button type="submit">New password link</button>
          </form>
          <form method="post" action={`${base}/${user.admin ? "unadmin" : "admin"}`}>
            <p class="hint">
              {user.admin ? "They keep their account, without the homeserver's admin rights." : "An admin can administer the whole homeserver from Matrix."}
            </p>
            <button type="submit">{user.admin ? "Remove admin rights" : "Make admin"}</button>
          </form>
          <form method="post" action={`${base}/log-out`}>
            <p class="hint">Ends every session on every device; they can log in again.</p>
            <button type="submit">Log out everywhere</button>
          </form>
          <form method="post" action={`${base}/deactivate`}>
            <p class="warning" id={warning}>
              Deactivating cannot be undone. It removes {listOf(DEACTIVATION_REMOVES)}.
            </p>
            <label class="choice">
              <input type="checkbox" name="erase" value="yes" /> Also erase {listOf(ERASURE_REMOVES)}
            </label>
            <label class="choice">
              <input type="checkbox" name="confirm" value="yes" required aria-describedby={warning} /> I understand that {user.userId} can never log in again
            </label>
            <button type="submit" class="danger">
              Deactivate {user.userId}
            </button>
          </form>
        </details>
      )}
    </li>
  );
}

function UserListing(props: { server: ServerView; list: UserList; search: string; from: number }) {
  const { list, search, from } = props;
  const page = (start: number) => `/servers/${props.server.id}/users?${new URLSearchParams({ ...(search ? { search } : {}), from: String(start) })}`;
  if (list.users.length === 0) return <p>{search ? "No user matches that search." : "This homeserver has no users yet."}</p>;
  return (
    <>
      <p id="users-count">
        {`Users ${from + 1}–${from + list.users.length} of ${list.total}`}
        {search ? ` matching “${search}”` : ""}.
      </p>
      <ul class="users" aria-labelledby="users-count">
        {list.users.map((user, index) => (
          <UserCard serverId={props.server.id} user={user} index={index} />
        ))}
      </ul>
      <nav aria-label="Pages of users" class="tabs">
        {from > 0 ? <a href={page(Math.max(0, from - USERS_PER_PAGE))}>Previous page</a> : null}
        {list.nextFrom !== null ? <a href={page(list.nextFrom)}>Next page</a> : null}
      </nav>
    </>
  );
}

export function UsersPage(props: {
  user: User;
  server: ServerView;
  search: string;
  from: number;
  list?: UserList | undefined;
  pending?: PendingView | undefined;
  notice?: string | undefined;
  error?: string | undefined;
  link?: PasswordLinkView | undefined;
  /** A user whose creation finished after its request had answered: their link is one button away. */
  created?: string | undefined;
  create?: { error?: string | undefined; localpart?: string | undefined; displayName?: string | undefined };
}) {
  const { server } = props;
  const create = props.create ?? {};
  return (
    <Layout title={`Users of ${server.serverName}`} viewer={props.user} script={DASHBOARD_SCRIPT_PATH}>
      <ServerHeading server={server} title="Users" current="users" />
      <Alert kind="notice" message={props.notice} />
      <Alert kind="error" message={props.error} />
      {props.pending ? <JobPending pending={props.pending} /> : null}
      {props.link ? <OneTimeLink link={props.link} /> : null}
      {props.created ? (
        <form method="post" action={`/servers/${server.id}/users/${encodeURIComponent(props.created)}/password-link`} class="card">
          <p>{props.created} was created. They set their password through a one-time link, which you hand to them.</p>
          <button type="submit">Get the password link</button>
        </form>
      ) : null}
      <section class="card" aria-labelledby="create-user-heading">
        <h2 id="create-user-heading">Create a user</h2>
        <Alert kind="error" message={create.error} />
        <form method="post" action={`/servers/${server.id}/users`}>
          <div class="field">
            <label for="field-localpart">Username</label>
            <input
              id="field-localpart"
              name="localpart"
              value={create.localpart}
              required
              maxlength={64}
              pattern="[a-z0-9._=+\/\-]+"
              autocomplete="off"
              spellcheck={false}
              aria-describedby="field-localpart-hint"
            />
            <p class="hint" id="field-localpart-hint">
              Lower-case letters, digits and . _ = - / +; the Matrix id becomes @username:{server.serverName}.
            </p>
          </div>
          <div class="field">
            <label for="field-displayName">Display name (optional)</label>
            <input id="field-displayName" name="displayName" value={create.displayName} maxlength={256} autocomplete="off" />
          </div>
          <p class="hint">You get a one-time link for them to choose their password: nobody else, not even you, knows it.</p>
          <button type="submit">Create user</button>
        </form>
      </section>
      <section class="card" aria-labelledby="users-heading">
        <h2 id="users-heading">Users</h2>
        <form method="get" action={`/servers/${server.id}/users`}>
          <div class="field">
            <label for="field-search">Search by Matrix id or display name</label>
            <input id="field-search" name="search" type="search" value={props.search} maxlength={255} />
          </div>
          <button type="submit">Search</button>
        </form>
        {props.list ? (
          <UserListing server={server} list={props.list} search={props.search} from={props.from} />
        ) : props.pending ? (
          <p class="hint">The list shows once your homeserver has answered.</p>
        ) : null}
      </section>
    </Layout>
  );
}

export function RegistrationPage(props: {
  user: User;
  server: ServerView;
  plan: Plan | undefined;
  list?: TokenList | undefined;
  pending?: PendingView | undefined;
  notice?: string | undefined;
  error?: string | undefined;
  /** A token just made, shown at the top so it can be copied. */
  created?: TokenView | undefined;
  create?: { error?: string | undefined; usesAllowed?: string | undefined; expiresInDays?: string | undefined };
}) {
  const { server } = props;
  const create = props.create ?? {};
  return (
    <Layout title={`Registration on ${server.serverName}`} viewer={props.user} script={DASHBOARD_SCRIPT_PATH}>
      <ServerHeading server={server} title="Registration" current="registration" />
      <Alert kind="notice" message={props.notice} />
      <Alert kind="error" message={props.error} />
      {props.pending ? <JobPending pending={props.pending} /> : null}
      <p>
        A registration token lets people create their own account: in Element (or any Matrix app) they choose to create an account on{" "}
        <code>{server.homeserverUrl}</code> and give the token when asked. Tokens work only while registration is set to “by token” in{" "}
        <a href={`/servers/${server.id}/settings`}>Settings</a>.
      </p>
      {props.created ? (
        <section class="card" id="created-token" aria-labelledby="created-token-heading">
          <h2 id="created-token-heading">New registration token</h2>
          <p>
            <code>{props.created.token}</code>
          </p>
          <p class="hint">
            Registers up to {props.created.usesAllowed ?? "any number of"} accounts
            {props.created.expiresAt ? `, until ${when(props.created.expiresAt)}` : ", until its uses are spent"}. Anyone who has it can register: share it only
            with the people it is for.
          </p>
        </section>
      ) : null}
      <section class="card" aria-labelledby="create-token-heading">
        <h2 id="create-token-heading">Create a registration token</h2>
        <Alert kind="error" message={create.error} />
        <form method="post" action={`/servers/${server.id}/registration`}>
          <div class="field">
            <label for="field-usesAllowed">Uses allowed</label>
            <input
              id="field-usesAllowed"
              name="usesAllowed"
              type="number"
              min={1}
              max={1000}
              required
              value={create.usesAllowed ?? "1"}
              aria-describedby="field-usesAllowed-hint"
            />
            <p class="hint" id="field-usesAllowed-hint">
              How many accounts it can register, 1 to 1000.
              {props.plan ? ` Uses not yet taken count toward the ${props.plan.name} plan's ${props.plan.maxUsers} users.` : ""}
            </p>
          </div>
          <div class="field">
            <label for="field-expiresInDays">Expires after (days, optional)</label>
            <input
              id="field-expiresInDays"
              name="expiresInDays"
              type="number"
              min={1}
              max={365}
              value={create.expiresInDays}
              aria-describedby="field-expiresInDays-hint"
            />
            <p class="hint" id="field-expiresInDays-hint">
              Leave it empty for a token that works until its uses are spent.
            </p>
          </div>
          <button type="submit">Create token</button>
        </form>
      </section>
      <section class="card" aria-labelledby="tokens-heading">
        <h2 id="tokens-heading">Registration tokens</h2>
        {props.list ? (
          <TokenTable server={server} tokens={props.list.tokens} />
        ) : props.pending ? (
          <p class="hint">The list shows once your homeserver has answered.</p>
        ) : null}
      </section>
    </Layout>
  );
}

function TokenTable(props: { server: ServerView; tokens: TokenView[] }) {
  if (props.tokens.length === 0) return <p>No registration tokens.</p>;
  return (
    <div class="scroll">
      <table>
        <caption class="visually-hidden">Registration tokens</caption>
        <thead>
          <tr>
            <th scope="col">Token</th>
            <th scope="col">Uses allowed</th>
            <th scope="col">Uses left</th>
            <th scope="col">Pending</th>
            <th scope="col">Expires</th>
            <th scope="col">
              <span class="visually-hidden">Revoke</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {props.tokens.map((token) => (
            <tr>
              <td>
                <code>{token.token}</code>
              </td>
              <td>{token.usesAllowed ?? "unlimited"}</td>
              <td>{token.usesLeft ?? "unlimited"}</td>
              <td>{token.pending}</td>
              <td>{token.expiresAt ? when(token.expiresAt) : "never"}</td>
              <td>
                <form method="post" action={`/servers/${props.server.id}/registration/${encodeURIComponent(token.token)}/revoke`}>
                  <button type="submit" class="danger">
                    Revoke <span class="visually-hidden">{token.token}</span>
                  </button>
                </form>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <p class="hint">Pending: registrations begun with the token and not yet finished; they count as uses until they finish or lapse.</p>
    </div>
  );
}
