import { and, desc, eq } from "drizzle-orm";
import { audit } from "../audit/audit";
import { consumeRateLimits } from "../auth/rate-limit";
import { requestDelegationCheck } from "../checks/delegation";
import { presentCheckResult } from "../checks/results";
import { checkJobUnderWay } from "../checks/runs";
import type { WorkerConfig } from "../config";
import type { WorkContext } from "../context";
import { checkResults, type Job, type Server, type User } from "../db/schema";
import { conflict, notFound } from "../errors";
import { importAwaited } from "../imports/imports";
import { homeserverUrlOf, ownedServer, provisionAwaitingServer, requireMayRun, servedHostOf } from "./servers";

// A homeserver with the customer's own domain as its Matrix server name is served at our host; the
// two well-knowns the customer publishes on their domain join them (docs/decisions.md, "Custom
// server names"). These are the documents the dashboard shows and the delegation check expects.

export interface WellKnown {
  /** Where to publish it: on the customer's domain, over HTTPS. */
  url: string;
  /** The JSON document, exactly. */
  document: Record<string, unknown>;
  /** The response headers it needs. */
  headers: Record<string, string>;
}

/** The well-knowns to publish on the server's own domain; a 404 for a server that has none (nothing to delegate). */
export function delegationDocuments(config: WorkerConfig, server: Pick<Server, "name" | "serverName">): { server: WellKnown; client: WellKnown } {
  if (!server.serverName) throw notFound("This homeserver's server name is our own: it needs no delegation.");
  const base = `https://${server.serverName}/.well-known/matrix`;
  return {
    // Federation finds the homeserver here: the served host and its port (8448 is not used).
    server: {
      url: `${base}/server`,
      document: { "m.server": `${servedHostOf(config, server.name)}:${config.homeservers.httpsPort}` },
      headers: { "Content-Type": "application/json" },
    },
    // Clients find it here; web clients read it from another origin, which needs the CORS header.
    client: {
      url: `${base}/client`,
      document: { "m.homeserver": { base_url: homeserverUrlOf(config, server.name) } },
      headers: { "Content-Type": "application/json", "Access-Control-Allow-Origin": "*" },
    },
  };
}

/** What the owner confirms when they provision before publishing: said by the API and the dashboard alike. */
export const PUBLISH_LATER_WARNING =
  "Until both well-knowns are published on your domain, other Matrix servers cannot federate with this homeserver and Matrix apps cannot find it from its user ids: only its address under ours works.";

/** For its owner: the documents to publish, the latest check's verdict and evidence, whether one runs now, and where the homeserver stands. */
export async function delegationStatus(ctx: WorkContext, server: Server) {
  const wellKnown = delegationDocuments(ctx.config, server);
  const [latest] = await ctx.db
    .select()
    .from(checkResults)
    .where(and(eq(checkResults.serverId, server.id), eq(checkResults.checkId, "delegation")))
    .orderBy(desc(checkResults.checkedAt))
    .limit(1);
  return {
    serverName: server.serverName,
    status: server.status,
    wellKnown,
    check: latest ? presentCheckResult(latest) : null,
    checking: (await checkJobUnderWay(ctx, server.id, "homeserver.delegation_check")) !== undefined,
    publishLaterWarning: server.status === "awaiting_delegation" ? PUBLISH_LATER_WARNING : null,
  };
}

/** "Check again", by the owner of a homeserver with its own domain, waiting or running: one at a time, and within the checks' hourly limit. */
export async function checkDelegationNow(ctx: WorkContext, user: User, serverId: string): Promise<Job> {
  const server = await ownedServer(ctx.db, user.id, serverId);
  delegationDocuments(ctx.config, server);
  if (!server.hostId || !server.serverName || !["awaiting_delegation", "running"].includes(server.status)) {
    throw conflict("invalid_state", `The homeserver is ${server.status}; its delegation is checked while it waits for it or runs.`);
  }
  if (await checkJobUnderWay(ctx, server.id, "homeserver.delegation_check"))
    throw conflict("checks_running", "The delegation is being checked now; the result shows here when it is done.");
  await consumeRateLimits(ctx.db, ctx.config.rateLimits, [{ name: "checks_server", subject: server.id }], ctx.now);
  const job = await requestDelegationCheck(ctx, { ...server, hostId: server.hostId, serverName: server.serverName });
  await audit(ctx.db, ctx.now, `user:${user.id}`, "server.delegation_check_requested", server.id, { jobId: job.id });
  return job;
}

/** The owner confirms they publish the well-knowns later (PUBLISH_LATER_WARNING): a waiting homeserver is provisioned now. */
export async function publishDelegationLater(ctx: WorkContext, user: User, serverId: string): Promise<Server> {
  const server = await ownedServer(ctx.db, user.id, serverId);
  if (server.status !== "awaiting_delegation") {
    throw conflict("invalid_state", `The homeserver is ${server.status}; only one waiting for its delegation can be set up before it passes.`);
  }
  if (await importAwaited(ctx.db, server.id)) {
    throw conflict(
      "import_needs_delegation",
      "An imported homeserver keeps its archive's server name, which is yours only once your domain delegates to us: publish the well-knowns and check again (or cancel the import).",
    );
  }
  await requireMayRun(ctx.db, user.id);
  const started = await provisionAwaitingServer(ctx, server, `user:${user.id}`, { delegation: "publish_later" });
  if (!started) throw conflict("invalid_state", "The homeserver changed state meanwhile; reload it.");
  return started;
}
