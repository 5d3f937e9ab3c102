import { and, eq, isNull, or } from "drizzle-orm";
import { checkJobPayload, JobSchemaError } from "../../protocol/jobs";
import type { ReportedWorkload } from "../../protocol/messages";
import { audit } from "../audit/audit";
import type { Database } from "../db/client";
import { serverMigrations, workloads, type Job } from "../db/schema";
import { logError } from "../logging";
import { createJob, payloadOf, unfinishedJobsOfKind } from "./jobs";

/**
 * Compares what a host reports it runs with what should run there, and
 * enqueues the jobs that close the gap: `workload.ensure` for what is missing
 * (`homeserver.provision`, which is idempotent, for a homeserver),
 * `workload.remove` for what should be gone. A workload that already has such
 * a job under way gets no second one. A homeserver that runs but should not is
 * never removed by reconciliation (it holds a customer's data): it is audited
 * for an operator to look at. A homeserver moving onto or off this host is left to its migration:
 * it is expected on both hosts until the move ends, and on neither for parts of it.
 */
export async function reconcileHost(db: Database, hostId: string, reported: ReportedWorkload[], now: Date): Promise<Job[]> {
  const moving = new Set(
    (
      await db
        .select({ serverId: serverMigrations.serverId })
        .from(serverMigrations)
        .where(and(isNull(serverMigrations.finishedAt), or(eq(serverMigrations.sourceHostId, hostId), eq(serverMigrations.targetHostId, hostId))))
    ).map((row) => row.serverId),
  );
  const desired = (await db.select().from(workloads).where(eq(workloads.hostId, hostId))).filter((workload) => !moving.has(workload.id));
  const running = new Set(reported.map((workload) => workload.id));
  const wanted = new Map(desired.filter((workload) => workload.desired === "present").map((workload) => [workload.id, workload]));
  const pending = new Set(
    (await unfinishedJobsOfKind(db, hostId, ["workload.ensure", "workload.remove", "homeserver.provision"])).map(
      (job) => `${job.kind}:${job.serverId ?? (payloadOf(job, "workload.ensure") ?? payloadOf(job, "workload.remove"))?.id}`,
    ),
  );

  const created: Job[] = [];
  for (const workload of wanted.values()) {
    const ensure = workload.kind === "homeserver" ? "homeserver.provision" : "workload.ensure";
    if (running.has(workload.id) || pending.has(`${ensure}:${workload.id}`)) continue;
    const payload = workload.kind === "homeserver" ? workload.spec : { id: workload.id, kind: workload.kind, spec: workload.spec };
    created.push(
      ...(await reconciliationJob(hostId, workload.id, () => createJob(db, { hostId, kind: ensure, payload: checkJobPayload(ensure, payload) }, now))),
    );
  }
  for (const workload of reported) {
    if (wanted.has(workload.id) || moving.has(workload.id) || pending.has(`workload.remove:${workload.id}`)) continue;
    if (workload.kind === "homeserver") {
      await audit(db, now, `host:${hostId}`, "reconcile.unexpected_homeserver", workload.id, { state: workload.state });
      continue;
    }
    const payload = { id: workload.id, kind: workload.kind };
    created.push(...(await reconciliationJob(hostId, workload.id, () => createJob(db, { hostId, kind: "workload.remove", payload }, now))));
  }
  return created;
}

/** A reconciliation job, unless its payload would be invalid (a corrupt spec, an id the host made up): that is logged for operators. */
async function reconciliationJob(hostId: string, workloadId: string, write: () => Promise<Job>): Promise<Job[]> {
  try {
    return [await write()];
  } catch (error) {
    if (!(error instanceof JobSchemaError)) throw error;
    logError("reconcile_invalid_payload", error, { hostId, workloadId });
    return [];
  }
}
