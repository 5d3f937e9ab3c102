import { and, desc, eq } from "drizzle-orm";
import { z } from "zod";
import { DEFAULT_HOMESERVER_SETTINGS, homeserverSettingsSchema, type HomeserverSettings } from "../../protocol/homeserver-settings";
import { audit } from "../audit/audit";
import { consumeRateLimits } from "../auth/rate-limit";
import { planById, type Plan } from "../billing/plans";
import type { WorkContext } from "../context";
import { jobs, servers, workloads, type Job, type Server, type User } from "../db/schema";
import { ApiError, conflict } from "../errors";
import { payloadOf, resultOf } from "../fleet/jobs";
import { homeserverSpec, ownedServer, requireMayRun } from "./servers";
import { answer, presentAdministrationJob, run, type Answer } from "./users";

// A homeserver's settings, changed by its owner: registration, federation, retention and the
// upload size. D1 keeps the settings its Synapse runs with; a change is a job on the host, which
// rewrites Synapse's configuration and restarts it (or puts the previous one back), and D1 takes
// the new settings only once the host reports them applied.

/** A change: any of the settings; what it leaves out stays as it is. (The upload size's bound is the plan's, checked apart.) */
export const settingsChange = homeserverSettingsSchema.partial().extend({ maxUploadMiB: z.number().int().min(1).optional() });
export type SettingsChange = z.output<typeof settingsChange>;

function planOf(server: Server): Plan {
  const plan = planById(server.planId);
  if (!plan) throw new Error(`server ${server.id} has an unknown plan`);
  return plan;
}

/** The settings within a plan: an upload size above its ceiling (after a downgrade) is lowered to it. */
export function withinPlan(settings: HomeserverSettings, plan: Plan): HomeserverSettings {
  return settings.maxUploadMiB <= plan.maxUploadMiB ? settings : { ...settings, maxUploadMiB: plan.maxUploadMiB };
}

/** The settings a server's Synapse runs with. */
export function settingsOf(server: Server): HomeserverSettings {
  return server.settings ?? DEFAULT_HOMESERVER_SETTINGS;
}

async function latestSettingsJob(ctx: WorkContext, server: Server): Promise<Job | undefined> {
  const [job] = await ctx.db
    .select()
    .from(jobs)
    .where(and(eq(jobs.serverId, server.id), eq(jobs.kind, "homeserver.settings.apply")))
    .orderBy(desc(jobs.createdAt))
    .limit(1);
  return job;
}

const isUnfinished = (job: Job | undefined) => job !== undefined && job.status !== "succeeded" && job.status !== "failed";

/**
 * What the owner sees: the settings Synapse runs with, the plan's ceiling, and the latest change
 * unless it was applied — under way, or failed with the reason in our words.
 */
export async function describeSettings(ctx: WorkContext, user: User, serverId: string) {
  const server = await ownedServer(ctx.db, user.id, serverId);
  const plan = planOf(server);
  const latest = await latestSettingsJob(ctx, server);
  const change =
    latest && latest.status !== "succeeded"
      ? { requested: payloadOf(latest, "homeserver.settings.apply")?.settings ?? null, job: presentAdministrationJob(server, latest) }
      : null;
  return { settings: settingsOf(server), plan: { id: plan.id, name: plan.name, maxUploadMiB: plan.maxUploadMiB }, change };
}

const describeFederation = (federation: HomeserverSettings["federation"]) =>
  federation.mode === "allow_list" ? `allow_list of ${federation.servers.length}` : federation.mode;

/** The fields a change alters, with their new values (an allow-list by its length: the audit log says what changed, briefly). */
function changedFields(before: HomeserverSettings, after: HomeserverSettings): Record<string, unknown> {
  const changed: Record<string, unknown> = {};
  for (const key of Object.keys(after) as Array<keyof HomeserverSettings>) {
    if (JSON.stringify(before[key]) === JSON.stringify(after[key])) continue;
    changed[key] = key === "federation" ? describeFederation(after.federation) : after[key];
  }
  return changed;
}

/**
 * Applies a change on the host: refused unless the server runs on an account that may run
 * homeservers, with no other change under way, and the upload size within the plan. The answer
 * is the settings once the host applied them, or the job to poll.
 */
export async function changeSettings(
  ctx: WorkContext,
  user: User,
  serverId: string,
  change: SettingsChange,
): Promise<Answer<{ settings: HomeserverSettings }>> {
  const server = await ownedServer(ctx.db, user.id, serverId);
  if (server.status !== "running" || !server.hostId) {
    throw conflict("invalid_state", `The homeserver is ${server.status}; its settings can be changed while it is running.`);
  }
  await requireMayRun(ctx.db, user.id);
  const plan = planOf(server);
  if (change.maxUploadMiB !== undefined && change.maxUploadMiB > plan.maxUploadMiB) {
    throw new ApiError(
      400,
      "upload_size_above_plan",
      `The ${plan.name} plan allows uploads of up to ${plan.maxUploadMiB} MiB; choose that or less, or change plans.`,
    );
  }
  if (isUnfinished(await latestSettingsJob(ctx, server))) {
    throw conflict("settings_pending", "A change of this homeserver's settings is being applied; wait for it to finish, then try again.");
  }
  const current = withinPlan(settingsOf(server), plan);
  const settings = homeserverSettingsSchema.parse({ ...current, ...change });
  const changed = changedFields(settingsOf(server), settings);
  if (Object.keys(changed).length === 0) return { done: { settings } };

  const rules = ctx.config.rateLimits;
  await consumeRateLimits(
    ctx.db,
    rules,
    [{ name: "homeserver_settings_server", subject: server.id }],
    ctx.now,
    (seconds) =>
      `This homeserver's settings have changed ${rules.homeserver_settings_server.limit} times within the hour; try again in ${Math.ceil(seconds / 60)} minutes.`,
  );
  const job = await run(
    ctx,
    { ...server, hostId: server.hostId },
    { kind: "homeserver.settings.apply", payload: { serverId: server.id, settings } },
    { actor: `user:${user.id}`, action: "server.settings_change_requested", detail: { changed } },
  );
  const settled = answer(server, job);
  return "done" in settled ? { done: settled.done as { settings: HomeserverSettings } } : settled;
}

/**
 * Applied by the host's Durable Object when a settings job finished: a success is what the
 * server now runs with (and what a host that provisions it again is given); a failure leaves the
 * settings as they were. Each outcome is audited.
 */
export async function applySettingsOutcome(ctx: WorkContext, job: Job): Promise<void> {
  const payload = payloadOf(job, "homeserver.settings.apply");
  if (!payload) return;
  const applied = resultOf(job, "homeserver.settings.apply");
  if (!applied) {
    await audit(ctx.db, ctx.now, "system", "server.settings_change_failed", payload.serverId, { jobId: job.id });
    return;
  }
  const [server] = await ctx.db
    .update(servers)
    .set({ settings: applied.settings, updatedAt: ctx.now })
    .where(and(eq(servers.id, applied.serverId), eq(servers.hostId, job.hostId)))
    .returning();
  if (!server) return;
  const plan = planOf(server);
  await ctx.db.batch([
    ctx.db
      .update(workloads)
      .set({ spec: homeserverSpec(ctx.config, server, plan), updatedAt: ctx.now })
      .where(eq(workloads.id, server.id)),
    audit(ctx.db, ctx.now, "system", "server.settings_applied", server.id, { jobId: job.id }),
  ]);
}
