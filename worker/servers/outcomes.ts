import { and, eq } from "drizzle-orm";
import type { Database } from "../db/client";
import { servers, type Job, type ServerStatus } from "../db/schema";

interface Outcome {
  ok: ServerStatus;
  failed: ServerStatus;
  failureReason?: string;
}

// What each finished lifecycle job means for its server's status.
const OUTCOMES: Record<string, Outcome> = {
  "homeserver.provision": { ok: "running", failed: "failed" },
  "homeserver.stop": { ok: "stopped", failed: "running", failureReason: "stopping failed" },
  "homeserver.start": { ok: "running", failed: "stopped", failureReason: "starting failed" },
  "homeserver.suspend": { ok: "suspended", failed: "failed" },
  "homeserver.resume": { ok: "running", failed: "suspended", failureReason: "resuming failed" },
  "homeserver.delete": { ok: "deleted", failed: "failed" },
  // The agent rolls a failed upgrade back to the version that worked.
  "homeserver.upgrade": { ok: "running", failed: "running", failureReason: "the upgrade failed and was rolled back" },
};

/** Applied by the host's Durable Object when a job's result is first recorded. */
export async function applyJobOutcome(db: Database, job: Job, now: Date): Promise<void> {
  const outcome = OUTCOMES[job.kind];
  const serverId = (job.payload as { serverId?: unknown } | null)?.serverId;
  if (!outcome || typeof serverId !== "string") return;
  const ok = job.status === "succeeded";
  const result = (job.result ?? {}) as { synapseVersion?: unknown; adminUserId?: unknown };
  await db
    .update(servers)
    .set({
      status: ok ? outcome.ok : outcome.failed,
      statusReason: ok ? null : [outcome.failureReason, job.error].filter(Boolean).join(": "),
      ...(ok && typeof result.synapseVersion === "string" ? { synapseVersion: result.synapseVersion } : {}),
      ...(ok && typeof result.adminUserId === "string" ? { adminUserId: result.adminUserId } : {}),
      updatedAt: now,
    })
    .where(and(eq(servers.id, serverId), eq(servers.hostId, job.hostId)));
}
