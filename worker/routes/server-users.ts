import { Hono, type Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { z } from "zod";
import { passwordSchema } from "../auth/credentials";
import type { AppEnv } from "../http/context";
import { requireSession, type SessionAppEnv } from "../http/session";
import { parseWith, readJson } from "../http/validation";
import {
  administrationJob,
  createRegistrationToken,
  createTokenBody,
  createUser,
  createUserPasswordLink,
  displayNameSchema,
  listRegistrationTokens,
  listUsers,
  listUsersQuery,
  localpartSchema,
  registrationTokenSchema,
  revokeRegistrationToken,
  setPasswordWithLink,
  updateUser,
  USER_ACTIONS,
  type Answer,
} from "../servers/users";

const id = z.string().min(1).max(128);
const serverParam = z.object({ id });
const userParams = serverParam.extend({ userId: z.string().min(1).max(300) });
const tokenParams = serverParam.extend({ token: registrationTokenSchema });
const jobParams = serverParam.extend({ jobId: id });

/** The job's answer, or 202 with the job to poll when the host has not answered yet. */
export function reply<T extends object>(c: Context, result: Answer<T>, status: ContentfulStatusCode = 200) {
  return "done" in result ? c.json(result.done, status) : c.json({ job: result.pending }, 202);
}

const userAction = (action: keyof typeof USER_ACTIONS) => async (c: Context<SessionAppEnv>) => {
  const { id: serverId, userId } = parseWith(userParams, c.req.param());
  return reply(c, await updateUser(c.var.ctx, c.var.user, serverId, userId, USER_ACTIONS[action]));
};

// A homeserver's users and registration tokens, for its owner (mounted under /api/servers). Each
// action is a job on the host; a request waits a few seconds for it, then answers 202 with the job.
export const serverUserRoutes = new Hono<AppEnv>()
  .get("/:id/users", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const { id: serverId } = parseWith(serverParam, c.req.param());
    return reply(c, await listUsers(ctx, user, serverId, parseWith(listUsersQuery, c.req.query())));
  })
  .post("/:id/users", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const { id: serverId } = parseWith(serverParam, c.req.param());
    const request = await readJson(c, z.strictObject({ localpart: localpartSchema, displayName: displayNameSchema }));
    return reply(c, await createUser(ctx, user, serverId, request), 201);
  })
  .post("/:id/users/:userId/password-link", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const { id: serverId, userId } = parseWith(userParams, c.req.param());
    return c.json(await createUserPasswordLink(ctx, user, serverId, userId), 201);
  })
  .post("/:id/users/:userId/admin", requireSession, userAction("admin"))
  .post("/:id/users/:userId/unadmin", requireSession, userAction("unadmin"))
  .post("/:id/users/:userId/log-out", requireSession, userAction("log-out"))
  .post("/:id/users/:userId/deactivate", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const { id: serverId, userId } = parseWith(userParams, c.req.param());
    const { erase } = await readJson(c, z.strictObject({ erase: z.boolean() }));
    return reply(c, await updateUser(ctx, user, serverId, userId, erase ? "deactivate_and_erase" : "deactivate"));
  })
  // The one-time link is the credential here, not a session: whoever sets the password is the
  // homeserver's user, who has no account with us.
  .post("/:id/users/:userId/password", async (c) => {
    const { id: serverId, userId } = parseWith(userParams, c.req.param());
    const { token, password } = await readJson(c, z.strictObject({ token: z.string().min(1).max(256), password: passwordSchema }));
    const result = await setPasswordWithLink(c.var.ctx, serverId, userId, token, password);
    return "done" in result ? c.json({ status: "set", ...result.done }) : c.json({ status: "setting", userId }, 202);
  })
  .get("/:id/registration-tokens", requireSession, async (c) => {
    const { ctx, user } = c.var;
    return reply(c, await listRegistrationTokens(ctx, user, parseWith(serverParam, c.req.param()).id));
  })
  .post("/:id/registration-tokens", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const { id: serverId } = parseWith(serverParam, c.req.param());
    return reply(c, await createRegistrationToken(ctx, user, serverId, await readJson(c, createTokenBody)), 201);
  })
  .delete("/:id/registration-tokens/:token", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const { id: serverId, token } = parseWith(tokenParams, c.req.param());
    return reply(c, await revokeRegistrationToken(ctx, user, serverId, token));
  })
  .get("/:id/jobs/:jobId", requireSession, async (c) => {
    const { ctx, user } = c.var;
    const { id: serverId, jobId } = parseWith(jobParams, c.req.param());
    return c.json({ job: await administrationJob(ctx, user, serverId, jobId) });
  });
