import { and, desc, eq, gt, inArray, isNotNull, lte, ne, notInArray, or } from "drizzle-orm";
import { audit } from "../audit/audit";
import type { WorkContext } from "../context";
import { checkResults, jobs, servers, users, type CheckResultRow, type Job, type Server } from "../db/schema";
import { dispatchJob } from "../fleet/hosts";
import { payloadOf, resultOf } from "../fleet/jobs";
import { logError } from "../logging";
import { mailerFor } from "../mail/mailer";
import { templates } from "../mail/templates";
import { deleteUnmade } from "../servers/deletion";
import { delegationCheckPayload, provisionAwaitingServer } from "../servers/servers";
import { recordCheckResults } from "./results";

// The delegation check of a homeserver whose Matrix server name is the customer's own domain: the
// host that serves it fetches the domain's well-knowns (agent/checks/delegation.ts) and the Worker
// records the verdict, tells the owner once when it breaks, and (for a homeserver waiting on it)
// goes on to provision.

export const DELEGATION_MAILED_ACTION = "delegation.broken_mailed";
/** A waiting homeserver is checked again hourly; not while a check was sent this recently. */
const RECHECK_SKIP_MS = 50 * 60_000;
/**
 * How long a homeserver may wait for its domain's well-knowns. A domain is claimed while it waits,
 * and anyone may type any domain: the claim lapses, so a domain cannot be held from its owner for
 * longer than this by someone who cannot publish on it.
 */
export const AWAITING_DELEGATION_DAYS = 7;
const DAY_MS = 24 * 60 * 60_000;

/** Sends its host the check; the outcome comes back through applyDelegationOutcome. */
export async function requestDelegationCheck(ctx: WorkContext, server: Server & { hostId: string; serverName: string }): Promise<Job> {
  return dispatchJob(
    ctx.db,
    ctx.env,
    { hostId: server.hostId, kind: "homeserver.delegation_check", payload: delegationCheckPayload(ctx.config, server) },
    ctx.now,
  );
}

/**
 * The hourly cron, first: a homeserver that has waited AWAITING_DELEGATION_DAYS without its check
 * passing is deleted as its owner would delete it (nothing was made; its domain is free again), and
 * its owner is told why and how to start over.
 */
export async function lapseAwaitingDelegations(ctx: WorkContext): Promise<number> {
  // Each with its owner's address, for the mail: one query, not one more per server.
  const lapsed = await ctx.db
    .select({ server: servers, ownerEmail: users.email })
    .from(servers)
    .leftJoin(users, eq(users.id, servers.userId))
    .where(and(eq(servers.status, "awaiting_delegation"), lte(servers.createdAt, new Date(ctx.now.getTime() - AWAITING_DELEGATION_DAYS * DAY_MS))));
  const mailer = mailerFor(ctx);
  const link = new URL("/servers", ctx.config.publicOrigin).toString();
  let deleted = 0;
  for (const { server, ownerEmail } of lapsed) {
    try {
      await deleteUnmade(ctx, server, "system");
      deleted++;
    } catch (error) {
      logError("delegation_lapse_failed", error, { serverId: server.id });
      continue;
    }
    if (!ownerEmail) continue;
    await mailer
      .send(templates.delegationLapsed(ownerEmail, { serverName: server.serverName ?? server.name, days: AWAITING_DELEGATION_DAYS, link }))
      .catch((error: unknown) => logError("delegation_lapse_mail_failed", error, { serverId: server.id }));
  }
  return deleted;
}

/**
 * The hourly cron: asks again about each homeserver still waiting for its delegation, unless a check
 * is under way or was sent within the last 50 minutes; so it is set up within the hour after its
 * owner publishes the well-knowns, without them coming back to ask.
 */
export async function recheckAwaitingDelegations(ctx: WorkContext): Promise<number> {
  const recent = ctx.db
    .select({ serverId: jobs.serverId })
    .from(jobs)
    .where(
      and(
        eq(jobs.kind, "homeserver.delegation_check"),
        isNotNull(jobs.serverId),
        or(inArray(jobs.status, ["queued", "sent", "acked"]), gt(jobs.createdAt, new Date(ctx.now.getTime() - RECHECK_SKIP_MS))),
      ),
    );
  const waiting = await ctx.db
    .select()
    .from(servers)
    .where(and(eq(servers.status, "awaiting_delegation"), isNotNull(servers.hostId), isNotNull(servers.serverName), notInArray(servers.id, recent)));
  let asked = 0;
  for (const server of waiting) {
    try {
      await requestDelegationCheck(ctx, { ...server, hostId: server.hostId!, serverName: server.serverName! });
      asked++;
    } catch (error) {
      // One server's trouble must not cost the others their check.
      logError("delegation_recheck_failed", error, { serverId: server.id });
    }
  }
  return asked;
}

/**
 * Records a finished delegation check. It counts only for the server it was sent about, while that
 * server is on the answering host and still has that domain: a host cannot write a verdict into
 * another customer's record. A job that failed or ran out of time is "could not check". A pass
 * provisions the homeserver if it was waiting for one.
 */
export async function applyDelegationOutcome(ctx: WorkContext, job: Job): Promise<void> {
  const payload = payloadOf(job, "homeserver.delegation_check");
  if (!payload) return;
  const result = resultOf(job, "homeserver.delegation_check");
  if (result && (result.serverId !== payload.serverId || result.serverName !== payload.serverName)) return;
  const [server] = await ctx.db
    .select()
    .from(servers)
    .where(and(eq(servers.id, payload.serverId), eq(servers.hostId, job.hostId), eq(servers.serverName, payload.serverName)));
  if (!server) return;
  const verdict = result?.outcome ?? { result: "could_not_check" as const, evidence: { summary: "The host did not answer.", facts: [] } };
  const [row] = await recordCheckResults(ctx, [{ userId: server.userId, serverId: server.id, checkId: "delegation", jobId: job.id, ...verdict }]);
  if (!row) return;
  await mailBrokenDelegation(ctx, server, row);
  if (row.result === "holds") await provisionAwaitingServer(ctx, server, `host:${job.hostId}`, { delegation: "holds", resultId: row.id });
}

/**
 * Tells the owner when a running homeserver's delegation breaks: on a failure whose previous verdict
 * (a result that could not be checked says nothing either way) was not a failure. So one mail per
 * breakage, however many days it stays broken; a fix and a new breakage mail again. A homeserver
 * still waiting on its delegation is not mailed: its owner is setting it up and sees it on its page.
 */
async function mailBrokenDelegation(ctx: WorkContext, server: Server, row: CheckResultRow): Promise<void> {
  if (row.result !== "fails" || server.status !== "running") return;
  const [previous] = await ctx.db
    .select({ result: checkResults.result })
    .from(checkResults)
    .where(
      and(
        eq(checkResults.serverId, server.id),
        eq(checkResults.checkId, "delegation"),
        ne(checkResults.id, row.id),
        ne(checkResults.result, "could_not_check"),
      ),
    )
    .orderBy(desc(checkResults.checkedAt))
    .limit(1);
  if (previous?.result === "fails") return;
  const [owner] = await ctx.db.select({ email: users.email }).from(users).where(eq(users.id, server.userId));
  if (!owner) return;
  const link = new URL(`/servers/${server.id}/security#delegation`, ctx.config.publicOrigin).toString();
  try {
    await mailerFor(ctx).send(templates.delegationBroken(owner.email, { serverName: server.serverName!, summary: row.summary, link }));
    await audit(ctx.db, ctx.now, "system", DELEGATION_MAILED_ACTION, server.id, { resultId: row.id });
  } catch (error) {
    logError("delegation_mail_failed", error, { serverId: server.id });
  }
}
