import { eq } from "drizzle-orm";
import type { ReportedWorkload } from "../../protocol/messages";
import type { Database } from "../db/client";
import { workloads, type Job } from "../db/schema";
import { createJob, unfinishedJobsOfKind } from "./jobs";

/**
 * Compares what a host reports it runs with what should run there, and
 * enqueues the jobs that close the gap: `workload.ensure` for what is missing,
 * `workload.remove` for what should be gone. A workload that already has such a
 * job under way gets no second one.
 */
export async function reconcileHost(db: Database, hostId: string, reported: ReportedWorkload[], now: Date): Promise<Job[]> {
  const desired = await db.select().from(workloads).where(eq(workloads.hostId, hostId));
  const running = new Set(reported.map((workload) => workload.id));
  const wanted = new Map(desired.filter((workload) => workload.desired === "present").map((workload) => [workload.id, workload]));
  const pending = new Set(
    (await unfinishedJobsOfKind(db, hostId, ["workload.ensure", "workload.remove"])).map(
      (job) => `${job.kind}:${(job.payload as { id?: string } | null)?.id}`,
    ),
  );

  const created: Job[] = [];
  for (const workload of wanted.values()) {
    if (running.has(workload.id) || pending.has(`workload.ensure:${workload.id}`)) continue;
    created.push(
      await createJob(db, { hostId, kind: "workload.ensure", payload: { id: workload.id, kind: workload.kind, spec: workload.spec } }, now),
    );
  }
  for (const workload of reported) {
    if (wanted.has(workload.id) || pending.has(`workload.remove:${workload.id}`)) continue;
    created.push(await createJob(db, { hostId, kind: "workload.remove", payload: { id: workload.id, kind: workload.kind } }, now));
  }
  return created;
}
