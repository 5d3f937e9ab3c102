// The job catalogue: every kind of job the control plane sends to a host's
// agent, declared once. Each kind has the payload the Worker dispatches (and
// D1 stores), the payload the agent receives (the same but for a restore,
// whose identity is added only as it is sent), the result the agent reports,
// what it reports as progress, its deadline and what happens after it failed.
// The Worker refuses to dispatch a payload, and to record a result, that does
// not match; the agent refuses such a payload, and can register a handler only
// for a kind listed here. A new capability is one entry here and its handlers.
import { z } from "zod";
import { delegationOutcomeSchema, HOST_CHECK_IDS, hostCheckOutcomeSchema } from "./checks.ts";
import { homeserverSettingsSchema, MAX_RETENTION_DAYS, MIN_RETENTION_DAYS } from "./homeserver-settings.ts";
import { BACKUP_MAX_PARTS, BACKUP_MIN_PART_SIZE, BACKUP_PART_SIZE, backupPartReceipt, resourceIdSchema, sha256Hex } from "./messages.ts";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

/**
 * What happens after a job ran and failed. Delivery itself is always retried: the
 * host's Durable Object resends a job until the agent acknowledges it and
 * again after every reconnect until it reports a result (the agent's journal
 * makes a repeat harmless); this is about a job that ran and failed.
 */
export type AfterFailure =
  /** Nobody sends it again: whoever asked asks again. */
  | "not retried"
  /** Reconciliation sends it again on the host's next report while the host lacks a workload it should run. */
  | "reconciled"
  /** The hourly cron sends it again while the reason for it holds. */
  | "hourly"
  /** The hourly cron sends it again a day later. */
  | "daily"
  /** The hourly cron sends it again a week later. */
  | "weekly";

export interface JobDefinition<Payload extends z.ZodType, Delivered extends z.ZodType, Result extends z.ZodType> {
  /** What the Worker dispatches and D1 keeps (operators see it). */
  payload: Payload;
  /** What the agent receives: the payload, except where delivery adds to it. */
  delivered: Delivered;
  /** What the agent reports when the job succeeded. */
  result: Result;
  /** What the job reports as progress, in order. */
  progress: string;
  /** From dispatch to its deadline, past which the job has failed. */
  timeoutMs: number;
  retry: RetryPolicy;
}

export interface RetryPolicy {
  afterFailure: AfterFailure;
  /** Who sends it again and when, or why nobody does. */
  note?: string;
}

function job<Payload extends z.ZodType, Result extends z.ZodType, Delivered extends z.ZodType = Payload>(
  definition: Omit<JobDefinition<Payload, Delivered, Result>, "delivered"> & { delivered?: Delivered },
): JobDefinition<Payload, Delivered, Result> {
  return { ...definition, delivered: (definition.delivered ?? definition.payload) as Delivered };
}

// ---------- shared shapes ----------

/** The test kinds' deadline when the operator does not choose one, and the workload markers'. */
const DEFAULT_JOB_TIMEOUT_MS = HOUR;
/** Provisioning a new Synapse and PostgreSQL can take a while on a cold host (images, initdb). */
const LIFECYCLE_JOB_TIMEOUT_MS = 30 * MINUTE;
/** A backup or a restore streams the whole homeserver through the host. */
const BACKUP_JOB_TIMEOUT_MS = 6 * HOUR;
/** A call or two to Synapse's admin API: a customer waits on the page for it. */
const ADMIN_JOB_TIMEOUT_MS = 5 * MINUTE;
/** Purging a room deletes its every event in PostgreSQL: minutes for a big room, more on a busy host. */
const ROOM_PURGE_JOB_TIMEOUT_MS = 2 * HOUR;
/** Upkeep compresses state, deletes cached media and vacuums every table: long on a big database, and nobody waits on it. */
const UPKEEP_JOB_TIMEOUT_MS = 3 * HOUR;
const MAX_SLEEP_MS = 10 * MINUTE;
/** The host's promise checks: a probe user and room, a TLS handshake, docker inspect and a network probe. */
const CHECKS_JOB_TIMEOUT_MS = 10 * MINUTE;
/** Two fetches of at most 5 s each, with redirects: a minute is ample. */
const DELEGATION_CHECK_JOB_TIMEOUT_MS = MINUTE;

// DNS names only (the control plane makes them from DNS labels); no port, no path.
const serverName = z
  .string()
  .min(1)
  .max(253)
  .regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/i, "a DNS name");
/** A container image reference (repository, tag or digest). */
export const imageReference = z
  .string()
  .min(1)
  .max(512)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._\-/:@]*$/, "an image reference");
const planId = z.string().min(1).max(64);
/** A Matrix user id, as Synapse's first admin has one: the Worker shows it to the server's owner. */
const matrixUserId = z
  .string()
  .max(255)
  .regex(/^@[a-z0-9._=\-/+]+:[A-Za-z0-9.-]+(:\d+)?$/, "a Matrix user id");
const planResources = z.strictObject({
  memoryMiB: z
    .number()
    .int()
    .min(384)
    .max(1024 * 1024),
  cpus: z.number().min(0.1).max(512),
  storageGiB: z.number().min(0).max(1_000_000),
});
const serverPayload = z.object({ serverId: resourceIdSchema });

// A homeserver's people, run by the agent through Synapse's admin API with the
// host-only service account (never a credential the Worker holds).
/** A localpart a customer may give a new user: Synapse's rule for new users (lower case). */
const localpart = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[a-z0-9._=\-/+]+$/, "a localpart: lower-case letters, digits and . _ = - / +");
/** bcrypt, made by the Worker: the password itself never travels to a host. */
const bcryptHash = z.string().regex(/^\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}$/, "a bcrypt hash");
/** The plan's bound on a homeserver's users, sent with every job that can add one. */
const maxUsers = z.number().int().min(1).max(1_000_000);
/** Unix milliseconds. */
const timestamp = z.number().int().nonnegative();
const homeserverUser = z.object({
  userId: matrixUserId,
  displayName: z.string().max(256).nullable(),
  admin: z.boolean(),
  deactivated: z.boolean(),
  createdAt: timestamp.nullable(),
  lastSeenAt: timestamp.nullable(),
  devices: z.number().int().nonnegative(),
  mediaBytes: z.number().int().nonnegative(),
});
/** Synapse's own alphabet for registration tokens. */
const registrationTokenValue = z.string().regex(/^[A-Za-z0-9._~-]{1,64}$/, "a registration token");
const registrationToken = z.object({
  token: registrationTokenValue,
  /** Null: unlimited (never made by us: every token we create is bounded by the plan). */
  usesAllowed: z.number().int().nonnegative().nullable(),
  pending: z.number().int().nonnegative(),
  completed: z.number().int().nonnegative(),
  expiresAt: timestamp.nullable(),
});
/** Refused because the homeserver is at its plan's bound: users, plus the uses its registration tokens still allow. */
const atUserLimit = z.object({ outcome: z.literal("user_limit"), users: z.number().int().nonnegative(), reserved: z.number().int().nonnegative(), maxUsers });
const workloadKind = z.string().min(1).max(64);

// A homeserver's rooms: metadata only, never message content. Room ids are checked before they go
// into an admin API URL, and everything the agent reports is bounded here.
/** A Matrix room id: `!opaque:server` (or, from room version 12, `!` and a hash with no server), in URL-safe characters only. */
export const matrixRoomId = z
  .string()
  .max(255)
  .regex(/^![A-Za-z0-9._~-]{1,200}(:([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(:\d{1,5})?)?$/, "a Matrix room id");
/** A room's encryption algorithm's name, such as m.megolm.v1.aes-sha2. */
export const encryptionAlgorithm = z
  .string()
  .max(64)
  .regex(/^[A-Za-z0-9._-]+$/, "an algorithm name");
/** The orders a room list offers: largest first. Never by name, which private rooms do not show. */
export const ROOM_ORDERS = ["members", "local_members", "state_events"] as const;
const homeserverRoom = z
  .object({
    roomId: matrixRoomId,
    /** Anyone may join it (its join rule), or it is published in the room directory: only then are its name and alias shown. */
    public: z.boolean(),
    name: z.string().max(255).nullable(),
    canonicalAlias: z.string().max(255).nullable(),
    members: z.number().int().nonnegative(),
    localMembers: z.number().int().nonnegative(),
    /** The encryption algorithm, or null for a room that is not encrypted. */
    encryption: encryptionAlgorithm.nullable(),
    stateEvents: z.number().int().nonnegative(),
    /** When its creation event says it was made (its creating server's clock); null if this server lacks that event. */
    createdAt: timestamp.nullable(),
    blocked: z.boolean(),
  })
  .refine((room) => room.public || (room.name === null && room.canonicalAlias === null), "a private room's name and alias are not reported");
/** A file a host encrypted and uploaded in parts through the Worker (a backup, a legal export). */
const uploadedFile = {
  size: z.number().int().positive(),
  sha256: sha256Hex,
  parts: z.array(backupPartReceipt).max(BACKUP_MAX_PARTS),
};
/**
 * What a backup holds, counted by the host from the same snapshot it archives (the database's rows
 * in pg_dump's own snapshot, the media files as archived): the manifest a restore verification
 * compares the restored homeserver with.
 */
export const backupCounts = z.strictObject({
  users: z.number().int().nonnegative(),
  rooms: z.number().int().nonnegative(),
  events: z.number().int().nonnegative(),
  mediaFiles: z.number().int().nonnegative(),
});
export type BackupCounts = z.output<typeof backupCounts>;
/** An age X25519 recipient (public key, age1…). */
const ageRecipient = z.string().regex(/^age1[02-9ac-hj-np-z]{58}$/, "an age X25519 recipient");
/**
 * What a legal request covers. Empty lists mean no narrowing. `users` narrows the users listed, the
 * memberships and the events to those these users sent, and the rooms to those they were ever
 * members of; `rooms` narrows everything to these rooms; `from`/`until` (Unix ms, until exclusive)
 * narrow events and memberships by their origin_server_ts. `content: false` exports metadata only.
 */
export const legalExportScope = z
  .strictObject({
    users: z.array(matrixUserId).max(100),
    rooms: z.array(matrixRoomId).max(100),
    from: timestamp.optional(),
    until: timestamp.optional(),
    content: z.boolean(),
  })
  .refine((scope) => scope.from === undefined || scope.until === undefined || scope.from < scope.until, "from must come before until");
export type LegalExportScope = z.output<typeof legalExportScope>;
const roomNotFound = z.object({ outcome: z.literal("room_not_found"), roomId: matrixRoomId });

const containerRef = z.object({ name: z.string().max(256), id: z.string().max(128) });
/** A homeserver that runs: what provision, start, resume, upgrade and restore report. */
const running = z.object({
  serverId: resourceIdSchema,
  serverName: z.string().max(253),
  state: z.literal("running"),
  synapseVersion: z.string().min(1).max(200),
  image: z.string().max(512),
  ipAddress: z.string().max(64),
  containers: z.object({ synapse: containerRef, postgres: containerRef }),
});
const stateReached = <State extends string>(state: State) => z.object({ serverId: resourceIdSchema, state: z.literal(state) });

/** The homeserver's age identity (AGE-SECRET-KEY-1…): handed to a host only inside a job that decrypts its backup, never stored. */
const backupIdentity = z.string().regex(/^AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}$/, "an age X25519 identity");
/** `homeserver.restore_verify` as D1 keeps it: the Worker builds it from D1 (the server's own latest backup); the identity is added as it is sent. */
const storedRestoreVerifyPayload = z.strictObject({
  serverId: resourceIdSchema,
  backupId: resourceIdSchema,
  /** GET it with a signed request: the ciphertext, as uploaded. */
  downloadUrl: z.url(),
});
/** A customer's export passphrase as the host receives it (its strength is judged where the customer types it). */
const exportPassphrase = z.string().min(1).max(1024);
/** `homeserver.full_export` as D1 keeps it: the passphrase only wrapped under the Worker's key, erased when the job ends. */
const storedFullExportPayload = z.strictObject({
  serverId: resourceIdSchema,
  exportId: resourceIdSchema,
  /** null once the job has ended (erased). */
  wrappedPassphrase: z.string().min(1).max(4096).nullable(),
  partSize: z.number().int().min(BACKUP_MIN_PART_SIZE).max(BACKUP_PART_SIZE),
  /** Worker origin + /api/agent/exports/<exportId>: the agent appends /parts/<n>, /complete, /abort. */
  uploadBase: z.url(),
});
/** `homeserver.restore` as D1 keeps it: everything but the identity, which the host's Durable Object adds as it sends the job. */
const storedRestorePayload = z.strictObject({
  serverId: resourceIdSchema,
  backupId: resourceIdSchema,
  /** GET it with a signed request: the ciphertext, as uploaded. */
  downloadUrl: z.url(),
  /** Restoring onto another homeserver (a later migration); absent means the backup's own. */
  targetServerName: z.string().max(253).optional(),
});

/** A homeserver as the Worker asks a host to make it: what provision is sent, and an import with it. */
const provisionSpec = z.object({
  serverId: resourceIdSchema,
  name: z.string().max(64).optional(),
  serverName,
  publicBaseUrl: z.url({ protocol: /^https?$/ }),
  /** The plan whose limits these are: the server's applied plan once it runs. Absent in workload specs written before plan changes. */
  planId: planId.optional(),
  resources: planResources,
  images: z.object({ synapse: imageReference, postgres: imageReference }),
  /** What its owner set (homeserver.settings.apply); absent: the host's record keeps what it has, else the defaults. */
  settings: homeserverSettingsSchema.optional(),
  /** The plan's bound on users, for Synapse's own check. Absent in workload specs written before it. */
  maxUsers: maxUsers.optional(),
});
/**
 * `homeserver.import` as D1 keeps it: the homeserver to make, and the archive its owner uploaded to
 * make it from (a Berth full export, age-encrypted to a passphrase, or a plain Synapse archive).
 */
const storedImportPayload = z.strictObject({
  importId: resourceIdSchema,
  spec: provisionSpec,
  /** GET it with a signed request: the archive, as its owner uploaded it. */
  downloadUrl: z.url(),
  /** The passphrase its owner typed, wrapped under the Worker's key; null when they typed none, and once the job has ended (erased). */
  wrappedPassphrase: z.string().min(1).max(4096).nullable(),
});
/** Synapse's database schema version (schema_version.version). */
const schemaVersion = z.number().int().nonnegative().max(10_000);

// ---------- the catalogue ----------

/**
 * Bounds on what upkeep reports: far past any plan's storage, so an agent that
 * is not ours cannot have absurd figures stored and shown (its result fails the check).
 */
const MAX_UPKEEP_BYTES = 2 ** 46;
const MAX_UPKEEP_COUNT = 10 ** 10;

/** What upkeep measures of a homeserver, before and after. */
const upkeepSizes = z.object({
  databaseBytes: z.number().int().nonnegative().max(MAX_UPKEEP_BYTES),
  stateGroupsStateRows: z.number().int().nonnegative().max(MAX_UPKEEP_COUNT),
  /** Everything under the media store: local uploads, cached remote media, thumbnails. */
  mediaBytes: z.number().int().nonnegative().max(MAX_UPKEEP_BYTES),
});

export const JOBS = {
  // The test kinds: every agent runs them; operators send them (POST /api/admin/hosts/:id/jobs).
  noop: job({
    payload: z.strictObject({}).nullable(),
    result: z.object({ ok: z.literal(true) }),
    progress: "none",
    timeoutMs: DEFAULT_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),
  sleep: job({
    payload: z.strictObject({ ms: z.number().int().min(0).max(MAX_SLEEP_MS) }),
    result: z.object({ sleptMs: z.number().int().nonnegative() }),
    progress: "about ten reports: slept N of M ms",
    timeoutMs: DEFAULT_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),
  fail: job({
    payload: z.strictObject({ message: z.string().max(2000).optional() }).nullable(),
    // It always fails, with the payload's message.
    result: z.never(),
    progress: "none",
    timeoutMs: DEFAULT_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),

  // Reconciliation's markers: a file per workload under the data root.
  "workload.ensure": job({
    payload: z.strictObject({ id: resourceIdSchema, kind: workloadKind, spec: z.json() }),
    result: z.object({ id: resourceIdSchema, kind: workloadKind, state: z.literal("running"), changed: z.boolean() }),
    progress: "none",
    timeoutMs: DEFAULT_JOB_TIMEOUT_MS,
    retry: { afterFailure: "reconciled" },
  }),
  "workload.remove": job({
    payload: z.strictObject({ id: resourceIdSchema, kind: workloadKind.optional(), spec: z.json().optional() }),
    result: z.object({ id: resourceIdSchema, removed: z.boolean() }),
    progress: "none",
    timeoutMs: DEFAULT_JOB_TIMEOUT_MS,
    retry: { afterFailure: "reconciled" },
  }),

  // A homeserver's lifecycle. Each is idempotent on the host: run again, it converges.
  "homeserver.provision": job({
    payload: provisionSpec,
    result: running.extend({ adminUserId: matrixUserId }),
    progress:
      "uid and data directories, images, secrets and signing key, networks and firewall rules, PostgreSQL, Synapse, its client API, the admin account, the proxy route",
    timeoutMs: LIFECYCLE_JOB_TIMEOUT_MS,
    retry: {
      afterFailure: "reconciled",
      note: "the server is failed; while its workload should run and its host does not report it, reconciliation provisions it again (the server's status stays for an operator to look at)",
    },
  }),
  "homeserver.stop": job({
    payload: serverPayload,
    result: stateReached("stopped"),
    progress: "Synapse stopped, PostgreSQL stopped",
    timeoutMs: LIFECYCLE_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),
  "homeserver.start": job({
    payload: serverPayload,
    result: running,
    progress: "PostgreSQL, Synapse, the proxy route",
    timeoutMs: LIFECYCLE_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),
  "homeserver.suspend": job({
    payload: serverPayload,
    result: stateReached("suspended"),
    progress: 'the proxy answers "suspended", Synapse stopped, PostgreSQL stopped',
    timeoutMs: LIFECYCLE_JOB_TIMEOUT_MS,
    retry: { afterFailure: "hourly", note: "while billing does not let the account run, the hourly entitlement backstop suspends it again" },
  }),
  "homeserver.resume": job({
    payload: serverPayload,
    result: running,
    progress: "PostgreSQL, Synapse, the proxy route",
    timeoutMs: LIFECYCLE_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried", note: "the server is left failed, not suspended, which the hourly backstop would resume again and again" },
  }),
  "homeserver.upgrade": job({
    payload: z.object({ serverId: resourceIdSchema, image: imageReference }),
    result: running.extend({ previousImage: z.string().max(512) }),
    progress:
      "the image, PostgreSQL, the current Synapse stopped (kept), the new one started and healthy — or rolled back — then the previous container removed",
    timeoutMs: LIFECYCLE_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),
  "homeserver.delete": job({
    payload: serverPayload,
    result: stateReached("deleted"),
    progress: "the proxy route, the containers, the networks and firewall rules, the data",
    timeoutMs: LIFECYCLE_JOB_TIMEOUT_MS,
    retry: {
      afterFailure: "daily",
      note: "sent only after a final backup; when billing made the deletion due, the hourly cron starts it again (with a new final backup) a day later",
    },
  }),
  "homeserver.set_admin_password": job({
    payload: z.object({
      serverId: resourceIdSchema,
      adminUserId: matrixUserId,
      passwordHash: bcryptHash,
    }),
    result: z.object({ serverId: resourceIdSchema, adminUserId: matrixUserId, sessionsEnded: z.number().int().nonnegative() }),
    progress: "none (as homeserver.users.set_password, for the admin account the server was provisioned with)",
    timeoutMs: LIFECYCLE_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),
  "homeserver.resize": job({
    payload: z.strictObject({
      serverId: resourceIdSchema,
      /** The plan whose limits these are, reported back in the job's outcome. */
      planId,
      resources: planResources,
      /** The new plan's bound on users, for Synapse's own check. Absent in jobs sent before it. */
      maxUsers: maxUsers.optional(),
    }),
    result: z.object({ serverId: resourceIdSchema, resources: planResources }),
    progress: "PostgreSQL's limits, Synapse's limits",
    timeoutMs: LIFECYCLE_JOB_TIMEOUT_MS,
    retry: { afterFailure: "hourly", note: "until the host reported the new plan's limits applied, the hourly cron sends it again" },
  }),

  // A homeserver's users and registration tokens (customers run them from the dashboard).
  "homeserver.users.list": job({
    payload: z.strictObject({
      serverId: resourceIdSchema,
      /** Matches the Matrix id or the display name (Synapse's own search). */
      search: z.string().max(255).optional(),
      from: z.number().int().nonnegative(),
      limit: z.number().int().min(1).max(100),
    }),
    result: z.object({ users: z.array(homeserverUser).max(100), total: z.number().int().nonnegative(), nextFrom: z.number().int().nonnegative().nullable() }),
    progress: "none",
    timeoutMs: ADMIN_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),
  "homeserver.users.create": job({
    payload: z.strictObject({ serverId: resourceIdSchema, localpart, displayName: z.string().trim().min(1).max(256).optional(), maxUsers }),
    /** Made without a password: its owner sets one through a one-time link (homeserver.users.set_password). */
    result: z.discriminatedUnion("outcome", [
      z.object({ outcome: z.literal("created"), userId: matrixUserId }),
      z.object({ outcome: z.literal("taken"), userId: matrixUserId }),
      atUserLimit,
    ]),
    progress: "none",
    timeoutMs: ADMIN_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),
  "homeserver.users.set_password": job({
    payload: z.strictObject({ serverId: resourceIdSchema, userId: matrixUserId, passwordHash: bcryptHash }),
    /** Every session of the user ends: whoever knew the old password is logged out. */
    result: z.object({ serverId: resourceIdSchema, userId: matrixUserId, sessionsEnded: z.number().int().nonnegative() }),
    progress: "none",
    timeoutMs: ADMIN_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),
  "homeserver.users.update": job({
    payload: z.strictObject({
      serverId: resourceIdSchema,
      userId: matrixUserId,
      /** deactivate_and_erase also removes the user's display name, avatar and media, and hides their messages from users who join later. */
      action: z.enum(["make_admin", "unmake_admin", "deactivate", "deactivate_and_erase", "log_out"]),
    }),
    result: z.object({ serverId: resourceIdSchema, user: homeserverUser, devicesLoggedOut: z.number().int().nonnegative() }),
    progress: "none",
    timeoutMs: ADMIN_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),
  "homeserver.registration_tokens.list": job({
    payload: serverPayload,
    result: z.object({ tokens: z.array(registrationToken).max(1000) }),
    progress: "none",
    timeoutMs: ADMIN_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),
  "homeserver.registration_tokens.create": job({
    payload: z.strictObject({ serverId: resourceIdSchema, usesAllowed: z.number().int().min(1).max(1000), expiresAt: timestamp.optional(), maxUsers }),
    result: z.discriminatedUnion("outcome", [z.object({ outcome: z.literal("created"), token: registrationToken }), atUserLimit]),
    progress: "none",
    timeoutMs: ADMIN_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),
  "homeserver.registration_tokens.revoke": job({
    payload: z.strictObject({ serverId: resourceIdSchema, token: registrationTokenValue }),
    result: z.object({ serverId: resourceIdSchema, token: registrationTokenValue, revoked: z.boolean() }),
    progress: "none",
    timeoutMs: ADMIN_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),

  // A homeserver's rooms: metadata only (customers run them from the dashboard).
  "homeserver.rooms.list": job({
    payload: z.strictObject({
      serverId: resourceIdSchema,
      /** A room id (exactly), or part of a public room's name or alias. */
      search: z.string().min(1).max(255).optional(),
      order: z.enum(ROOM_ORDERS),
      from: z.number().int().nonnegative(),
      limit: z.number().int().min(1).max(100),
    }),
    result: z.object({ rooms: z.array(homeserverRoom).max(100), total: z.number().int().nonnegative(), nextFrom: z.number().int().nonnegative().nullable() }),
    progress: "none",
    timeoutMs: ADMIN_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),
  "homeserver.rooms.block": job({
    payload: z.strictObject({ serverId: resourceIdSchema, roomId: matrixRoomId, blocked: z.boolean() }),
    result: z.discriminatedUnion("outcome", [z.object({ outcome: z.literal("done"), roomId: matrixRoomId, blocked: z.boolean() }), roomNotFound]),
    progress: "none",
    timeoutMs: ADMIN_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried" },
  }),
  "homeserver.rooms.purge": job({
    payload: z.strictObject({ serverId: resourceIdSchema, roomId: matrixRoomId }),
    /** Its local members made to leave, then every event, its state and its aliases deleted (Synapse's room deletion, purging). */
    result: z.discriminatedUnion("outcome", [
      z.object({
        outcome: z.literal("purged"),
        roomId: matrixRoomId,
        membersRemoved: z.number().int().nonnegative(),
        membersNotRemoved: z.number().int().nonnegative(),
      }),
      roomNotFound,
    ]),
    progress: "the deletion scheduled; local members removed (N of M); the events purged",
    timeoutMs: ROOM_PURGE_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried", note: "Synapse carries on with a purge it started; asked again, the agent follows that one" },
  }),
  // What the owner changes about how Synapse runs: a new configuration and a restart, rolled back if Synapse does not come back.
  "homeserver.settings.apply": job({
    payload: z.strictObject({ serverId: resourceIdSchema, settings: homeserverSettingsSchema }),
    result: z.object({ serverId: resourceIdSchema, settings: homeserverSettingsSchema }),
    progress: "the new configuration written, Synapse restarted, healthy and answering — or the previous configuration put back and Synapse restarted",
    timeoutMs: LIFECYCLE_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried", note: "the homeserver keeps the settings it had; its owner may ask again" },
  }),

  // Database and media upkeep (agent/homeserver/upkeep.ts).
  "homeserver.upkeep": job({
    payload: z.strictObject({
      serverId: resourceIdSchema,
      /** Cached copies of other servers' media not fetched for this long are deleted (they are fetched again when asked for). */
      remoteMediaRetentionDays: z.number().int().min(MIN_RETENTION_DAYS).max(MAX_RETENTION_DAYS),
    }),
    result: z.object({
      serverId: resourceIdSchema,
      before: upkeepSizes,
      after: upkeepSizes,
      remoteMediaDeleted: z.number().int().nonnegative().max(MAX_UPKEEP_COUNT),
      /** The state compressor's own run time: within the job's deadline. */
      compressorMs: z.number().int().nonnegative().max(UPKEEP_JOB_TIMEOUT_MS),
    }),
    progress: "the sizes measured; the state compressed; cached remote media past its retention deleted; VACUUM and ANALYZE; the sizes measured again",
    timeoutMs: UPKEEP_JOB_TIMEOUT_MS,
    retry: { afterFailure: "daily", note: "the next day's scheduled upkeep runs as usual; each step is safe to repeat" },
  }),

  // The promise checks a host runs for one homeserver (agent/checks): each one's verdict and evidence.
  "homeserver.checks": job({
    payload: z.strictObject({
      serverId: resourceIdSchema,
      checks: z
        .array(z.enum(HOST_CHECK_IDS))
        .min(1)
        .max(HOST_CHECK_IDS.length)
        .refine((ids) => new Set(ids).size === ids.length, "each check once"),
    }),
    result: z.object({
      serverId: resourceIdSchema,
      /** One per check asked for, in the order asked. */
      outcomes: z.array(hostCheckOutcomeSchema).max(HOST_CHECK_IDS.length),
      /** What the running Synapse says it is, for the Worker's software check; absent when it did not answer. */
      synapse: z.object({ version: z.string().min(1).max(200), image: z.string().max(512) }).optional(),
    }),
    progress: "each check in turn, by id",
    timeoutMs: CHECKS_JOB_TIMEOUT_MS,
    retry: { afterFailure: "daily", note: "the checks that did not run are recorded as not checked; the next day's run is sent as usual" },
  }),

  // A customer's own domain as the server name: are the well-knowns published there right? Asked
  // before such a homeserver is provisioned (the host has no record of it yet, so the payload names
  // the domain and where it is served) and with its daily checks.
  "homeserver.delegation_check": job({
    payload: z.strictObject({ serverId: resourceIdSchema, serverName, publicBaseUrl: z.url({ protocol: /^https?$/ }) }),
    result: z.object({ serverId: resourceIdSchema, serverName: z.string().max(253), outcome: delegationOutcomeSchema }),
    progress: "none",
    timeoutMs: DELEGATION_CHECK_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried", note: "recorded as not checked; its owner checks again, and a running homeserver's daily checks ask again" },
  }),

  // Backups.
  "homeserver.backup": job({
    /** Encrypt to `recipient` (age X25519) and upload in parts of `partSize` to `uploadBase`. */
    payload: z.strictObject({
      serverId: resourceIdSchema,
      backupId: resourceIdSchema,
      /** The homeserver's age recipient (public key, age1…): hosts can encrypt, never decrypt. */
      recipient: ageRecipient,
      partSize: z.number().int().min(BACKUP_MIN_PART_SIZE).max(BACKUP_PART_SIZE),
      /** Worker origin + /api/agent/backups/<backupId>: the agent appends /parts/<n>, /complete, /abort. */
      uploadBase: z.url(),
    }),
    /** `counts` is absent from agents older than the backup manifest. */
    result: z.object({ serverId: resourceIdSchema, backupId: resourceIdSchema, counts: backupCounts.optional(), ...uploadedFile }),
    progress: "PostgreSQL, then the dump, archive, compression, encryption and upload as one stream; the parts uploaded",
    timeoutMs: BACKUP_JOB_TIMEOUT_MS,
    retry: { afterFailure: "daily", note: "the backup fails; the next day's scheduled one is taken as usual (a final backup that failed stops its deletion)" },
  }),
  // A legal request's export (operators only): what the homeserver's database holds, narrowed by the
  // request's scope, encrypted on the host to the recipient the operator supplied.
  "homeserver.legal_export": job({
    payload: z.strictObject({
      serverId: resourceIdSchema,
      exportId: resourceIdSchema,
      /** The legal request's reference as the operator entered it (written into the export's first line). */
      reference: z.string().trim().min(1).max(200),
      scope: legalExportScope,
      /** The operator's age recipient (age1…): neither the host nor we can read the export. */
      recipient: ageRecipient,
      partSize: z.number().int().min(BACKUP_MIN_PART_SIZE).max(BACKUP_PART_SIZE),
      /** Worker origin + /api/agent/legal-exports/<exportId>: the agent appends /parts/<n>, /complete, /abort. */
      uploadBase: z.url(),
    }),
    result: z.object({
      serverId: resourceIdSchema,
      exportId: resourceIdSchema,
      /** How many records of each kind the export holds (what the audit log may say of it: no content). */
      records: z.strictObject({
        users: z.number().int().nonnegative(),
        rooms: z.number().int().nonnegative(),
        memberships: z.number().int().nonnegative(),
        events: z.number().int().nonnegative(),
      }),
      ...uploadedFile,
    }),
    progress: "PostgreSQL, then the query, encryption and upload as one stream; the parts uploaded",
    timeoutMs: BACKUP_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried", note: "the operator asks again (a new export under the same reference)" },
  }),
  // "Download your homeserver": the whole server in a form stock Synapse and PostgreSQL restore,
  // encrypted on the host to the passphrase its owner typed.
  "homeserver.full_export": job({
    payload: storedFullExportPayload,
    /** The passphrase unwrapped as the host's Durable Object sends the job (it never rests in D1 in the clear). */
    delivered: storedFullExportPayload.omit({ wrappedPassphrase: true }).extend({ passphrase: exportPassphrase }),
    result: z.object({
      serverId: resourceIdSchema,
      exportId: resourceIdSchema,
      /** Local media files in the export. */
      mediaFiles: z.number().int().nonnegative(),
      ...uploadedFile,
    }),
    progress: "the key derived from the passphrase; PostgreSQL, then the dump, archive, compression, encryption and upload as one stream",
    timeoutMs: BACKUP_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried", note: "the owner asks again with a passphrase (the failed export's is erased with it)" },
  }),
  // "Import a homeserver": made as provision makes it, but from its owner's archive (database, media
  // and signing key), whose server name must be the spec's and whose schema our Synapse upgrades.
  "homeserver.import": job({
    payload: storedImportPayload,
    /** The passphrase unwrapped as the host's Durable Object sends the job; absent for an archive that is not encrypted. */
    delivered: storedImportPayload.omit({ wrappedPassphrase: true }).extend({ passphrase: exportPassphrase.optional() }),
    result: running.extend({
      adminUserId: matrixUserId,
      importId: resourceIdSchema,
      /** Counted in the imported homeserver once its Synapse runs. */
      counts: backupCounts,
      /** The archive's database schema version, and the version Synapse's migrations left. */
      schema: z.strictObject({ found: schemaVersion, after: schemaVersion }),
    }),
    progress:
      "download, decryption and unpacking; the archive's server name and schema checked; uid, directories, networks and PostgreSQL; the database restored; Synapse started (its migrations); counting; the admin account, the proxy route",
    timeoutMs: BACKUP_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried", note: "nothing of it is left on the host; its owner reads why and uploads again or starts over" },
  }),
  "homeserver.restore": job({
    payload: storedRestorePayload,
    /** Download, decrypt with `identity` and restore into a fresh database. */
    delivered: storedRestorePayload.extend({ identity: backupIdentity }),
    result: running.extend({ backupId: resourceIdSchema, restoredFrom: z.string().max(64) }),
    progress:
      "download, decryption and unpacking; the database restored beside the live one; Synapse stopped and the data swapped in; Synapse started; the replaced data dropped",
    timeoutMs: BACKUP_JOB_TIMEOUT_MS,
    retry: { afterFailure: "not retried", note: "the homeserver is left as it was; its owner may ask again" },
  }),
  // The restore-verified promise check: the backup restored into a throwaway sandbox beside (never into) the live homeserver.
  "homeserver.restore_verify": job({
    payload: storedRestoreVerifyPayload,
    delivered: storedRestoreVerifyPayload.extend({ identity: backupIdentity }),
    result: z.object({
      serverId: resourceIdSchema,
      backupId: resourceIdSchema,
      /** Counted in the restored sandbox the way the backup's manifest was counted. */
      counts: backupCounts,
      synapseStarted: z.literal(true),
      timings: z.strictObject({
        downloadAndUnpackMs: z.number().int().nonnegative(),
        databaseRestoreMs: z.number().int().nonnegative(),
        synapseStartMs: z.number().int().nonnegative(),
        totalMs: z.number().int().nonnegative(),
      }),
    }),
    progress:
      "download, decryption and unpacking; the sandbox's network and PostgreSQL; the database restored; Synapse started; counting; the sandbox destroyed",
    timeoutMs: BACKUP_JOB_TIMEOUT_MS,
    retry: {
      afterFailure: "weekly",
      note: "the check fails, saying the backup could not be restored; the next week's (or the next backup's) verification runs as usual",
    },
  }),
};

export type JobCatalogue = typeof JOBS;
export type JobKind = keyof JobCatalogue;
/** What the Worker dispatches and D1 keeps. */
export type JobPayload<K extends JobKind> = z.output<JobCatalogue[K]["payload"]>;
/** What the agent's handler receives. */
export type DeliveredJobPayload<K extends JobKind> = z.output<JobCatalogue[K]["delivered"]>;
export type JobResult<K extends JobKind> = z.output<JobCatalogue[K]["result"]>;

export const JOB_KINDS = Object.keys(JOBS) as JobKind[];
export const TEST_JOB_KINDS = ["noop", "sleep", "fail"] as const satisfies readonly JobKind[];
export type TestJobKind = (typeof TEST_JOB_KINDS)[number];
export type HomeserverJobKind = Extract<JobKind, `homeserver.${string}`>;
/** What a customer runs on their homeserver from the dashboard (its people, rooms and settings): no change to the server's status. */
export type AdministrationJobKind = Extract<
  JobKind,
  `homeserver.users.${string}` | `homeserver.registration_tokens.${string}` | `homeserver.rooms.${string}` | `homeserver.settings.${string}`
>;
export type RoomJobKind = Extract<JobKind, `homeserver.rooms.${string}`>;
export type WorkloadJobKind = Extract<JobKind, `workload.${string}`>;

export function isJobKind(kind: string): kind is JobKind {
  return Object.hasOwn(JOBS, kind);
}

/** A payload or result that does not match its kind's schema; the message names the fields. */
export class JobSchemaError extends Error {
  override name = "JobSchemaError";
}

function check<T>(schema: z.ZodType, what: string, value: unknown): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data as T;
  throw new JobSchemaError(`${what}: ${parsed.error.issues.map((issue) => `${issue.path.join(".") || "(the whole value)"}: ${issue.message}`).join("; ")}`);
}

/** The payload as the Worker may dispatch it, or a JobSchemaError "<kind>: invalid payload: <field>: <why>". */
export function checkJobPayload<K extends JobKind>(kind: K, payload: unknown): JobPayload<K> {
  return check(JOBS[kind].payload, `${kind}: invalid payload`, payload);
}

/** The payload as the agent may run it, or a JobSchemaError naming the fields. */
export function checkDeliveredJobPayload<K extends JobKind>(kind: K, payload: unknown): DeliveredJobPayload<K> {
  return check(JOBS[kind].delivered, `${kind}: invalid payload`, payload);
}

/** The result as its kind declares it, or a JobSchemaError "<kind>: invalid result: <field>: <why>". */
export function checkJobResult<K extends JobKind>(kind: K, result: unknown): JobResult<K> {
  return check(JOBS[kind].result, `${kind}: invalid result`, result);
}
