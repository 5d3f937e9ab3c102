import { and, desc, eq, like, ne, sql } from "drizzle-orm";
import type { HomeserverJobKind } from "../../protocol/messages";
import { audit } from "../audit/audit";
import { billingSummary } from "../billing/billing";
import { mayRun } from "../billing/entitlement";
import type { Plan } from "../billing/plans";
import type { Database } from "../db/client";
import { jobs, servers, workloads, type Server, type ServerStatus, type User } from "../db/schema";
import type { Env } from "../env";
import { conflict, forbidden, notFound } from "../errors";
import type { Region } from "../fleet/enrollment";
import { dispatchJob } from "../fleet/hosts";
import { placeServer } from "./placement";

export interface ServerContext {
  db: Database;
  env: Env;
  now: Date;
}


/** Provisioning a new Synapse and PostgreSQL can take a while on a cold host (images, initdb). */
export const LIFECYCLE_TIMEOUT_MS = 30 * 60_000;

export function serverNameOf(env: Env, name: string): string {
  return `${name}.${env.HOMESERVER_DOMAIN ?? "berth.example"}`;
}

/** Where clients reach a homeserver: https://<server name>, with the port when it is not 443. */
export function homeserverUrlOf(env: Env, name: string): string {
  const port = env.HOMESERVER_HTTPS_PORT && env.HOMESERVER_HTTPS_PORT !== "443" ? `:${env.HOMESERVER_HTTPS_PORT}` : "";
  return `https://${serverNameOf(env, name)}${port}`;
}

/** What a host needs to run this homeserver: the payload of every lifecycle job. */
export function homeserverSpec(env: Env, server: Pick<Server, "id" | "name">, plan: Plan) {
  const serverName = serverNameOf(env, server.name);
  return {
    serverId: server.id,
    name: server.name,
    serverName,
    publicBaseUrl: `${homeserverUrlOf(env, server.name)}/`,
    resources: plan.resources,
    images: {
      synapse: env.SYNAPSE_IMAGE ?? "matrixdotorg/synapse:latest",
      postgres: env.POSTGRES_IMAGE ?? "postgres:15",
    },
  };
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
  const [server] = await db.select().from(servers).where(and(eq(servers.id, id), eq(servers.userId, userId)));
  if (!server || server.status === "deleted") throw notFound("No such server.");
  return server;
}

/** The newest lifecycle job of a server: what is being done to it and how far along it is. */
export async function latestLifecycleJob(db: Database, server: Server) {
  if (!server.hostId) return undefined;
  const [job] = await db
    .select()
    .from(jobs)
    .where(
      and(
        eq(jobs.hostId, server.hostId),
        like(jobs.kind, "homeserver.%"),
        sql`json_extract(${jobs.payload}, '$.serverId') = ${server.id}`,
      ),
    )
    .orderBy(desc(jobs.createdAt))
    .limit(1);
  return job;
}

export async function createServer(ctx: ServerContext, user: User, name: string, region: Region): Promise<Server> {
  const summary = await billingSummary(ctx.db, user.id);
  if (!mayRun(summary.entitlement.state) || !summary.plan) {
    throw forbidden("not_entitled", "A homeserver needs an active subscription: choose a plan on the billing page first.");
  }
  if ((await listServers(ctx.db, user.id)).length > 0) {
    throw conflict("server_limit", "Your plan includes one homeserver, and you have it already.");
  }
  const [taken] = await ctx.db.select({ id: servers.id }).from(servers).where(eq(servers.name, name));
  if (taken) throw conflict("name_taken", `The name ${name} is taken. Names are permanent: pick another.`);
  const host = await placeServer(ctx.db, region, summary.plan);
  if (!host) {
    throw conflict(
      "no_capacity",
      `No host in ${region} has room for a ${summary.plan.name} homeserver right now. Try another region or try again later.`,
    );
  }
  const id = crypto.randomUUID();
  const server = {
    id,
    userId: user.id,
    name,
    region,
    hostId: host.id,
    planId: summary.plan.id,
    status: "provisioning" as const,
    createdAt: ctx.now,
    updatedAt: ctx.now,
  };
  const spec = homeserverSpec(ctx.env, server, summary.plan);
  try {
    await ctx.db.batch([
      ctx.db.insert(servers).values(server),
      ctx.db
        .insert(workloads)
        .values({ id, hostId: host.id, kind: "homeserver", spec, desired: "present", createdAt: ctx.now, updatedAt: ctx.now }),
      audit(ctx.db, ctx.now, `user:${user.id}`, "server.created", id, { name, region, hostId: host.id }),
    ]);
  } catch (error) {
    if (String(error).includes("UNIQUE")) throw conflict("name_taken", `The name ${name} is taken. Names are permanent: pick another.`);
    throw error;
  }
  await dispatchJob(ctx.db, ctx.env, { hostId: host.id, kind: "homeserver.provision", payload: spec, timeoutMs: LIFECYCLE_TIMEOUT_MS }, ctx.now);
  return { ...server, statusReason: null, previousStatus: null, synapseVersion: null, adminUserId: null };
}


const TRANSITIONS: Partial<Record<"stop" | "start", { from: ServerStatus[]; to: ServerStatus; kind: HomeserverJobKind }>> = {
  stop: { from: ["running"], to: "stopping", kind: "homeserver.stop" },
  start: { from: ["stopped"], to: "starting", kind: "homeserver.start" },
};

/** Stop or start a server the customer owns; only from a state where that makes sense. */
export async function changeServerState(ctx: ServerContext, user: User, id: string, action: "stop" | "start"): Promise<Server> {
  const server = await ownedServer(ctx.db, user.id, id);
  const transition = TRANSITIONS[action]!;
  if (!transition.from.includes(server.status)) {
    throw conflict("invalid_state", `The server is ${server.status}; it can ${action} only when ${transition.from.join(" or ")}.`);
  }
  const [updated] = await ctx.db
    .update(servers)
    .set({ status: transition.to, statusReason: null, updatedAt: ctx.now })
    .where(and(eq(servers.id, id), eq(servers.status, server.status)))
    .returning();
  if (!updated) throw conflict("invalid_state", "The server changed state meanwhile; try again.");
  await dispatchJob(ctx.db, ctx.env, { hostId: server.hostId!, kind: transition.kind, payload: { serverId: id }, timeoutMs: LIFECYCLE_TIMEOUT_MS }, ctx.now);
  return updated;
}

/** Operators move a running homeserver to another Synapse image; the agent rolls back if it fails its health check. */
export async function upgradeServer(ctx: ServerContext, operatorId: string, id: string, image: string): Promise<Server> {
  const [server] = await ctx.db
    .update(servers)
    .set({ status: "upgrading", statusReason: null, updatedAt: ctx.now })
    .where(and(eq(servers.id, id), eq(servers.status, "running")))
    .returning();
  if (!server) throw conflict("invalid_state", "Only a running homeserver can be upgraded.");
  await ctx.db.batch([audit(ctx.db, ctx.now, `user:${operatorId}`, "server.upgrade_requested", id, { image })]);
  await dispatchJob(ctx.db, ctx.env, { hostId: server.hostId!, kind: "homeserver.upgrade", payload: { serverId: id, image }, timeoutMs: LIFECYCLE_TIMEOUT_MS }, ctx.now);
  return server;
}
