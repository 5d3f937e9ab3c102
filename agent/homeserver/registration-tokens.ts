// homeserver.registration_tokens.*: the tokens with which people register
// themselves on a homeserver (Synapse's token-authenticated registration,
// MSC3231), listed, made within the plan's bound on users, and revoked.
import type { JobPayload, JobResult } from "../../protocol/jobs.ts";
import type { HomeserverCore, OperationContext } from "./core.ts";
import { administer } from "./service-account.ts";
import type { SynapseRegistrationToken } from "./synapse-admin.ts";
import { userUsage, writeUserLimit } from "./user-limit.ts";

type RegistrationToken = JobResult<"homeserver.registration_tokens.list">["tokens"][number];

/** Synapse's default: 16 characters of its 66-letter alphabet, about 96 bits. */
const TOKEN_LENGTH = 16;
/** What the job result holds at most. */
const MAX_LISTED = 1000;

function shown(token: SynapseRegistrationToken): RegistrationToken {
  return { token: token.token, usesAllowed: token.uses_allowed, pending: token.pending, completed: token.completed, expiresAt: token.expiry_time };
}

/** Every token (those still usable first, should there be more than a result holds). */
export function listRegistrationTokens(
  core: HomeserverCore,
  { serverId }: JobPayload<"homeserver.registration_tokens.list">,
  ctx: OperationContext,
): Promise<JobResult<"homeserver.registration_tokens.list">> {
  return administer(core, serverId, ctx, async ({ admin }) => {
    const now = Date.now();
    const usable = (t: SynapseRegistrationToken) =>
      (t.expiry_time === null || t.expiry_time > now) && (t.uses_allowed === null || t.pending + t.completed < t.uses_allowed);
    const tokens = await admin.registrationTokens();
    const ordered = [...tokens.filter(usable), ...tokens.filter((t) => !usable(t))];
    return { tokens: ordered.slice(0, MAX_LISTED).map(shown) };
  });
}

/** A new token Synapse generates, refused when its uses, the users and the other tokens' uses would pass the plan's bound. */
export function createRegistrationToken(
  core: HomeserverCore,
  payload: JobPayload<"homeserver.registration_tokens.create">,
  ctx: OperationContext,
): Promise<JobResult<"homeserver.registration_tokens.create">> {
  return administer(core, payload.serverId, ctx, async ({ admin, record, paths, log }) => {
    writeUserLimit(paths, record.uid, payload.maxUsers);
    const usage = await userUsage(admin, payload.maxUsers);
    if (usage.users + usage.reserved + payload.usesAllowed > payload.maxUsers) {
      return { outcome: "user_limit" as const, ...usage, maxUsers: payload.maxUsers };
    }
    const token = await admin.createRegistrationToken({
      length: TOKEN_LENGTH,
      usesAllowed: payload.usesAllowed,
      ...(payload.expiresAt === undefined ? {} : { expiresAt: payload.expiresAt }),
    });
    log.info("registration token created", { usesAllowed: payload.usesAllowed, expiresAt: payload.expiresAt ?? null });
    return { outcome: "created" as const, token: shown(token) };
  });
}

/** Deletes the token: nobody registers with it any more. */
export function revokeRegistrationToken(
  core: HomeserverCore,
  { serverId, token }: JobPayload<"homeserver.registration_tokens.revoke">,
  ctx: OperationContext,
): Promise<JobResult<"homeserver.registration_tokens.revoke">> {
  return administer(core, serverId, ctx, async ({ admin }) => ({ serverId, token, revoked: await admin.deleteRegistrationToken(token) }));
}
