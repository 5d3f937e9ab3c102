import { and, desc, eq, gt, inArray, isNotNull, notInArray, or } from "drizzle-orm";
import { HOST_CHECK_IDS } from "../../protocol/checks";
import { audit } from "../audit/audit";
import { consumeRateLimits } from "../auth/rate-limit";
import { dailyBackupHour } from "../backups/maintenance";
import type { WorkContext } from "../context";
import { jobs, servers, type Job, type Server, type User } from "../db/schema";
import { conflict } from "../errors";
import { dispatchJob } from "../fleet/hosts";
import { payloadOf, resultOf } from "../fleet/jobs";
import { logError } from "../logging";
import { ownedServer } from "../servers/servers";
import { requestDelegationCheck } from "./delegation";
import { recordCheckResults, type NewCheckResult } from "./results";
import { softwareVerdict } from "./software";
import { backupsVerdict, cardDataVerdict } from "./verdicts";

// Running the promise checks: daily for each running homeserver at an hour of its own, and on
// demand. One pass records the checks the Worker decides (backups, card data) and sends the
// host the checks only it can see (homeserver.checks); the host's answer records those and the
// software check.

const HOUR = 60 * 60_000;
/** A daily run is skipped while one is under way or was sent this recently (a repeated cron run, an on-demand one). */
const DAILY_CHECKS_SKIP_MS = 20 * HOUR;
const UNFINISHED: Job["status"][] = ["queued", "sent", "acked"];

/** The hour of the day (UTC) a server's checks run: six hours from its backup and from its upkeep, so none of the three load its host together. */
export function dailyChecksHour(serverId: string): number {
  return (dailyBackupHour(serverId) + 6) % 24;
}

/** The Worker's own verdicts for a homeserver and its owner's account, as of ctx.now. */
async function recordWorkerChecks(ctx: WorkContext, server: Server): Promise<void> {
  const [backups, cardData] = await Promise.all([backupsVerdict(ctx.db, server, ctx.now), cardDataVerdict(ctx.db, server.userId)]);
  await recordCheckResults(ctx, [
    { userId: server.userId, serverId: server.id, checkId: "backups", ...backups },
    { userId: server.userId, serverId: null, checkId: "card-data", ...cardData },
  ]);
}

/**
 * Sends the host's checks (and, for a server with its own domain, its delegation check) and records
 * the Worker's: the host answers later (applyChecksOutcome, applyDelegationOutcome).
 */
async function runChecks(ctx: WorkContext, server: Server & { hostId: string }): Promise<Job> {
  const job = await dispatchJob(
    ctx.db,
    ctx.env,
    { hostId: server.hostId, kind: "homeserver.checks", payload: { serverId: server.id, checks: [...HOST_CHECK_IDS] } },
    ctx.now,
  );
  if (server.serverName) await requestDelegationCheck(ctx, { ...server, serverName: server.serverName });
  await recordWorkerChecks(ctx, server);
  return job;
}

/**
 * The hourly cron: runs the checks of each running homeserver whose hour this is, unless a run is
 * under way or was sent within the last 20 hours. A stopped or busy one is not checked that day:
 * its checks need Synapse up.
 */
export async function scheduleDailyChecks(ctx: WorkContext): Promise<number> {
  const recent = ctx.db
    .select({ serverId: jobs.serverId })
    .from(jobs)
    .where(
      and(
        eq(jobs.kind, "homeserver.checks"),
        isNotNull(jobs.serverId),
        or(inArray(jobs.status, UNFINISHED), gt(jobs.createdAt, new Date(ctx.now.getTime() - DAILY_CHECKS_SKIP_MS))),
      ),
    );
  const candidates = await ctx.db
    .select()
    .from(servers)
    .where(and(eq(servers.status, "running"), isNotNull(servers.hostId), notInArray(servers.id, recent)));
  let started = 0;
  for (const server of candidates.filter((candidate) => dailyChecksHour(candidate.id) === ctx.now.getUTCHours())) {
    try {
      await runChecks(ctx, { ...server, hostId: server.hostId! });
      started++;
    } catch (error) {
      // One server's trouble must not cost the others their checks.
      logError("scheduled_checks_failed", error, { serverId: server.id });
    }
  }
  return started;
}

/**
 * "Check now", by the homeserver's owner: while it runs, one run at a time, three an hour.
 * Answers the host's job, whose outcome records the host's checks.
 */
export async function runChecksNow(ctx: WorkContext, user: User, serverId: string): Promise<Job> {
  const server = await ownedServer(ctx.db, user.id, serverId);
  if (server.status !== "running" || !server.hostId) {
    throw conflict("invalid_state", `The homeserver is ${server.status}; its checks run while it is running.`);
  }
  if (await checksUnderWay(ctx, server.id))
    throw conflict("checks_running", "This homeserver's checks are running now; their results show here when they finish.");
  const { limit } = ctx.config.rateLimits.checks_server;
  const tooOften = (seconds: number) => `This homeserver's checks have run ${limit} times within the hour; try again in ${Math.ceil(seconds / 60)} minutes.`;
  await consumeRateLimits(ctx.db, ctx.config.rateLimits, [{ name: "checks_server", subject: server.id }], ctx.now, tooOften);
  const job = await runChecks(ctx, { ...server, hostId: server.hostId });
  await audit(ctx.db, ctx.now, `user:${user.id}`, "server.checks_requested", server.id, { jobId: job.id });
  return job;
}

/** The newest job of `kind` about a server that has not finished, if any. */
export async function checkJobUnderWay(
  ctx: WorkContext,
  serverId: string,
  kind: "homeserver.checks" | "homeserver.delegation_check",
): Promise<Job | undefined> {
  const [job] = await ctx.db
    .select()
    .from(jobs)
    .where(and(eq(jobs.serverId, serverId), eq(jobs.kind, kind), inArray(jobs.status, UNFINISHED)))
    .orderBy(desc(jobs.createdAt))
    .limit(1);
  return job;
}

/** The newest checks job of a server that has not finished, if any: the page says a run is under way. */
export const checksUnderWay = (ctx: WorkContext, serverId: string) => checkJobUnderWay(ctx, serverId, "homeserver.checks");

/**
 * Records a finished checks job: each host check asked for, and the software check from the
 * version the host reports. A result counts only for the server its job was sent about, and
 * only while that server is on the host that answered: a host cannot write verdicts into
 * another customer's record. A job that failed or ran out of time leaves each of them "could not
 * check": the host did not answer.
 */
export async function applyChecksOutcome(ctx: WorkContext, job: Job): Promise<void> {
  const payload = payloadOf(job, "homeserver.checks");
  if (!payload) return;
  const result = resultOf(job, "homeserver.checks");
  if (result && result.serverId !== payload.serverId) return;
  const [server] = await ctx.db
    .select()
    .from(servers)
    .where(and(eq(servers.id, payload.serverId), eq(servers.hostId, job.hostId)));
  if (!server) return;
  const about = { userId: server.userId, serverId: server.id, jobId: job.id };
  const unanswered = (summary: string) => ({ result: "could_not_check" as const, evidence: { summary, facts: [] } });
  const verdicts: NewCheckResult[] = payload.checks.map((checkId) => {
    const outcome = result?.outcomes.find((candidate) => candidate.checkId === checkId);
    const verdict = outcome ?? unanswered(result ? "The host gave no answer for this check." : "The host did not answer.");
    return { ...about, checkId, result: verdict.result, evidence: verdict.evidence };
  });
  const software = result ? softwareVerdict(result.synapse, ctx.config.homeservers.images.synapse) : unanswered("The host did not answer.");
  await recordCheckResults(ctx, [...verdicts, { ...about, checkId: "software", ...software }]);
}
