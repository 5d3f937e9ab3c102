import type { billingSummary } from "../billing/billing";
import type { Plan } from "../billing/plans";
import type { auditLog, Backup, Host, Invoice, Job, Server, ServerExport, ServerImport, UpkeepRun, User } from "../db/schema";
import type { WorkerConfig } from "../config";
import { UPLOAD_NOT_COMPLETED } from "../backups/backups";
import { keptUntil } from "../backups/maintenance";
import { EXPORT_NOT_STARTED } from "../exports/exports";
import { partCount, partsMissingFrom } from "../imports/imports";
import { EXPORT_UPLOAD_NOT_COMPLETED } from "../uploads/job-files";
import { JOB_DEADLINE_EXCEEDED } from "../fleet/jobs";
import { homeserverUrlOf, matrixServerNameOf } from "../servers/servers";
import type { HostRoom } from "../servers/placement";

/**
 * What a customer reads when work failed on the host. The agent's own error
 * text can name host paths, host ids and other customers' ids, so it stays with
 * operators (jobs.error, backups.error, the audit log); customers get our words.
 */
export const HOST_FAILURE_TEXT = "the host reported an error; our operators can see the details";

/** A failed job's or backup's error as its customer reads it: our own reasons in plain words, anything from the agent as HOST_FAILURE_TEXT. */
export function customerFailureText(error: string | null): string | null {
  if (error === null) return null;
  if (error === JOB_DEADLINE_EXCEEDED) return "the host did not finish it in time";
  if (error === UPLOAD_NOT_COMPLETED) return "the host ended the backup without completing its upload";
  if (error === EXPORT_UPLOAD_NOT_COMPLETED) return "the host ended the export without completing its upload";
  if (error === EXPORT_NOT_STARTED) return error;
  return HOST_FAILURE_TEXT;
}

/** Audit detail fields that are ours to show a customer; anything else (a host id, the agent's words) is left out. */
const CUSTOMER_AUDIT_FIELDS = new Set([
  "name",
  "reference",
  "scope",
  // A legal export's record counts and which of its files was downloaded: never content.
  "records",
  "file",
  "region",
  "backupId",
  "trigger",
  "size",
  "parts",
  "from",
  "state",
  "image",
  "servers",
  "lastSucceededAt",
  "userId",
  "usesAllowed",
  "tokenPrefix",
  "databaseBytes",
  "stateGroupsStateRows",
  "mediaBytes",
  "remoteMediaDeleted",
]);
/** Fields that carry a failure's text: shown as customerFailureText() says. */
const FAILURE_FIELDS = new Set(["reason", "lastFailure"]);

/**
 * An audit entry as the customer it is about reads it: a host as "host", an
 * operator (anyone but the customer) as "operator", a target that is not the
 * customer's account or homeserver left out, and only our own detail fields.
 */
export function presentAuditEntryToCustomer(entry: typeof auditLog.$inferSelect, userId: string, serverIds: ReadonlySet<string>) {
  const actor = entry.actor.startsWith("host:") ? "host" : entry.actor.startsWith("user:") && entry.actor !== `user:${userId}` ? "operator" : entry.actor;
  const detail = entry.detail as Record<string, unknown> | null;
  return {
    at: entry.at.toISOString(),
    actor,
    action: entry.action,
    target: entry.target === userId || (entry.target !== null && serverIds.has(entry.target)) ? entry.target : null,
    detail:
      detail &&
      Object.fromEntries(
        Object.entries(detail).flatMap(([key, value]): [string, unknown][] => {
          if (FAILURE_FIELDS.has(key)) return [[key, typeof value === "string" ? customerFailureText(value) : null]];
          return CUSTOMER_AUDIT_FIELDS.has(key) ? [[key, value]] : [];
        }),
      ),
  };
}

/** The account as its owner sees it through the API. */
export function publicUser(user: User) {
  return {
    id: user.id,
    email: user.email,
    emailVerified: user.emailVerifiedAt !== null,
    emailVerifiedAt: user.emailVerifiedAt?.toISOString() ?? null,
    createdAt: user.createdAt.toISOString(),
  };
}

export function presentPlan(plan: Plan) {
  return {
    id: plan.id,
    name: plan.name,
    monthlyPrice: plan.monthlyPrice,
    currency: plan.currency,
    resources: plan.resources,
    maxUsers: plan.maxUsers,
    maxUploadMiB: plan.maxUploadMiB,
  };
}

/** The account's subscription and what it may run; `status` is "none" without a subscription. */
export function presentSubscription(summary: Awaited<ReturnType<typeof billingSummary>>) {
  const { subscription, entitlement } = summary;
  return {
    status: subscription?.status ?? "none",
    plan: subscription?.planId ?? null,
    currentPeriodEnd: subscription?.currentPeriodEnd?.toISOString() ?? null,
    cancelAtPeriodEnd: subscription?.cancelAtPeriodEnd ?? false,
    entitlement: {
      state: entitlement.state,
      mayRun: summary.mayRun,
      since: entitlement.state === "none" ? null : entitlement.since.toISOString(),
      until: entitlement.until?.toISOString() ?? null,
    },
  };
}

export function presentInvoice(invoice: Invoice) {
  return {
    id: invoice.id,
    number: invoice.number,
    status: invoice.status,
    amountDue: invoice.amountDue,
    amountPaid: invoice.amountPaid,
    currency: invoice.currency,
    periodStart: invoice.periodStart.toISOString(),
    periodEnd: invoice.periodEnd.toISOString(),
    hostedInvoiceUrl: invoice.hostedInvoiceUrl,
    invoicePdf: invoice.invoicePdf,
    createdAt: invoice.createdAt.toISOString(),
  };
}

export function presentHost(host: Host) {
  return {
    id: host.id,
    name: host.name,
    region: host.region,
    capacity: { memoryMiB: host.memoryMiB, cpus: host.cpus, diskGiB: host.diskGiB },
    status: host.status,
    state: host.state,
    lastSeenAt: host.lastSeenAt?.toISOString() ?? null,
    agentVersion: host.agentVersion,
    protocolVersion: host.protocolVersion,
    diskEncryption: {
      encrypted: host.diskEncrypted,
      allowUnencrypted: host.allowUnencrypted,
      operatorAllowsUnencrypted: host.unencryptedPlacementOverride,
      devices: host.diskDevices ?? [],
    },
    /** Where its homeservers' DNS records point (null until its agent reports it). */
    publicAddresses: host.publicIpv4 ? { ipv4: host.publicIpv4, ipv6: host.publicIpv6 } : null,
    enrolledAt: host.enrolledAt.toISOString(),
    revokedAt: host.revokedAt?.toISOString() ?? null,
  };
}

/** How placement counts a host's memory (docs/decisions.md, "Placement by measured use"), in MiB. */
export function presentPlacement(room: HostRoom) {
  const { memory } = room;
  return {
    memoryCapacityMiB: memory.capacityMiB,
    memoryUsedMiB: memory.usedMiB,
    memoryAdmittedMiB: memory.admittedMiB,
    memoryFreeMiB: room.freeMemoryMiB,
    memoryCommittedMiB: memory.committedMiB,
    memoryCeilingMiB: memory.ceilingMiB,
    memoryReportedAvailableMiB: memory.reportedAvailableMiB,
    tight: room.tight,
    tightSince: room.host.tightSince?.toISOString() ?? null,
  };
}

export function presentJob(job: Job) {
  return {
    id: job.id,
    hostId: job.hostId,
    kind: job.kind,
    payload: job.payload,
    status: job.status,
    attempts: job.attempts,
    progress: job.progress,
    progressMessage: job.progressMessage,
    result: job.result,
    error: job.error,
    deadline: job.deadline.toISOString(),
    createdAt: job.createdAt.toISOString(),
    finishedAt: job.finishedAt?.toISOString() ?? null,
  };
}

/** Usage rows as series points: the time and each metric, no internal keys. */
export function presentUsage<T extends { at: Date }>(series: { resolution: string; rows: T[] }, omit: (keyof T)[]) {
  return {
    resolution: series.resolution,
    points: series.rows.map((row) => {
      const point: Record<string, unknown> = { at: row.at.toISOString() };
      for (const [key, value] of Object.entries(row)) {
        if (key !== "at" && !omit.includes(key as keyof T)) point[key] = value;
      }
      return point;
    }),
  };
}

/** A homeserver as its owner sees it: where to reach it, its state, and the step under way. */
export function presentServer(config: WorkerConfig, server: Server, job: Job | undefined) {
  return {
    id: server.id,
    name: server.name,
    serverName: matrixServerNameOf(config, server),
    homeserverUrl: homeserverUrlOf(config, server.name),
    region: server.region,
    plan: server.planId,
    /** False while a plan change is being applied on the host. */
    planApplied: server.appliedPlanId === null || server.appliedPlanId === server.planId,
    status: server.status,
    statusReason: server.statusReason,
    synapseVersion: server.synapseVersion,
    createdAt: server.createdAt.toISOString(),
    updatedAt: server.updatedAt.toISOString(),
    lastJob: job
      ? {
          kind: job.kind,
          status: job.status,
          progress: job.progress,
          message: job.progressMessage,
          error: customerFailureText(job.error),
        }
      : null,
  };
}

/** An upkeep of a homeserver as its owner sees it: the sizes its host measured before and after. */
export function presentUpkeep(run: UpkeepRun) {
  return {
    finishedAt: run.finishedAt.toISOString(),
    databaseBytes: { before: run.databaseBytesBefore, after: run.databaseBytesAfter },
    stateGroupsStateRows: { before: run.stateGroupsStateRowsBefore, after: run.stateGroupsStateRowsAfter },
    mediaBytes: { before: run.mediaBytesBefore, after: run.mediaBytesAfter },
    remoteMediaDeleted: run.remoteMediaDeleted,
    compressorMs: run.compressorMs,
  };
}

/** A backup as its server's owner (or its host) sees it: never its key, object name or upload id, nor the agent's error text. */
export function presentBackup(backup: Backup, newestSucceededId: string | undefined, now: Date) {
  return {
    id: backup.id,
    trigger: backup.trigger,
    status: backup.status,
    sizeBytes: backup.sizeBytes,
    progressBytes: backup.progressBytes,
    error: customerFailureText(backup.error),
    createdAt: backup.createdAt.toISOString(),
    startedAt: backup.startedAt?.toISOString() ?? null,
    completedAt: backup.completedAt?.toISOString() ?? null,
    keptUntil: keptUntil(backup, newestSucceededId, now)?.toISOString() ?? null,
  };
}

/**
 * An import as its owner sees it: how much has arrived (with the digests of the parts received, so
 * a resumed upload sends only what differs from the file chosen again), then how the homeserver is
 * being made.
 */
export function presentServerImport(row: ServerImport, received: { partNumber: number; sha256: string }[], job: Job | null) {
  const iso = (date: Date | null) => date?.toISOString() ?? null;
  const parts = partCount(row);
  const uploading = row.status === "uploading";
  return {
    id: row.id,
    status: row.status,
    sizeBytes: row.sizeBytes,
    partSize: row.partSize,
    parts,
    missingParts: uploading ? partsMissingFrom(row, received) : [],
    receivedParts: uploading ? received.map(({ partNumber, sha256 }) => ({ partNumber, sha256 })) : [],
    progress: {
      partsReceived: uploading ? received.length : parts,
      fraction: row.status === "imported" ? 1 : row.status === "importing" ? (job?.progress ?? 0) : null,
    },
    counts: row.counts,
    error: row.error,
    createdAt: row.createdAt.toISOString(),
    uploadedAt: iso(row.uploadedAt),
    finishedAt: iso(row.finishedAt),
  };
}

/**
 * A full export as its owner reads it: how far along it is (the bytes uploaded, and the host's
 * estimate while its job runs), its size once ready and until when it can be downloaded. Never its
 * R2 key or the job's payload.
 */
export function presentServerExport(row: ServerExport, job: Job | null, now: Date) {
  const downloadable = row.status === "ready" && row.expiresAt !== null && row.expiresAt > now;
  const iso = (date: Date | null) => date?.toISOString() ?? null;
  return {
    id: row.id,
    status: row.status,
    progress: {
      bytesUploaded: row.progressBytes,
      fraction: row.status === "ready" ? 1 : row.status === "queued" || row.status === "running" ? (job?.progress ?? 0) : null,
    },
    sizeBytes: row.sizeBytes,
    error: customerFailureText(row.error),
    createdAt: row.createdAt.toISOString(),
    readyAt: iso(row.readyAt),
    expiresAt: iso(row.expiresAt),
    downloadUrl: downloadable ? `/api/servers/${row.serverId}/exports/${row.id}/download` : null,
  };
}
