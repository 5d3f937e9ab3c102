import { and, desc, eq, inArray, like, ne, notLike, sql, type SQL } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import type { HomeserverJobKind, JobPayload } from "../../protocol/jobs";
import { audit, type Actor } from "../audit/audit";
import { billingSummary } from "../billing/billing";
import { mayRun } from "../billing/entitlement";
import { planById, type Plan } from "../billing/plans";
import type { WorkerConfig } from "../config";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { jobs, serverNames, servers, workloads, type Server, type ServerStatus, type User } from "../db/schema";
import { conflict, forbidden, notFound } from "../errors";
import type { Region } from "../fleet/enrollment";
import { dispatchJob } from "../fleet/hosts";
import { insertWhere } from "../db/conditional-insert";
import { pointServerAtLater } from "../dns/records";
import { startImportJob } from "../imports/import-job";
import { importAwaited } from "../imports/imports";
import { hasRoomSql, placementCandidates, takesPlacementsSql } from "./placement";
import { withinPlan } from "./settings";

/**
 * Where a homeserver is served: its DNS records, certificate, proxy route and URL. Always
 * `<name>.<HOMESERVER_DOMAIN>`, whatever its Matrix server name.
 */
export function servedHostOf(config: WorkerConfig, name: string): string {
  return `${name}.${config.homeservers.domain}`;
}

/**
 * A homeserver's Matrix server name: the part after the colon in its user ids, what federation and
 * clients know it by. The customer's own domain when they chose one (delegated to the served host by
 * the well-knowns they publish), else its served host.
 */
export function matrixServerNameOf(config: WorkerConfig, server: Pick<Server, "name" | "serverName">): string {
  return server.serverName ?? servedHostOf(config, server.name);
}

/** Where clients reach a homeserver: https://<served host>, with the port when it is not 443. */
export function homeserverUrlOf(config: WorkerConfig, name: string): string {
  const { httpsPort } = config.homeservers;
  return `https://${servedHostOf(config, name)}${httpsPort === 443 ? "" : `:${httpsPort}`}`;
}

/**
 * What a host needs to run this homeserver: the provisioning job's payload, and its workload's
 * spec. It carries the settings the server runs with (within the plan), so a host that provisions
 * it again without its own record of them still renders them.
 */
export function homeserverSpec(
  config: WorkerConfig,
  server: Pick<Server, "id" | "name" | "serverName"> & Partial<Pick<Server, "settings">>,
  plan: Plan,
): JobPayload<"homeserver.provision"> {
  return {
    serverId: server.id,
    name: server.name,
    serverName: matrixServerNameOf(config, server),
    publicBaseUrl: `${homeserverUrlOf(config, server.name)}/`,
    planId: plan.id,
    resources: plan.resources,
    maxUsers: plan.maxUsers,
    images: { ...config.homeservers.images },
    ...(server.settings ? { settings: withinPlan(server.settings, plan) } : {}),
  };
}

/** What a host needs to check a homeserver's delegation: its own domain, and where it is served (which the well-knowns must name). */
export function delegationCheckPayload(
  config: WorkerConfig,
  server: Pick<Server, "id" | "name"> & { serverName: string },
): JobPayload<"homeserver.delegation_check"> {
  return { serverId: server.id, serverName: server.serverName, publicBaseUrl: `${homeserverUrlOf(config, server.name)}/` };
}

export async function listServers(db: Database, userId: string): Promise<Server[]> {
  return db
    .select()
    .from(servers)
    .where(and(eq(servers.userId, userId), ne(servers.status, "deleted")))
    .orderBy(desc(servers.createdAt));
}

/** A server reached only through its owner: anyone else's id is a plain 404. */
export async function ownedServer(db: Database, userId: string, id: string): Promise<Server> {
  const [server] = await db
    .select()
    .from(servers)
    .where(and(eq(servers.id, id), eq(servers.userId, userId)));
  if (!server || server.status === "deleted") throw notFound("No such server.");
  return server;
}

/** Job kinds (by prefix) that are administration of a server's users, tokens or settings, not a step of its lifecycle. */
export const ADMINISTRATION_JOB_PREFIXES = ["homeserver.users.", "homeserver.registration_tokens.", "homeserver.settings."];

/** The newest lifecycle job of a server: what is being done to it and how far along it is (not its users', tokens' or settings' administration). */
export async function latestLifecycleJob(db: Database, server: Server) {
  if (!server.hostId) return undefined;
  const [job] = await db
    .select()
    .from(jobs)
    .where(
      and(
        eq(jobs.serverId, server.id),
        eq(jobs.hostId, server.hostId),
        like(jobs.kind, "homeserver.%"),
        ...ADMINISTRATION_JOB_PREFIXES.map((prefix) => notLike(jobs.kind, `${prefix}%`)),
      ),
    )
    .orderBy(desc(jobs.createdAt))
    .limit(1);
  return job;
}

const nameTaken = (name: string) => conflict("name_taken", `The name ${name} is taken. Names are permanent: pick another.`);
// Whose it is is not said: that a domain is on Berth tells nobody more than its well-knowns already do, its owner does.
const serverNameTaken = (serverName: string) =>
  conflict("server_name_taken", `${serverName} is already the server name of another homeserver. A domain can be the server name of one homeserver only.`);
const serverLimit = () => conflict("server_limit", "Your plan includes one homeserver, and you have it already.");

/** The customer's own domain as a new homeserver's server name. */
export interface CustomServerName {
  serverName: string;
  /** The owner confirmed they publish the well-knowns later: provisioned at once, though federation and clients fail until they do. */
  publishLater: boolean;
}

const AWAITING_DELEGATION = "waiting for the well-knowns on its domain to pass the delegation check";

/**
 * Creates a homeserver and sends its provisioning job. The checks that matter
 * hold under concurrent requests because the database makes them in the
 * statements that write: the host's room is reserved by a conditional insert
 * (hasRoomSql), one live server per account by a unique index, and a name
 * by its row in server_names, which is never deleted (a name is never given
 * out again). The reads before are for clear answers only. Its DNS records are written after the
 * answer (pointServerAtLater): a slow or failing provider neither delays nor fails the create.
 * With the customer's own domain, it is only placed (awaiting_delegation) and its host asked to check
 * the domain's well-knowns; a pass provisions it (provisionAwaitingServer).
 */
export async function createServer(ctx: WorkContext, user: User, name: string, region: Region, custom: CustomServerName | null = null): Promise<Server> {
  const serverName = custom?.serverName ?? null;
  // Nothing is made on the host until the domain delegates to it, unless its owner said they publish later.
  const awaiting = custom !== null && !custom.publishLater;
  const summary = await billingSummary(ctx.db, user.id);
  const plan = summary.plan;
  if (!mayRun(summary.entitlement.state) || !plan) {
    throw forbidden("not_entitled", "A homeserver needs an active subscription: choose a plan on the billing page first.");
  }
  if ((await listServers(ctx.db, user.id)).length > 0) throw serverLimit();
  const [taken] = await ctx.db.select({ name: serverNames.name }).from(serverNames).where(eq(serverNames.name, name));
  if (taken) throw nameTaken(name);
  if (serverName) {
    const [held] = await ctx.db.select({ id: servers.id }).from(servers).where(eq(servers.serverName, serverName));
    if (held) throw serverNameTaken(serverName);
  }

  const id = crypto.randomUUID();
  const provisionJobId = crypto.randomUUID();
  for (const host of await placementCandidates(ctx, region, plan)) {
    const server = {
      id,
      userId: user.id,
      name,
      serverName,
      region,
      hostId: host.id,
      planId: plan.id,
      status: awaiting ? ("awaiting_delegation" as const) : ("provisioning" as const),
      statusReason: awaiting ? AWAITING_DELEGATION : null,
      lifecycleJobId: awaiting ? null : provisionJobId,
      createdAt: ctx.now,
      updatedAt: ctx.now,
    };
    const spec = homeserverSpec(ctx.config, server, plan);
    const created = sql`EXISTS (SELECT 1 FROM ${servers} WHERE ${servers.id} = ${id})`;
    try {
      await ctx.db.batch([
        insertWhere(ctx.db, servers, server, and(takesPlacementsSql(host.id), hasRoomSql(host.id, plan, ctx.now))!),
        // A name some server ever had fails this insert, and with it the whole batch.
        insertWhere(ctx.db, serverNames, { name, serverId: id, claimedAt: ctx.now }, created),
        ...(awaiting
          ? []
          : [
              insertWhere(
                ctx.db,
                workloads,
                { id, hostId: host.id, kind: "homeserver", spec, desired: "present", createdAt: ctx.now, updatedAt: ctx.now },
                created,
              ),
            ]),
      ]);
    } catch (error) {
      const message = String(error);
      if (message.includes("UNIQUE") && message.includes("user_id")) throw serverLimit();
      if (message.includes("UNIQUE") && message.includes("servers.server_name")) throw serverNameTaken(serverName!);
      if (message.includes("UNIQUE") && message.includes("name")) throw nameTaken(name);
      throw error;
    }
    const [placed] = await ctx.db.select().from(servers).where(eq(servers.id, id));
    // Another request took the last of this host's room meanwhile: try the next host.
    if (!placed) continue;
    const named = custom ? { serverName: custom.serverName, publishLater: custom.publishLater } : {};
    await audit(ctx.db, ctx.now, `user:${user.id}`, "server.created", id, { name, ...named, region, hostId: host.id });
    if (awaiting) {
      const payload = delegationCheckPayload(ctx.config, { id, name, serverName: custom.serverName });
      await dispatchJob(ctx.db, ctx.env, { hostId: host.id, kind: "homeserver.delegation_check", payload }, ctx.now);
    } else {
      await dispatchJob(ctx.db, ctx.env, { id: provisionJobId, hostId: host.id, kind: "homeserver.provision", payload: spec }, ctx.now);
    }
    // Synapse provisions meanwhile; only its certificate waits for the record (Caddy retries issuance).
    await pointServerAtLater(ctx, placed, host);
    return placed;
  }
  throw conflict("no_capacity", `No host in ${region} has room for a ${plan.name} homeserver right now. Try another region or try again later.`);
}

/**
 * Provisions a homeserver that waited for its delegation (its check passed, or its owner confirmed
 * they publish later), or makes it from the archive its owner uploaded for it. The status moves and the workload is written in one batch, conditional on
 * the server still waiting, so concurrent callers provision it once; an account billing does not let
 * run leaves it waiting. Null when it did not start.
 */
export async function provisionAwaitingServer(ctx: WorkContext, server: Server, actor: Actor, detail: Record<string, unknown>): Promise<Server | null> {
  if (server.status !== "awaiting_delegation" || !server.hostId) return null;
  const plan = planById(server.planId);
  if (!plan || !mayRun((await billingSummary(ctx.db, server.userId)).entitlement.state)) return null;
  const spec = homeserverSpec(ctx.config, server, plan);
  // An archive its owner uploads for it: made from that once it is all here, never empty meanwhile.
  const awaited = await importAwaited(ctx.db, server.id);
  if (awaited?.status === "uploading") return null;
  if (awaited) return startImportJob(ctx, { ...server, hostId: server.hostId }, awaited, spec, actor, detail);
  const jobId = crypto.randomUUID();
  const { hostId } = server;
  const moved = await moveAwaitingServer(ctx, server, jobId, null, (movedSql) =>
    insertWhere(ctx.db, workloads, { id: server.id, hostId, kind: "homeserver", spec, desired: "present", createdAt: ctx.now, updatedAt: ctx.now }, movedSql),
  );
  if (!moved) return null;
  await audit(ctx.db, ctx.now, actor, "server.provisioning_started", server.id, detail);
  await dispatchJob(ctx.db, ctx.env, { id: jobId, hostId: server.hostId, kind: "homeserver.provision", payload: spec }, ctx.now);
  return moved;
}

/**
 * Moves a waiting server to provisioning under `jobId`, with `also` written in the same batch on
 * the condition (`moved`) that this call moved it: concurrent callers move it once. The moved
 * server, or undefined when another call (or a deletion) got there first.
 */
export async function moveAwaitingServer(
  ctx: WorkContext,
  server: Pick<Server, "id">,
  jobId: string,
  statusReason: string | null,
  also: (moved: SQL) => BatchItem<"sqlite">,
): Promise<Server | undefined> {
  await ctx.db.batch([
    ctx.db
      .update(servers)
      .set({ status: "provisioning", statusReason, lifecycleJobId: jobId, updatedAt: ctx.now })
      .where(and(eq(servers.id, server.id), eq(servers.status, "awaiting_delegation"))),
    also(sql`EXISTS (SELECT 1 FROM ${servers} WHERE ${servers.id} = ${server.id} AND ${servers.lifecycleJobId} = ${jobId})`),
  ]);
  const [moved] = await ctx.db
    .select()
    .from(servers)
    .where(and(eq(servers.id, server.id), eq(servers.lifecycleJobId, jobId)));
  return moved;
}

/**
 * Moves a server from one of `from` to `to` and sends the lifecycle job that
 * does it; that job becomes the server's lifecycle job, so only its outcome
 * moves the status on (a superseded job's late outcome changes nothing).
 * Null when the server was no longer in one of `from` (or `also` no longer held): someone else moved it.
 */
export async function startLifecycleJob<K extends HomeserverJobKind>(
  ctx: WorkContext,
  server: Pick<Server, "id" | "hostId">,
  move: { from: ServerStatus[]; to: ServerStatus; previousStatus?: ServerStatus | null },
  job: { kind: K; payload: JobPayload<K> },
  also?: SQL,
): Promise<Server | null> {
  if (!server.hostId) return null;
  const jobId = crypto.randomUUID();
  const [moved] = await ctx.db
    .update(servers)
    .set({
      status: move.to,
      statusReason: null,
      lifecycleJobId: jobId,
      ...(move.previousStatus === undefined ? {} : { previousStatus: move.previousStatus }),
      updatedAt: ctx.now,
    })
    .where(and(eq(servers.id, server.id), inArray(servers.status, move.from), also))
    .returning();
  if (!moved) return null;
  await dispatchJob(ctx.db, ctx.env, { id: jobId, hostId: server.hostId, kind: job.kind, payload: job.payload }, ctx.now);
  return moved;
}

const TRANSITIONS: Partial<Record<"stop" | "start", { from: ServerStatus[]; to: ServerStatus; kind: HomeserverJobKind }>> = {
  stop: { from: ["running"], to: "stopping", kind: "homeserver.stop" },
  start: { from: ["stopped"], to: "starting", kind: "homeserver.start" },
};

/** Starting, restoring: refused while the account's subscription does not let it run homeservers. */
export async function requireMayRun(db: Database, userId: string): Promise<void> {
  const { entitlement } = await billingSummary(db, userId);
  if (!mayRun(entitlement.state)) {
    throw forbidden("not_entitled", "Your subscription does not allow running a homeserver now: settle it on the billing page first.");
  }
}

/** Stop or start a server the customer owns; only from a state where that makes sense. */
export async function changeServerState(ctx: WorkContext, user: User, id: string, action: "stop" | "start"): Promise<Server> {
  const server = await ownedServer(ctx.db, user.id, id);
  const transition = TRANSITIONS[action]!;
  if (!transition.from.includes(server.status)) {
    throw conflict("invalid_state", `The server is ${server.status}; it can ${action} only when ${transition.from.join(" or ")}.`);
  }
  if (action === "start") await requireMayRun(ctx.db, user.id);
  const updated = await startLifecycleJob(ctx, server, { from: [server.status], to: transition.to }, { kind: transition.kind, payload: { serverId: id } });
  if (!updated) throw conflict("invalid_state", "The server changed state meanwhile; try again.");
  return updated;
}

/** Operators move a running homeserver to another Synapse image; the agent rolls back if it fails its health check. */
export async function upgradeServer(ctx: WorkContext, operatorId: string, id: string, image: string): Promise<Server> {
  const [current] = await ctx.db.select().from(servers).where(eq(servers.id, id));
  const server =
    current &&
    (await startLifecycleJob(ctx, current, { from: ["running"], to: "upgrading" }, { kind: "homeserver.upgrade", payload: { serverId: id, image } }));
  if (!server) throw conflict("invalid_state", "Only a running homeserver can be upgraded.");
  await audit(ctx.db, ctx.now, `user:${operatorId}`, "server.upgrade_requested", id, { image });
  return server;
}
