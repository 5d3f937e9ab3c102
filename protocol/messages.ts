// The agent protocol: versioned JSON messages over one WebSocket per host,
// validated on both ends with these schemas (the Worker and the agent import
// this file and the job catalogue, jobs.ts, and nothing else of each other).
import { z } from "zod";

/** The protocol this build speaks. A peer that offers none we accept is closed with PROTOCOL_TOO_OLD. */
export const PROTOCOL_VERSION = 1;
export const OLDEST_SUPPORTED_PROTOCOL = 1;

/** WebSocket close codes (4000–4999 are the application's). */
export const CLOSE = {
  UNAUTHORIZED: 4001,
  PROTOCOL_TOO_OLD: 4002,
  REPLACED: 4003,
  REVOKED: 4004,
  INVALID_MESSAGE: 4005,
  AUTH_TIMEOUT: 4008,
  HEARTBEAT_TIMEOUT: 4009,
} as const;

/** Text frames the Durable Object answers without waking (WebSocket auto-response). */
export const PING = "ping";
export const PONG = "pong";

/** What the agent signs (Ed25519) to prove it holds the host's key: bound to this host and this challenge. */
export function helloSigningInput(hostId: string, nonce: string): string {
  return `berth-agent-hello-v1\n${hostId}\n${nonce}`;
}

const id = z.string().min(1).max(128);
/**
 * The id of something a host keeps (a homeserver, a backup, a workload): the agent makes file names,
 * paths and PostgreSQL database names of it, so nothing that could leave a directory or end a quoted
 * name. The control plane's ids are UUIDs (crypto.randomUUID()), which fit.
 */
export const RESOURCE_ID = /^[a-z0-9][a-z0-9-]{0,63}$/;
export const resourceIdSchema = z.string().regex(RESOURCE_ID, "lower-case letters, digits and '-' (at most 64, not starting with '-')");
const base64url = z
  .string()
  .regex(/^[A-Za-z0-9_-]+$/)
  .max(512);
const json = z.json();

// ---------- shared shapes ----------

export const diskEncryptionSchema = z.strictObject({
  /** The data root's path on the host. */
  dataRoot: z.string().max(4096),
  /** True when the data root sits on a dm-crypt (LUKS or plain) device. */
  encrypted: z.boolean(),
  /** The block device chain found, e.g. ["dm-0 (crypt)", "vda2"]. */
  devices: z.array(z.string().max(256)).max(16),
  /** Started with --allow-unencrypted-data-root: customer data is accepted anyway (development only). */
  allowUnencrypted: z.boolean(),
});
export type DiskEncryption = z.infer<typeof diskEncryptionSchema>;

/**
 * Where the host is reached from the internet, as its operator wrote it in agent.json: its
 * homeservers' DNS records (<name>.<HOMESERVER_DOMAIN>) point there.
 */
export const publicAddressesSchema = z.strictObject({
  ipv4: z.ipv4(),
  ipv6: z.ipv6().optional(),
});
export type PublicAddresses = z.infer<typeof publicAddressesSchema>;

export const capacitySchema = z.strictObject({
  memoryMiB: z.number().int().nonnegative(),
  cpus: z.number().nonnegative(),
  diskGiB: z.number().nonnegative(),
});
export type Capacity = z.infer<typeof capacitySchema>;

/** A workload as the agent actually runs it. */
export const reportedWorkloadSchema = z.strictObject({
  id,
  kind: z.string().min(1).max(64),
  state: z.enum(["running", "stopped", "failed"]),
});
export type ReportedWorkload = z.infer<typeof reportedWorkloadSchema>;

/** A TLS certificate the host's proxy serves, so operators see expiry coming. */
export const certificateSchema = z.strictObject({
  serverName: z.string().max(253),
  /** Unix milliseconds: with notAfter, the certificate's lifetime (hours for a local CA, 90 days for Let's Encrypt). */
  notBefore: z.number().int().positive().optional(),
  /** Unix milliseconds. */
  notAfter: z.number().int().positive(),
  issuer: z.string().max(500),
});
export type CertificateReport = z.infer<typeof certificateSchema>;

export const hostUsageSchema = z.strictObject({
  cpuLoadPercent: z.number().nonnegative(),
  memoryUsedBytes: z.number().nonnegative(),
  memoryAvailableBytes: z.number().nonnegative(),
  disks: z.array(z.strictObject({ mount: z.string().max(4096), usedBytes: z.number().nonnegative(), sizeBytes: z.number().nonnegative() })).max(64),
  networkRxBytes: z.number().nonnegative(),
  networkTxBytes: z.number().nonnegative(),
});

export const containerUsageSchema = z.strictObject({
  /** The workload the container belongs to (its berth.workload label). */
  workloadId: id,
  container: z.string().max(256),
  cpuPercent: z.number().nonnegative(),
  /** Memory in use excluding the page cache, as `docker stats` reports it. */
  memoryBytes: z.number().nonnegative(),
  memoryLimitBytes: z.number().nonnegative(),
  networkRxBytes: z.number().nonnegative(),
  networkTxBytes: z.number().nonnegative(),
  blockReadBytes: z.number().nonnegative(),
  blockWriteBytes: z.number().nonnegative(),
  pids: z.number().int().nonnegative(),
});

/** A petabyte: more than any plan's storage, so a larger figure is no measurement. */
const MAX_STORAGE_BYTES = 2 ** 50;

/**
 * A homeserver's storage quota as `statfs` of its mounted filesystem counts it (usable blocks, not
 * the image's size). Bounded so that a host cannot make the control plane divide by zero, count a
 * negative or overfull quota, or mail about a figure no filesystem reports.
 */
export const storageQuotaSchema = z
  .strictObject({
    usedBytes: z.number().int().nonnegative().max(MAX_STORAGE_BYTES),
    quotaBytes: z
      .number()
      .int()
      .min(1024 * 1024)
      .max(MAX_STORAGE_BYTES),
  })
  .refine((quota) => quota.usedBytes <= quota.quotaBytes, { message: "usedBytes exceeds quotaBytes", path: ["usedBytes"] });
export type StorageQuotaFigures = z.infer<typeof storageQuotaSchema>;

/** What a workload keeps on the host's disk (its data directory), as `du` counts it. */
export const workloadStorageSchema = z.strictObject({
  workloadId: id,
  usedBytes: z.number().nonnegative(),
  /** Its storage quota, when one is mounted at its directory (none: no quota, or an older agent). */
  quota: storageQuotaSchema.optional(),
});

export const usageSampleSchema = z.strictObject({
  /** Unix milliseconds when measured. */
  at: z.number().int().positive(),
  host: hostUsageSchema,
  containers: z.array(containerUsageSchema).max(1000),
  /** Measured every few minutes (each sample carries the latest figures); optional, as older agents do not send it. */
  storage: z.array(workloadStorageSchema).max(1000).optional(),
});
export type UsageSample = z.infer<typeof usageSampleSchema>;
export type ContainerUsage = z.infer<typeof containerUsageSchema>;
export type WorkloadStorage = z.infer<typeof workloadStorageSchema>;

// ---------- control plane → agent ----------

export const challengeMessage = z.strictObject({
  type: z.literal("challenge"),
  protocol: z.number().int(),
  nonce: base64url,
});

export const welcomeMessage = z.strictObject({
  type: z.literal("welcome"),
  protocol: z.number().int(),
  hostId: id,
  heartbeatIntervalMs: z.number().int().positive(),
  usageIntervalMs: z.number().int().positive(),
});

export const jobMessage = z.strictObject({
  type: z.literal("job"),
  job: z.strictObject({
    id,
    /** A kind of the job catalogue (jobs.ts); an agent answers one it does not know with an error. */
    kind: z.string().min(1).max(64),
    /** Checked by the agent against the kind's delivered payload schema. */
    payload: json,
    /** Delivery attempt, from 1: the agent's journal makes a repeat harmless. */
    attempt: z.number().int().positive(),
    /** Unix milliseconds after which the control plane counts the job as failed. */
    deadline: z.number().int().positive(),
  }),
});
export type JobAssignment = z.infer<typeof jobMessage>["job"];

/**
 * Development only (the dispatch benchmark's baseline, POST /dev/hosts/:id/echo): the agent answers
 * with an echo.reply of the same id and does nothing else. An agent that does not know it ignores it.
 */
export const echoMessage = z.strictObject({ type: z.literal("echo"), id });

export const serverMessage = z.discriminatedUnion("type", [challengeMessage, welcomeMessage, jobMessage, echoMessage]);
export type ServerMessage = z.infer<typeof serverMessage>;

// ---------- agent → control plane ----------

export const helloMessage = z.strictObject({
  type: z.literal("hello"),
  /** Every protocol version the agent can speak. */
  protocols: z.array(z.number().int()).min(1).max(16),
  hostId: id,
  nonce: base64url,
  /** Ed25519 over helloSigningInput(hostId, nonce), base64url. */
  signature: base64url,
  agentVersion: z.string().max(64),
  diskEncryption: diskEncryptionSchema,
  /** Optional: agents before it do not send it (their hosts' homeservers wait for DNS until upgraded and configured). */
  publicAddresses: publicAddressesSchema.optional(),
  workloads: z.array(reportedWorkloadSchema).max(10_000),
  certificates: z.array(certificateSchema).max(10_000).optional(),
});

export const jobAckMessage = z.strictObject({ type: z.literal("job.ack"), id });

export const jobProgressMessage = z.strictObject({
  type: z.literal("job.progress"),
  id,
  /** 0 to 1. */
  progress: z.number().min(0).max(1),
  message: z.string().max(500).optional(),
});

export const jobResultMessage = z.strictObject({
  type: z.literal("job.result"),
  id,
  ok: z.boolean(),
  result: json.optional(),
  error: z.string().max(4000).optional(),
});

export const inventoryMessage = z.strictObject({
  type: z.literal("inventory"),
  workloads: z.array(reportedWorkloadSchema).max(10_000),
  certificates: z.array(certificateSchema).max(10_000).optional(),
});

export const usageMessage = z.strictObject({
  type: z.literal("usage"),
  samples: z.array(usageSampleSchema).min(1).max(120),
});

export const echoReplyMessage = z.strictObject({ type: z.literal("echo.reply"), id });

export const agentMessage = z.discriminatedUnion("type", [
  helloMessage,
  jobAckMessage,
  jobProgressMessage,
  jobResultMessage,
  inventoryMessage,
  usageMessage,
  echoReplyMessage,
]);
export type AgentMessage = z.infer<typeof agentMessage>;
export type HelloMessage = z.infer<typeof helloMessage>;

// ---------- enrollment (HTTP) ----------

export const enrollRequest = z.strictObject({
  joinToken: z.string().min(1).max(256),
  /** The host's Ed25519 public key, raw 32 bytes, base64url. */
  publicKey: base64url,
  name: z
    .string()
    .min(1)
    .max(64)
    .regex(/^[a-z0-9][a-z0-9-]*$/, "lower-case letters, digits and hyphens"),
  capacity: capacitySchema,
  agentVersion: z.string().max(64),
});
export type EnrollRequest = z.infer<typeof enrollRequest>;

export const enrollResponse = z.strictObject({
  hostId: id,
  region: z.string(),
  /** The WebSocket URL the agent dials. */
  connectUrl: z.string().url(),
});
export type EnrollResponse = z.infer<typeof enrollResponse>;

// ---------- backups (the backup and restore jobs: ./jobs.ts; agents' HTTP requests: ./agent-requests.ts) ----------

/** Every part of a backup upload but the last has exactly this size (R2 wants equal parts of at least 5 MiB). */
export const BACKUP_PART_SIZE = 8 * 1024 * 1024;
export const BACKUP_MIN_PART_SIZE = 5 * 1024 * 1024;
/** R2's limit on the parts of one multipart upload. */
export const BACKUP_MAX_PARTS = 10_000;

export const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "lower-case hex SHA-256");

/** What the Worker answers for each part it stored, and what `complete` lists back. */
export const backupPartReceipt = z.strictObject({
  partNumber: z.number().int().min(1).max(BACKUP_MAX_PARTS),
  size: z.number().int().positive(),
  sha256: sha256Hex,
});
export type BackupPartReceipt = z.infer<typeof backupPartReceipt>;

/** POST <uploadBase>/complete: every part in order, and the whole ciphertext's size and SHA-256. */
export const backupCompleteRequest = z.strictObject({
  parts: z.array(backupPartReceipt).min(1).max(BACKUP_MAX_PARTS),
  size: z.number().int().positive(),
  sha256: sha256Hex,
});
export type BackupCompleteRequest = z.infer<typeof backupCompleteRequest>;

/** POST <uploadBase>/abort: the upload is given up; the Worker discards its parts. */
export const backupAbortRequest = z.strictObject({ reason: z.string().min(1).max(1000) });
