import { and, eq, ne } from "drizzle-orm";
import { z } from "zod";
import { SETTINGS_ROLLED_BACK } from "../../protocol/homeserver-settings";
import { JOBS, type AdministrationJobKind, type JobPayload, type JobResult } from "../../protocol/jobs";
import { audit, type Actor } from "../audit/audit";
import { consumeRateLimits, requireUnderRateLimit } from "../auth/rate-limit";
import { planById, type Plan } from "../billing/plans";
import type { WorkerConfig } from "../config";
import type { RequestContext, WorkContext } from "../context";
import { servers, type Job, type Server, type User } from "../db/schema";
import { ApiError, conflict, notFound } from "../errors";
import { dispatchJob } from "../fleet/hosts";
import { awaitJob, getJob, JOB_DEADLINE_EXCEEDED, payloadOf, resultOf } from "../fleet/jobs";
import { settleRoomJob } from "./room-jobs";
import { createPasswordLink, invalidPasswordLink, passwordLinkUser, releasePasswordLink, usePasswordLink } from "./admin-password";
import { homeserverUrlOf, matrixServerNameOf, ownedServer, requireMayRun } from "./servers";

// A homeserver's users and registration tokens, administered by its owner. The Worker holds no
// credential of the homeserver: each action is a job the host's agent runs against Synapse's
// admin API with an account that exists only on the host.

/** How long a request waits for its job before it answers 202 with the job to poll. */
export const ADMINISTRATION_WAIT_MS = 8_000;
/** A new user's (or a reset) password link: long enough to reach a colleague, at most a day. */
const USER_LINK_LIFETIME_MS = 24 * 60 * 60_000;

/** The catalogue's own rules, so a request is refused here with the same reasons the job would be. */
export const localpartSchema = JOBS["homeserver.users.create"].payload.shape.localpart;
export const displayNameSchema = JOBS["homeserver.users.create"].payload.shape.displayName;
export const registrationTokenSchema = JOBS["homeserver.registration_tokens.revoke"].payload.shape.token;

/** A page of a list a host makes: an offset, and at most 100. */
export const pageQuery = {
  from: z
    .string()
    .regex(/^\d{1,9}$/, "a whole number")
    .transform(Number)
    .default(0),
  limit: z
    .string()
    .regex(/^\d{1,3}$/, "a whole number")
    .transform(Number)
    .pipe(z.number().min(1).max(100))
    .default(25),
};

export const listUsersQuery = z.strictObject({
  search: z.string().trim().max(255).optional(),
  ...pageQuery,
});

export const USER_ACTIONS = {
  admin: "make_admin",
  unadmin: "unmake_admin",
  "log-out": "log_out",
} as const satisfies Record<string, JobPayload<"homeserver.users.update">["action"]>;

/** What deactivating removes, and what erasing adds (Synapse's deactivation, with erase or without). */
export const DEACTIVATION_REMOVES = ["the user's password, so they can no longer log in", "every device and session", "their membership of every room"];
export const ERASURE_REMOVES = ["their display name and avatar", "the media they uploaded", "their messages, for anyone who joins a room later"];

type RunningServer = Server & { hostId: string };

/** A server the owner may administer: theirs, running, on an account that may run homeservers. */
export async function administeredServer(ctx: WorkContext, user: User, serverId: string): Promise<RunningServer> {
  const server = requireRunning(await ownedServer(ctx.db, user.id, serverId));
  await requireMayRun(ctx.db, user.id);
  return server;
}

function requireRunning(server: Server): RunningServer {
  if (server.status !== "running" || !server.hostId) {
    throw conflict("invalid_state", `The homeserver is ${server.status}; its users, registration tokens and rooms can be managed while it is running.`);
  }
  return { ...server, hostId: server.hostId };
}

function planOf(server: Server): Plan {
  const plan = planById(server.planId);
  if (!plan) throw new Error(`server ${server.id} has an unknown plan`);
  return plan;
}

/** `@localpart:<server name>`. */
export function matrixUserIdOf(config: WorkerConfig, server: Server, localpart: string): string {
  return `@${localpart}:${matrixServerNameOf(config, server)}`;
}

/** `userId` if it names a user of this homeserver; a 404 for another homeserver's, a 400 for what is no user id. */
export function localUserId(config: WorkerConfig, server: Server, userId: string): string {
  const separator = userId.indexOf(":");
  if (!userId.startsWith("@") || separator < 0 || !localpartSchema.safeParse(userId.slice(1, separator)).success) {
    throw new ApiError(400, "validation_failed", "userId: a Matrix user id, @localpart:server.");
  }
  if (userId.slice(separator + 1) !== matrixServerNameOf(config, server)) throw notFound("No such user on this homeserver.");
  return userId;
}

export async function throttle(ctx: WorkContext, server: Server, name: "homeserver_changes_server" | "homeserver_reads_server") {
  const rules = ctx.config.rateLimits;
  await consumeRateLimits(
    ctx.db,
    rules,
    [{ name, subject: server.id }],
    ctx.now,
    (seconds) => `This homeserver has had ${rules[name].limit} of these within the hour; try again in ${Math.ceil(seconds / 60)} minutes.`,
  );
}

/**
 * Sends the job, audits it as `actor` doing `action` (`detail` must hold no secret) in the job's
 * own write, and waits a few seconds for it: the job as it finished, or as it stands.
 */
export async function run<K extends AdministrationJobKind>(
  ctx: WorkContext,
  server: RunningServer,
  job: { kind: K; payload: JobPayload<K> },
  record?: { actor: Actor; action: string; detail: Record<string, unknown> },
): Promise<Job> {
  const id = crypto.randomUUID();
  const audited = record ? [audit(ctx.db, ctx.now, record.actor, record.action, server.id, { ...record.detail, jobId: id })] : [];
  await dispatchJob(ctx.db, ctx.env, { id, hostId: server.hostId, ...job }, ctx.now, audited);
  return awaitJob(ctx.db, id, { withinMs: ADMINISTRATION_WAIT_MS });
}

/** A job still under way: what a request answers with 202, to poll at GET /api/servers/:id/jobs/:jobId. */
export type Pending = { pending: ReturnType<typeof presentAdministrationJob> };
export type Answer<T> = { done: T } | Pending;

function isFinished(job: Job): boolean {
  return job.status === "succeeded" || job.status === "failed";
}

/** The finished job's answer (or its refusal, thrown), or the job still under way. */
export function answer(server: Server, job: Job): Answer<ReturnType<typeof settleAdministrationJob>> {
  return isFinished(job) ? { done: settleAdministrationJob(server, job) } : { pending: presentAdministrationJob(server, job) };
}

// ---------- what a finished job says, in our words ----------

const presentTime = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function presentUser(user: JobResult<"homeserver.users.list">["users"][number]) {
  return { ...user, createdAt: presentTime(user.createdAt), lastSeenAt: presentTime(user.lastSeenAt) };
}

function presentToken(token: JobResult<"homeserver.registration_tokens.list">["tokens"][number]) {
  return {
    token: token.token,
    usesAllowed: token.usesAllowed,
    pending: token.pending,
    completed: token.completed,
    usesLeft: token.usesAllowed === null ? null : Math.max(0, token.usesAllowed - token.pending - token.completed),
    expiresAt: presentTime(token.expiresAt),
  };
}

function userLimit(server: Server, refused: { users: number; reserved: number; maxUsers: number }): ApiError {
  const plan = planOf(server);
  return conflict(
    "user_limit",
    `The ${plan.name} plan allows ${refused.maxUsers} users on a homeserver; this one has ${refused.users}, and its registration tokens may add ${refused.reserved} more. Deactivate users, revoke tokens or change plans to add more.`,
  );
}

/** A failed job as its customer reads it: never the agent's words (operators see those in the job). */
function failure(job: Job, what: string): ApiError {
  if (job.error === JOB_DEADLINE_EXCEEDED) {
    return new ApiError(503, "homeserver_unavailable", `Your homeserver did not answer in time while ${what}. Check that it is running, then try again.`);
  }
  return new ApiError(502, "homeserver_error", `Your homeserver could not finish ${what}; our operators can see the details. Try again in a while.`);
}

/** What each job does, as its customer reads it: "while <it>", "still <it>". */
export const JOB_ACTIVITY: Record<AdministrationJobKind, string> = {
  "homeserver.users.list": "listing its users",
  "homeserver.users.create": "creating the user",
  "homeserver.users.set_password": "setting the password",
  "homeserver.users.update": "changing the user",
  "homeserver.registration_tokens.list": "listing its registration tokens",
  "homeserver.registration_tokens.create": "creating the registration token",
  "homeserver.registration_tokens.revoke": "revoking the registration token",
  "homeserver.rooms.list": "listing its rooms",
  "homeserver.rooms.block": "changing the room's block",
  "homeserver.rooms.purge": "purging the room",
  "homeserver.settings.apply": "applying its settings",
};

function succeededResult<K extends AdministrationJobKind>(job: Job, kind: K): JobResult<K> {
  const result = resultOf(job, kind);
  if (!result) throw failure(job, JOB_ACTIVITY[kind]);
  return result;
}

/**
 * What a finished administration job answers its customer: the route's body, or the ApiError
 * the route answers with (a refusal such as a taken name or the plan's limit, or a failure).
 */
export function settleAdministrationJob(server: Server, job: Job) {
  switch (job.kind as AdministrationJobKind) {
    case "homeserver.users.list": {
      const { users, total, nextFrom } = succeededResult(job, "homeserver.users.list");
      return { users: users.map(presentUser), total, nextFrom };
    }
    case "homeserver.users.create": {
      const result = succeededResult(job, "homeserver.users.create");
      if (result.outcome === "taken") throw conflict("user_exists", `${result.userId} exists already: choose another name, or reset that user's password.`);
      if (result.outcome === "user_limit") throw userLimit(server, result);
      return { userId: result.userId };
    }
    case "homeserver.users.set_password": {
      const { userId, sessionsEnded } = succeededResult(job, "homeserver.users.set_password");
      return { userId, sessionsEnded };
    }
    case "homeserver.users.update": {
      const { user, devicesLoggedOut } = succeededResult(job, "homeserver.users.update");
      const action = payloadOf(job, "homeserver.users.update")?.action;
      const removed = action === "deactivate" ? DEACTIVATION_REMOVES : action === "deactivate_and_erase" ? [...DEACTIVATION_REMOVES, ...ERASURE_REMOVES] : [];
      return { user: presentUser(user), devicesLoggedOut, removed };
    }
    case "homeserver.registration_tokens.list": {
      const { tokens } = succeededResult(job, "homeserver.registration_tokens.list");
      return { tokens: tokens.map(presentToken) };
    }
    case "homeserver.registration_tokens.create": {
      const result = succeededResult(job, "homeserver.registration_tokens.create");
      if (result.outcome === "user_limit") throw userLimit(server, result);
      return { token: presentToken(result.token) };
    }
    case "homeserver.settings.apply": {
      if (job.status === "failed" && job.error?.endsWith(SETTINGS_ROLLED_BACK)) {
        throw new ApiError(
          502,
          "settings_rolled_back",
          "Your homeserver did not start with the new settings, so the previous settings were put back: it runs as before, with its data intact. Our operators can see the details.",
        );
      }
      return { settings: succeededResult(job, "homeserver.settings.apply").settings };
    }
    case "homeserver.registration_tokens.revoke": {
      const { revoked } = succeededResult(job, "homeserver.registration_tokens.revoke");
      if (!revoked) throw notFound("No such registration token on this homeserver.");
      return { revoked };
    }
    case "homeserver.rooms.list":
    case "homeserver.rooms.block":
    case "homeserver.rooms.purge":
      return settleRoomJob(job, succeededResult);
    default:
      throw notFound("No such job.");
  }
}

function isAdministrationJob(job: Job): boolean {
  return Object.hasOwn(JOB_ACTIVITY, job.kind);
}

/** An administration job as its customer polls it: its answer once finished, in the words the route would have used. */
export function presentAdministrationJob(server: Server, job: Job) {
  const view = { id: job.id, kind: job.kind, poll: `/api/servers/${server.id}/jobs/${job.id}` };
  if (!isFinished(job)) return { ...view, status: "pending" as const, result: null, error: null };
  try {
    return { ...view, status: "succeeded" as const, result: settleAdministrationJob(server, job), error: null };
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    return { ...view, status: "failed" as const, result: null, error: { code: error.code, message: error.message } };
  }
}

async function ownedAdministrationJob(ctx: WorkContext, user: User, serverId: string, jobId: string) {
  const server = await ownedServer(ctx.db, user.id, serverId);
  const job = await getJob(ctx.db, jobId);
  if (!job || job.serverId !== server.id || !isAdministrationJob(job)) throw notFound("No such job.");
  return { server, job };
}

/** GET /api/servers/:id/jobs/:jobId: one of this server's administration jobs, for its owner. */
export async function administrationJob(ctx: WorkContext, user: User, serverId: string, jobId: string) {
  const { server, job } = await ownedAdministrationJob(ctx, user, serverId, jobId);
  return presentAdministrationJob(server, job);
}

/** The same, with what a change to a user asked for: the page that shows its outcome says what was done. */
export async function administrationJobWithAction(ctx: WorkContext, user: User, serverId: string, jobId: string) {
  const { server, job } = await ownedAdministrationJob(ctx, user, serverId, jobId);
  return { ...presentAdministrationJob(server, job), action: payloadOf(job, "homeserver.users.update")?.action };
}

// ---------- users ----------

export async function listUsers(ctx: WorkContext, user: User, serverId: string, query: z.output<typeof listUsersQuery>) {
  const server = await administeredServer(ctx, user, serverId);
  await throttle(ctx, server, "homeserver_reads_server");
  const payload = { serverId: server.id, ...(query.search ? { search: query.search } : {}), from: query.from, limit: query.limit };
  const job = await run(ctx, server, { kind: "homeserver.users.list", payload });
  return answer(server, job);
}

/** Creates a user without a password; once created, a one-time link lets its person set one. */
export async function createUser(ctx: RequestContext, user: User, serverId: string, request: { localpart: string; displayName?: string | undefined }) {
  const server = await administeredServer(ctx, user, serverId);
  await throttle(ctx, server, "homeserver_changes_server");
  const payload = {
    serverId: server.id,
    localpart: request.localpart,
    ...(request.displayName ? { displayName: request.displayName } : {}),
    maxUsers: planOf(server).maxUsers,
  };
  const userId = matrixUserIdOf(ctx.config, server, request.localpart);
  const job = await run(
    ctx,
    server,
    { kind: "homeserver.users.create", payload },
    { actor: `user:${user.id}`, action: "homeserver_user.create", detail: { userId } },
  );
  const settled = answer(server, job);
  if (!("done" in settled)) return settled;
  // The link is for the user we asked for, whatever id the host reported.
  return { done: { userId, passwordLink: await userPasswordLink(ctx, user, server, userId) } };
}

async function userPasswordLink(ctx: RequestContext, user: User, server: Server, userId: string) {
  const link = await createPasswordLink(ctx, server, userId, USER_LINK_LIFETIME_MS, (token) => `/homeservers/${server.id}/set-password?token=${token}`);
  await audit(ctx.db, ctx.now, `user:${user.id}`, "homeserver_user.password_link_created", server.id, { userId });
  return { url: link.url, expiresAt: link.expiresAt.toISOString() };
}

/** A new one-time link for an existing user (a reset): setting the password through it ends the user's sessions. */
export async function createUserPasswordLink(ctx: RequestContext, user: User, serverId: string, userId: string) {
  const server = await administeredServer(ctx, user, serverId);
  const localUser = localUserId(ctx.config, server, userId);
  await throttle(ctx, server, "homeserver_changes_server");
  return { userId: localUser, ...(await userPasswordLink(ctx, user, server, localUser)) };
}

export async function updateUser(ctx: WorkContext, user: User, serverId: string, userId: string, action: JobPayload<"homeserver.users.update">["action"]) {
  const server = await administeredServer(ctx, user, serverId);
  const localUser = localUserId(ctx.config, server, userId);
  await throttle(ctx, server, "homeserver_changes_server");
  const job = await run(
    ctx,
    server,
    { kind: "homeserver.users.update", payload: { serverId: server.id, userId: localUser, action } },
    { actor: `user:${user.id}`, action: `homeserver_user.${action}`, detail: { userId: localUser } },
  );
  return answer(server, job);
}

// ---------- the one-time link's own routes: the token is the credential, not a session ----------

/** The server a link is for, as anyone holding a link may reach it (not deleted). */
async function linkServer(ctx: WorkContext, serverId: string): Promise<Server | undefined> {
  const [server] = await ctx.db
    .select()
    .from(servers)
    .where(and(eq(servers.id, serverId), ne(servers.status, "deleted")));
  return server;
}

/** A refused link counts against its client: the routes need no session, so guessing is limited here. */
async function refuseLink(ctx: RequestContext): Promise<never> {
  await consumeRateLimits(ctx.db, ctx.config.rateLimits, [{ name: "password_link_ip", subject: ctx.client }], ctx.now);
  throw invalidPasswordLink();
}

/** Whom a link sets the password of, for its page: the Matrix user id and the homeserver, or a 400 for a link that does not work. */
export async function describePasswordLink(ctx: RequestContext, serverId: string, token: string) {
  await requireUnderRateLimit(ctx.db, ctx.config.rateLimits, { name: "password_link_ip", subject: ctx.client }, ctx.now);
  const server = await linkServer(ctx, serverId);
  const userId = server && token ? await passwordLinkUser(ctx, server.id, token) : undefined;
  if (!server || !userId) return refuseLink(ctx);
  return { userId, serverName: matrixServerNameOf(ctx.config, server), homeserverUrl: homeserverUrlOf(ctx.config, server.name) };
}

/**
 * Sets a user's password through its one-time link: the Worker bcrypt-hashes it and only the hash
 * goes to the host, where every session of the user ends. If the host fails, the link works again.
 */
export async function setPasswordWithLink(ctx: RequestContext, serverId: string, userId: string | undefined, token: string, password: string) {
  await requireUnderRateLimit(ctx.db, ctx.config.rateLimits, { name: "password_link_ip", subject: ctx.client }, ctx.now);
  const linked = await linkServer(ctx, serverId);
  const linkUser = linked && (await passwordLinkUser(ctx, linked.id, token, userId));
  if (!linked || !linkUser) return refuseLink(ctx);
  const server = requireRunning(linked);
  await requireMayRun(ctx.db, server.userId);
  const passwordHash = await usePasswordLink(ctx, server.id, linkUser, token, password);
  const job = await run(
    ctx,
    server,
    { kind: "homeserver.users.set_password", payload: { serverId: server.id, userId: linkUser, passwordHash } },
    // Whoever holds the link has no account with us: the entry is the owner's, whose link was used.
    { actor: `user:${server.userId}`, action: "homeserver_user.password_set_through_link", detail: { userId: linkUser } },
  );
  if (job.status === "failed") await releasePasswordLink(ctx, server.id, token);
  return answer(server, job);
}

// ---------- registration tokens ----------

export const createTokenBody = z.strictObject({
  usesAllowed: z.number().int().min(1).max(1000),
  /** When it stops working; none: when its uses are spent. */
  expiresAt: z.iso.datetime({ offset: true }).optional(),
});

export async function listRegistrationTokens(ctx: WorkContext, user: User, serverId: string) {
  const server = await administeredServer(ctx, user, serverId);
  await throttle(ctx, server, "homeserver_reads_server");
  const job = await run(ctx, server, { kind: "homeserver.registration_tokens.list", payload: { serverId: server.id } });
  return answer(server, job);
}

/** A token bounded by the plan: the host refuses one whose uses, with the users there are, would pass the plan's limit. */
export async function createRegistrationToken(ctx: WorkContext, user: User, serverId: string, request: z.output<typeof createTokenBody>) {
  const server = await administeredServer(ctx, user, serverId);
  const expiresAt = request.expiresAt === undefined ? undefined : Date.parse(request.expiresAt);
  if (expiresAt !== undefined && expiresAt <= ctx.now.getTime()) throw new ApiError(400, "validation_failed", "expiresAt: a moment in the future.");
  await throttle(ctx, server, "homeserver_changes_server");
  const payload = {
    serverId: server.id,
    usesAllowed: request.usesAllowed,
    ...(expiresAt === undefined ? {} : { expiresAt }),
    maxUsers: planOf(server).maxUsers,
  };
  // A token is a credential: the entry says one was made, never which.
  const detail = { usesAllowed: request.usesAllowed };
  const job = await run(
    ctx,
    server,
    { kind: "homeserver.registration_tokens.create", payload },
    { actor: `user:${user.id}`, action: "registration_token.create", detail },
  );
  return answer(server, job);
}

export async function revokeRegistrationToken(ctx: WorkContext, user: User, serverId: string, token: string) {
  const server = await administeredServer(ctx, user, serverId);
  await throttle(ctx, server, "homeserver_changes_server");
  const job = await run(
    ctx,
    server,
    { kind: "homeserver.registration_tokens.revoke", payload: { serverId: server.id, token } },
    // Which token, by its first few characters only: it is a credential.
    { actor: `user:${user.id}`, action: "registration_token.revoke", detail: { tokenPrefix: token.slice(0, 4) } },
  );
  return answer(server, job);
}
