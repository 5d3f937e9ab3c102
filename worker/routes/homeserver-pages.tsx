import { Hono, type Context } from "hono";
import type { HtmlEscapedString } from "hono/utils/html";
import { z } from "zod";
import type { AdministrationJobKind, JobPayload } from "../../protocol/jobs";
import { planById } from "../billing/plans";
import { ApiError, badRequest, type ErrorStatus } from "../errors";
import type { AppEnv } from "../http/context";
import { handleForm, submitForm } from "../http/forms";
import { presentServer } from "../http/present";
import { requireLogin, type SessionAppEnv } from "../http/session";
import { parseWith } from "../http/validation";
import { noSuchServerPage } from "../pages/auth";
import {
  RegistrationPage,
  USERS_PER_PAGE,
  UsersPage,
  type PasswordLinkView,
  type PendingView,
  type TokenList,
  type TokenView,
  type UserList,
} from "../pages/homeserver-users";
import { ownedServer } from "../servers/servers";
import {
  administrationJobWithAction,
  createRegistrationToken,
  createUser,
  createUserPasswordLink,
  displayNameSchema,
  JOB_ACTIVITY,
  listRegistrationTokens,
  listUsers,
  listUsersQuery,
  localpartSchema,
  registrationTokenSchema,
  revokeRegistrationToken,
  updateUser,
  USER_ACTIONS,
  type Answer,
  type settleAdministrationJob,
} from "../servers/users";

// A homeserver's users and registration tokens as pages (mounted under /servers), for its
// logged-in owner. Each form runs the same service as the JSON API. The homeserver may take longer
// than a request waits: the page then says the job is under way and links to the page that shows
// its outcome (`?job=`), which the dashboard script opens by itself once the job is done.

type PageContext = Context<SessionAppEnv>;
type Settled = ReturnType<typeof settleAdministrationJob>;
type UserAction = JobPayload<"homeserver.users.update">["action"];

const jobQuery = z.string().min(1).max(128);
const usersPath = (serverId: string) => `/servers/${serverId}/users`;
const registrationPath = (serverId: string) => `/servers/${serverId}/registration`;

function pendingView(job: { id: string; kind: string; poll: string }, path: string, query: Record<string, string> = {}): PendingView {
  const activity = JOB_ACTIVITY[job.kind as AdministrationJobKind];
  return { poll: job.poll, outcome: `${path}?${new URLSearchParams({ ...query, job: job.id })}`, activity };
}

/** A settled answer of the kind the caller asked for: the services answer each job kind with its own shape. */
function shaped<K extends string>(settled: Settled | null, key: K): Extract<Settled, Record<K, unknown>> {
  if (!settled || !(key in settled)) throw new Error(`an administration job's answer without ${key}`);
  return settled as Extract<Settled, Record<K, unknown>>;
}

/** What a finished change to a user did, in a sentence. */
function updateNotice(action: UserAction | undefined, done: Extract<Settled, { removed: unknown }>): string {
  const { userId } = done.user;
  switch (action) {
    case "make_admin":
      return `${userId} is now an admin.`;
    case "unmake_admin":
      return `${userId} is no longer an admin.`;
    case "log_out":
      return `${userId} is logged out everywhere (${done.devicesLoggedOut} devices).`;
    case "deactivate":
    case "deactivate_and_erase":
      return `${userId} is deactivated. Removed: ${done.removed.join("; ")}.`;
    default:
      return `${userId} is changed.`;
  }
}

/** What a page shows of its list: one the request already has (or a job under way), else a fresh one, or the reason there is none. */
async function withList<
  K extends "users" | "tokens",
  V extends { list?: Extract<Settled, Record<K, unknown>>; pending?: PendingView; error?: string; status?: ErrorStatus },
>(extra: V, key: K, path: string, query: Record<string, string>, load: () => Promise<Answer<Settled>>): Promise<V> {
  if (extra.pending || extra.list) return extra;
  try {
    const answer = await load();
    return "done" in answer ? { ...extra, list: shaped(answer.done, key) } : { ...extra, pending: pendingView(answer.pending, path, query) };
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    return { ...extra, error: extra.error ?? error.message, status: extra.status ?? error.status };
  }
}

// ---------- users ----------

interface UsersExtra {
  list?: UserList;
  pending?: PendingView;
  notice?: string;
  error?: string;
  status?: ErrorStatus;
  link?: PasswordLinkView;
  created?: string;
  create?: { error?: string; localpart?: string | undefined; displayName?: string | undefined };
}

/** The users page (its list as asked by the query: a search and a page), with what the request before it said. */
async function usersView(c: PageContext, extra: UsersExtra = {}) {
  const { ctx, user } = c.var;
  const server = await ownedServer(ctx.db, user.id, c.req.param("id")!);
  const parsed = listUsersQuery.safeParse({ search: c.req.query("search") || undefined, from: c.req.query("from") || undefined });
  const query = parsed.success ? parsed.data : { search: undefined, from: 0, limit: USERS_PER_PAGE };
  const pageQuery = { ...(query.search ? { search: query.search } : {}), from: String(query.from) };
  const view = await withList(extra, "users", usersPath(server.id), pageQuery, () => listUsers(ctx, user, server.id, { ...query, limit: USERS_PER_PAGE }));
  const page = <UsersPage user={user} server={presentServer(ctx.config, server, undefined)} search={query.search ?? ""} from={query.from} {...view} />;
  return { page, status: view.status };
}

/** What `?job=` shows on the users page: the outcome of a job the page had to leave under way. */
async function usersJobOutcome(c: PageContext, jobId: string): Promise<UsersExtra> {
  const { ctx, user } = c.var;
  const serverId = c.req.param("id")!;
  const job = await administrationJobWithAction(ctx, user, serverId, parseWith(jobQuery, jobId));
  if (job.status === "pending") {
    const query = new URL(c.req.url).searchParams;
    query.delete("job");
    return { pending: pendingView(job, usersPath(serverId), Object.fromEntries(query)) };
  }
  if (job.status === "failed") return { error: job.error.message };
  switch (job.kind) {
    case "homeserver.users.list":
      return { list: shaped(job.result, "users") };
    case "homeserver.users.create":
      return { created: shaped(job.result, "userId").userId };
    case "homeserver.users.update":
      return { notice: updateNotice(job.action, shaped(job.result, "removed")) };
    default:
      return {};
  }
}

const createUserFields = z.object({ localpart: localpartSchema, displayName: displayNameSchema });

/** A form on the users page: its refusal shows the page again with the reason. */
function usersForm(c: PageContext, action: (fields: Record<string, string>) => Promise<Response>) {
  return submitForm(c, action, async (error) => (await usersView(c, { error })).page);
}

async function showUsers(c: PageContext, extra: UsersExtra, status: 200 | 201 | 202 = 200) {
  const { page } = await usersView(c, extra);
  return c.html(page, status);
}

const userAction = (action: keyof typeof USER_ACTIONS) => (c: PageContext) => usersForm(c, async () => changeUser(c, USER_ACTIONS[action]));

async function changeUser(c: PageContext, action: UserAction) {
  const serverId = c.req.param("id")!;
  const answer = await updateUser(c.var.ctx, c.var.user, serverId, c.req.param("userId")!, action);
  if ("done" in answer) return showUsers(c, { notice: updateNotice(action, shaped(answer.done, "removed")) });
  return showUsers(c, { pending: pendingView(answer.pending, usersPath(serverId)) }, 202);
}

// ---------- registration tokens ----------

interface RegistrationExtra {
  list?: TokenList;
  pending?: PendingView;
  notice?: string;
  error?: string;
  status?: ErrorStatus;
  created?: TokenView;
  create?: { error?: string; usesAllowed?: string | undefined; expiresInDays?: string | undefined };
}

async function registrationView(c: PageContext, extra: RegistrationExtra = {}) {
  const { ctx, user } = c.var;
  const server = await ownedServer(ctx.db, user.id, c.req.param("id")!);
  const view = await withList(extra, "tokens", registrationPath(server.id), {}, () => listRegistrationTokens(ctx, user, server.id));
  const page = <RegistrationPage user={user} server={presentServer(ctx.config, server, undefined)} plan={planById(server.planId)} {...view} />;
  return { page, status: view.status };
}

async function registrationJobOutcome(c: PageContext, jobId: string): Promise<RegistrationExtra> {
  const { ctx, user } = c.var;
  const serverId = c.req.param("id")!;
  const job = await administrationJobWithAction(ctx, user, serverId, parseWith(jobQuery, jobId));
  if (job.status === "pending") return { pending: pendingView(job, registrationPath(serverId)) };
  if (job.status === "failed") return { error: job.error.message };
  switch (job.kind) {
    case "homeserver.registration_tokens.list":
      return { list: shaped(job.result, "tokens") };
    case "homeserver.registration_tokens.create":
      return { created: shaped(job.result, "token").token };
    case "homeserver.registration_tokens.revoke":
      return { notice: "The registration token is revoked." };
    default:
      return {};
  }
}

async function showRegistration(c: PageContext, extra: RegistrationExtra, status: 200 | 201 | 202 = 200) {
  const { page } = await registrationView(c, extra);
  return c.html(page, status);
}

const DAY_MS = 86_400_000;
const createTokenFields = z.object({
  usesAllowed: z.coerce.number({ error: "a whole number from 1 to 1000" }).int().min(1).max(1000),
  expiresInDays: z
    .union([z.literal(""), z.coerce.number({ error: "a whole number of days from 1 to 365" }).int().min(1).max(365)])
    .optional()
    .transform((days) => (days === "" ? undefined : days)),
});

/** A page's GET: the page, or the outcome of the job named by `?job=`; another customer's server is the same 404 as a missing one. */
function serverPage(c: PageContext, render: () => Promise<{ page: HtmlEscapedString | Promise<HtmlEscapedString>; status: ErrorStatus | undefined }>) {
  return handleForm(
    c,
    async () => {
      const { page, status } = await render();
      return c.html(page, status ?? 200);
    },
    noSuchServerPage(c.var.user),
  );
}

/** The outcome of `?job=`, or the reason it cannot be shown (a job of nothing, or not this server's). */
async function outcomeOf<T extends { error?: string; status?: ErrorStatus }>(load: () => Promise<T>): Promise<T | { error: string; status: ErrorStatus }> {
  try {
    return await load();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    return { error: error.message, status: error.status };
  }
}

export const homeserverPageRoutes = new Hono<AppEnv>()
  .get("/:id/users", requireLogin, (c) => {
    const jobId = c.req.query("job");
    return serverPage(c, async () => usersView(c, jobId === undefined ? {} : await outcomeOf(() => usersJobOutcome(c, jobId))));
  })
  .post("/:id/users", requireLogin, (c) =>
    submitForm(
      c,
      async (fields) => {
        const request = parseWith(createUserFields, { localpart: fields.localpart ?? "", displayName: fields.displayName?.trim() || undefined });
        const answer = await createUser(c.var.ctx, c.var.user, c.req.param("id"), request);
        if (!("done" in answer)) return showUsers(c, { pending: pendingView(answer.pending, usersPath(c.req.param("id"))) }, 202);
        // The link is shown once, in this response only: never in a URL we redirect to, nor in history.
        return showUsers(c, { link: { userId: answer.done.userId, ...answer.done.passwordLink, reset: false } }, 201);
      },
      async (error, fields) => (await usersView(c, { create: { error, localpart: fields.localpart, displayName: fields.displayName } })).page,
    ),
  )
  .post("/:id/users/:userId/password-link", requireLogin, (c) =>
    usersForm(c, async () => {
      const link = await createUserPasswordLink(c.var.ctx, c.var.user, c.req.param("id"), c.req.param("userId"));
      return showUsers(c, { link: { ...link, reset: true } }, 201);
    }),
  )
  .post("/:id/users/:userId/admin", requireLogin, userAction("admin"))
  .post("/:id/users/:userId/unadmin", requireLogin, userAction("unadmin"))
  .post("/:id/users/:userId/log-out", requireLogin, userAction("log-out"))
  .post("/:id/users/:userId/deactivate", requireLogin, (c) =>
    usersForm(c, async (fields) => {
      if (fields.confirm !== "yes") throw badRequest("validation_failed", "Tick the box to confirm that the user can never log in again.");
      return changeUser(c, fields.erase === "yes" ? "deactivate_and_erase" : "deactivate");
    }),
  )
  .get("/:id/registration", requireLogin, (c) => {
    const jobId = c.req.query("job");
    return serverPage(c, async () => registrationView(c, jobId === undefined ? {} : await outcomeOf(() => registrationJobOutcome(c, jobId))));
  })
  .post("/:id/registration", requireLogin, (c) =>
    submitForm(
      c,
      async (fields) => {
        const { ctx, user } = c.var;
        const { usesAllowed, expiresInDays } = parseWith(createTokenFields, {
          usesAllowed: fields.usesAllowed ?? "",
          expiresInDays: fields.expiresInDays ?? "",
        });
        const expiresAt = expiresInDays === undefined ? undefined : new Date(ctx.now.getTime() + expiresInDays * DAY_MS).toISOString();
        const answer = await createRegistrationToken(ctx, user, c.req.param("id"), { usesAllowed, ...(expiresAt ? { expiresAt } : {}) });
        if (!("done" in answer)) return showRegistration(c, { pending: pendingView(answer.pending, registrationPath(c.req.param("id"))) }, 202);
        return showRegistration(c, { created: shaped(answer.done, "token").token }, 201);
      },
      async (error, fields) => (await registrationView(c, { create: { error, usesAllowed: fields.usesAllowed, expiresInDays: fields.expiresInDays } })).page,
    ),
  )
  .post("/:id/registration/:token/revoke", requireLogin, (c) =>
    submitForm(
      c,
      async () => {
        const token = parseWith(registrationTokenSchema, c.req.param("token"));
        const answer = await revokeRegistrationToken(c.var.ctx, c.var.user, c.req.param("id"), token);
        if (!("done" in answer)) return showRegistration(c, { pending: pendingView(answer.pending, registrationPath(c.req.param("id"))) }, 202);
        return showRegistration(c, { notice: `The registration token ${token} is revoked: nobody can register with it any more.` });
      },
      async (error) => (await registrationView(c, { error })).page,
    ),
  );
