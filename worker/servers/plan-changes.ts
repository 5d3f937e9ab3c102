import { and, eq, inArray, notInArray } from "drizzle-orm";
import { audit } from "../audit/audit";
import { billingSummary } from "../billing/billing";
import { planById, type Plan } from "../billing/plans";
import type { WorkContext } from "../context";
import { jobs, servers, workloads, type Job, type Server, type ServerStatus } from "../db/schema";
import { dispatchJob } from "../fleet/hosts";
import { payloadOf } from "../fleet/jobs";
import { hasRoomSql } from "./placement";
import { homeserverSpec } from "./servers";

/**
 * Servers whose plan is not changed now: past the point where their limits matter, or moving to
 * another host (whose room was reserved for the plan it had; the hourly run changes it once it landed).
 */
const NOT_NOW: ServerStatus[] = ["deleting", "deleted", "moving"];

/** Where a resize that did not happen is sent again (elsewhere the next provisioning or start brings the limits). */
const RESIZE_RETRY_FROM: ServerStatus[] = ["running", "stopped", "suspended"];

/** What customers read while a larger plan waits for room on the server's host. */
export const PLAN_CHANGE_WAITING = "your new plan applies as soon as its host has room for it";

/**
 * Plan changes (made in Stripe's Customer Portal) reach the account's
 * homeservers. A server takes its new plan once its host has room for it —
 * re-checked in the statement that records it, as placement does — and a
 * `homeserver.resize` job then applies the new limits to its containers;
 * `appliedPlanId` follows when the host reports it done. A larger plan that
 * does not fit waits (operators are told; a homeserver is never moved
 * silently) and is tried again hourly, as is a resize that failed.
 */
export async function applyPlanChanges(ctx: WorkContext, userId?: string): Promise<number> {
  const live = await ctx.db
    .select()
    .from(servers)
    .where(and(notInArray(servers.status, NOT_NOW), userId ? eq(servers.userId, userId) : undefined));
  let changed = 0;
  for (const server of live) {
    const { plan } = await billingSummary(ctx.db, server.userId);
    if (!plan || !server.hostId) continue;
    if (plan.id !== server.planId) {
      if (await changePlan(ctx, server, plan)) changed++;
    } else if (RESIZE_RETRY_FROM.includes(server.status) && server.appliedPlanId !== server.planId && !(await resizeUnderWay(ctx, server.id))) {
      await sendResize(ctx, server, plan);
      changed++;
    }
  }
  return changed;
}

async function changePlan(ctx: WorkContext, server: Server, plan: Plan): Promise<boolean> {
  const [moved] = await ctx.db
    .update(servers)
    .set({ planId: plan.id, statusReason: server.statusReason === PLAN_CHANGE_WAITING ? null : server.statusReason, updatedAt: ctx.now })
    .where(and(eq(servers.id, server.id), eq(servers.planId, server.planId), hasRoomSql(server.hostId!, plan, ctx.now, server.id)))
    .returning();
  if (!moved) {
    if (server.statusReason !== PLAN_CHANGE_WAITING) {
      await ctx.db.batch([
        ctx.db.update(servers).set({ statusReason: PLAN_CHANGE_WAITING, updatedAt: ctx.now }).where(eq(servers.id, server.id)),
        audit(ctx.db, ctx.now, "system", "server.plan_change_waiting", server.id, { from: server.planId, to: plan.id }),
      ]);
      console.warn(JSON.stringify({ event: "plan_change_waiting_for_room", serverId: server.id, hostId: server.hostId, to: plan.id }));
    }
    return false;
  }
  await ctx.db.batch([
    // What the host runs this homeserver with, should it provision it again.
    ctx.db
      .update(workloads)
      .set({ spec: homeserverSpec(ctx.config, server, plan), updatedAt: ctx.now })
      .where(eq(workloads.id, server.id)),
    audit(ctx.db, ctx.now, "system", "server.plan_changed", server.id, { from: server.planId, to: plan.id }),
  ]);
  await sendResize(ctx, moved, plan);
  return true;
}

async function sendResize(ctx: WorkContext, server: Server, plan: Plan): Promise<void> {
  const payload = { serverId: server.id, planId: plan.id, resources: plan.resources, maxUsers: plan.maxUsers };
  await dispatchJob(ctx.db, ctx.env, { hostId: server.hostId!, kind: "homeserver.resize", payload }, ctx.now);
}

async function resizeUnderWay(ctx: WorkContext, serverId: string): Promise<boolean> {
  const [row] = await ctx.db
    .select({ id: jobs.id })
    .from(jobs)
    .where(and(eq(jobs.serverId, serverId), eq(jobs.kind, "homeserver.resize"), inArray(jobs.status, ["queued", "sent", "acked"])))
    .limit(1);
  return row !== undefined;
}

/** A resize the host did: the server runs with that plan's limits (unless its plan changed again meanwhile). */
export async function applyResizeOutcome(ctx: WorkContext, job: Job): Promise<void> {
  const resize = payloadOf(job, "homeserver.resize");
  if (!resize || job.status !== "succeeded" || !planById(resize.planId)) return;
  await ctx.db
    .update(servers)
    .set({ appliedPlanId: resize.planId, updatedAt: ctx.now })
    .where(and(eq(servers.id, resize.serverId), eq(servers.hostId, job.hostId), eq(servers.planId, resize.planId)));
}
