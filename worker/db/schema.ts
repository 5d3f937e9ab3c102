import { sql } from "drizzle-orm";
import { index, integer, primaryKey, real, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";
import type { HomeserverSettings } from "../../protocol/homeserver-settings";
import type { BackupCounts, JobKind, LegalExportScope } from "../../protocol/jobs";

// Times are stored as integer milliseconds since the epoch.
const timestamp = (name: string) => integer(name, { mode: "timestamp_ms" });

export const users = sqliteTable(
  "users",
  {
    id: text("id").primaryKey(),
    email: text("email").notNull(),
    emailVerifiedAt: timestamp("email_verified_at"),
    // PHC string: the algorithm and its parameters travel with the hash.
    passwordHash: text("password_hash").notNull(),
    /** "operator" may use /api/admin; granted with `npm run operator -- grant <email>`. */
    role: text("role", { enum: ["customer", "operator"] })
      .notNull()
      .default("customer"),
    createdAt: timestamp("created_at").notNull(),
    updatedAt: timestamp("updated_at").notNull(),
    /** Set when the customer deleted the account: the row stays, scrubbed, until its homeservers' backups are gone (worker/account/deletion.ts). */
    deletedAt: timestamp("deleted_at"),
  },
  (t) => [uniqueIndex("users_email_unique").on(t.email)],
);

export const sessions = sqliteTable(
  "sessions",
  {
    // SHA-256 of the session secret carried in the cookie; the secret itself is never stored.
    id: text("id").primaryKey(),
    userId: text("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    createdAt: timestamp("created_at").notNull(),
    lastSeenAt: timestamp("last_seen_at").notNull(),
    // Sliding: pushed forward on use, never past absoluteExpiresAt.
    expiresAt: timestamp("expires_at").notNull(),
    absoluteExpiresAt: timestamp("absolute_expires_at").notNull(),
  },
  (t) => [index("sessions_user_idx").on(t.userId), index("sessions_expires_idx").on(t.expiresAt)],
);

// The session signing key ring. Secrets are AES-GCM wrapped under the
// SESSION_KEYRING_SECRET Worker secret, so reading D1 alone forges nothing.
export const sessionKeys = sqliteTable("session_keys", {
  kid: text("kid").primaryKey(),
  wrappedSecret: text("wrapped_secret").notNull(),
  createdAt: timestamp("created_at").notNull(),
  // Set when a newer key takes over signing; the key still verifies until deleteAfter.
  retiredAt: timestamp("retired_at"),
  deleteAfter: timestamp("delete_after"),
});

export const oneTimeTokens = sqliteTable(
  "one_time_tokens",
  {
    // SHA-256 of the token that was emailed.
    id: text("id").primaryKey(),
    userId: text("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    purpose: text("purpose", { enum: ["verify_email", "password_reset", "email_change"] }).notNull(),
    // Email verification and email change: the address this token proves.
    email: text("email").notNull(),
    createdAt: timestamp("created_at").notNull(),
    expiresAt: timestamp("expires_at").notNull(),
    usedAt: timestamp("used_at"),
  },
  (t) => [index("one_time_tokens_user_purpose_idx").on(t.userId, t.purpose)],
);

export const rateLimitWindows = sqliteTable("rate_limit_windows", {
  // `${rule}:${subject}:${windowStart}`; the subject is a hash, never a raw email or IP.
  key: text("key").primaryKey(),
  count: integer("count").notNull(),
  windowEndsAt: timestamp("window_ends_at").notNull(),
});

// Development only: where mail goes when no provider is configured.
export const devOutbox = sqliteTable("dev_outbox", {
  id: integer("id").primaryKey({ autoIncrement: true }),
  to: text("to").notNull(),
  subject: text("subject").notNull(),
  text: text("text").notNull(),
  links: text("links", { mode: "json" }).$type<string[]>().notNull(),
  sentAt: timestamp("sent_at").notNull(),
});

export type User = typeof users.$inferSelect;
export type Session = typeof sessions.$inferSelect;
export type TokenPurpose = (typeof oneTimeTokens.$inferSelect)["purpose"];

// Billing mirrors Stripe: customer, subscription and invoice state, never card data.
export const billingCustomers = sqliteTable("billing_customers", {
  userId: text("user_id")
    .primaryKey()
    .references(() => users.id, { onDelete: "cascade" }),
  stripeCustomerId: text("stripe_customer_id").notNull().unique(),
  createdAt: timestamp("created_at").notNull(),
});

export const subscriptions = sqliteTable(
  "subscriptions",
  {
    id: text("id").primaryKey(),
    userId: text("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    stripeCustomerId: text("stripe_customer_id").notNull(),
    planId: text("plan_id").notNull(),
    status: text("status").notNull(),
    currentPeriodEnd: timestamp("current_period_end"),
    cancelAtPeriodEnd: integer("cancel_at_period_end", { mode: "boolean" }).notNull(),
    canceledAt: timestamp("canceled_at"),
    createdAt: timestamp("created_at").notNull(),
    updatedAt: timestamp("updated_at").notNull(),
  },
  (t) => [index("subscriptions_user_idx").on(t.userId)],
);

export const invoices = sqliteTable(
  "invoices",
  {
    id: text("id").primaryKey(),
    // Invoices outlive the account (bookkeeping), so no cascade from users.
    userId: text("user_id"),
    stripeCustomerId: text("stripe_customer_id").notNull(),
    subscriptionId: text("subscription_id"),
    number: text("number"),
    status: text("status").notNull(),
    amountDue: integer("amount_due").notNull(),
    amountPaid: integer("amount_paid").notNull(),
    currency: text("currency").notNull(),
    periodStart: timestamp("period_start").notNull(),
    periodEnd: timestamp("period_end").notNull(),
    hostedInvoiceUrl: text("hosted_invoice_url"),
    invoicePdf: text("invoice_pdf"),
    createdAt: timestamp("created_at").notNull(),
    updatedAt: timestamp("updated_at").notNull(),
  },
  (t) => [index("invoices_user_idx").on(t.userId)],
);

// Webhook idempotency: an event id is recorded once its effects are stored.
export const stripeEvents = sqliteTable("stripe_events", {
  id: text("id").primaryKey(),
  type: text("type").notNull(),
  receivedAt: timestamp("received_at").notNull(),
});

export const ENTITLEMENT_STATES = ["none", "active", "grace", "suspended", "deletion_due"] as const;
export type EntitlementState = (typeof ENTITLEMENT_STATES)[number];

// What each account may run, as last computed, with when it entered that state.
export const entitlements = sqliteTable("entitlements", {
  userId: text("user_id")
    .primaryKey()
    .references(() => users.id, { onDelete: "cascade" }),
  state: text("state", { enum: ENTITLEMENT_STATES }).notNull(),
  since: timestamp("since").notNull(),
  /** Grace: when it turns into a suspension. Suspended: when deletion is due. */
  until: timestamp("until"),
  updatedAt: timestamp("updated_at").notNull(),
});

// Each entitlement transition, for the homeserver lifecycle to turn into jobs (suspend, resume, delete).
export const entitlementEvents = sqliteTable(
  "entitlement_events",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    userId: text("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    fromState: text("from_state", { enum: ENTITLEMENT_STATES }).notNull(),
    toState: text("to_state", { enum: ENTITLEMENT_STATES }).notNull(),
    reason: text("reason").notNull(),
    createdAt: timestamp("created_at").notNull(),
    handledAt: timestamp("handled_at"),
  },
  (t) => [index("entitlement_events_unhandled_idx").on(t.handledAt)],
);

export type Subscription = typeof subscriptions.$inferSelect;
export type Invoice = typeof invoices.$inferSelect;
export type Entitlement = typeof entitlements.$inferSelect;

// ---------- the fleet: hosts, their agents, jobs, workloads, usage ----------

export const HOST_STATES = ["active", "draining", "out_of_service"] as const;
export type HostState = (typeof HOST_STATES)[number];

export const hosts = sqliteTable(
  "hosts",
  {
    id: text("id").primaryKey(),
    name: text("name").notNull().unique(),
    region: text("region").notNull(),
    memoryMiB: integer("memory_mib").notNull(),
    cpus: real("cpus").notNull(),
    diskGiB: real("disk_gib").notNull(),
    /** The host's Ed25519 public key (raw, base64url). Only the host holds the private key. */
    publicKey: text("public_key").notNull(),
    status: text("status", { enum: ["online", "offline", "revoked"] }).notNull(),
    /**
     * What the operator says the host is for, apart from whether it is connected (status):
     * active takes new homeservers, draining takes none while its own move away, out of
     * service takes none and is being worked on.
     */
    state: text("state", { enum: HOST_STATES }).notNull().default("active"),
    lastSeenAt: timestamp("last_seen_at"),
    agentVersion: text("agent_version").notNull(),
    protocolVersion: integer("protocol_version"),
    /** Null until the agent first reports; then whether its data root is on dm-crypt. */
    diskEncrypted: integer("disk_encrypted", { mode: "boolean" }),
    /** The agent was started with --allow-unencrypted-data-root (development only). */
    allowUnencrypted: integer("allow_unencrypted", { mode: "boolean" }).notNull().default(false),
    /**
     * An operator let customer data onto this host although its data root is not encrypted
     * (recorded in the audit log). In production the agent's own flag is not enough.
     */
    unencryptedPlacementOverride: integer("unencrypted_placement_override", { mode: "boolean" }).notNull().default(false),
    diskDevices: text("disk_devices", { mode: "json" }).$type<string[]>(),
    /** The public addresses its homeservers' DNS records point at, as its agent last reported them (agent.json); null until it does. */
    publicIpv4: text("public_ipv4"),
    publicIpv6: text("public_ipv6"),
    /** The memory the host last reported available (its own figure, clamped to its size); null until it reports usage. */
    memoryAvailableMiB: integer("memory_available_mib"),
    /** Since when the host is tight (worker/fleet/tight-hosts.ts): it takes no new homeservers until it recovers. */
    tightSince: timestamp("tight_since"),
    enrolledAt: timestamp("enrolled_at").notNull(),
    revokedAt: timestamp("revoked_at"),
  },
  (t) => [index("hosts_region_idx").on(t.region)],
);

export const joinTokens = sqliteTable("join_tokens", {
  /** SHA-256 of the token, which is shown once. */
  id: text("id").primaryKey(),
  region: text("region").notNull(),
  createdBy: text("created_by").notNull(),
  createdAt: timestamp("created_at").notNull(),
  expiresAt: timestamp("expires_at").notNull(),
  usedAt: timestamp("used_at"),
  hostId: text("host_id"),
});

export const JOB_STATUSES = ["queued", "sent", "acked", "succeeded", "failed"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

// Jobs are persisted here before they are sent; the host's Durable Object delivers and retries them.
// Their kinds, payloads and results are the job catalogue's (protocol/jobs.ts).
export const jobs = sqliteTable(
  "jobs",
  {
    id: text("id").primaryKey(),
    hostId: text("host_id")
      .notNull()
      .references(() => hosts.id, { onDelete: "cascade" }),
    kind: text("kind").$type<JobKind>().notNull(),
    payload: text("payload", { mode: "json" }).notNull(),
    /** The homeserver the job is about (its payload's serverId); the purge of a deleted account deletes them together. */
    serverId: text("server_id"),
    /** The backup the job is about (its payload's backupId). */
    backupId: text("backup_id"),
    status: text("status", { enum: JOB_STATUSES }).notNull(),
    attempts: integer("attempts").notNull().default(0),
    /** When an unacknowledged job is sent again. */
    nextAttemptAt: timestamp("next_attempt_at").notNull(),
    deadline: timestamp("deadline").notNull(),
    progress: real("progress"),
    progressMessage: text("progress_message"),
    result: text("result", { mode: "json" }),
    error: text("error"),
    createdAt: timestamp("created_at").notNull(),
    updatedAt: timestamp("updated_at").notNull(),
    finishedAt: timestamp("finished_at"),
  },
  (t) => [
    index("jobs_host_status_idx").on(t.hostId, t.status),
    index("jobs_server_idx").on(t.serverId, t.createdAt),
    index("jobs_backup_idx").on(t.backupId),
    // Retention walks finished jobs by age.
    index("jobs_finished_idx").on(t.finishedAt),
  ],
);

// What should run where: the agent reports what does, and reconciliation closes the gap.
export const workloads = sqliteTable(
  "workloads",
  {
    id: text("id").primaryKey(),
    hostId: text("host_id")
      .notNull()
      .references(() => hosts.id, { onDelete: "cascade" }),
    kind: text("kind").notNull(),
    spec: text("spec", { mode: "json" }).notNull(),
    desired: text("desired", { enum: ["present", "absent"] }).notNull(),
    createdAt: timestamp("created_at").notNull(),
    updatedAt: timestamp("updated_at").notNull(),
  },
  (t) => [index("workloads_host_idx").on(t.hostId)],
);

export const SERVER_STATUSES = [
  /**
   * A homeserver with its owner's domain as server name, placed but not made: nothing exists on its
   * host until the domain's well-knowns pass the delegation check (or its owner confirms they publish
   * them later). Its name, domain and the host's room are held meanwhile.
   */
  "awaiting_delegation",
  "provisioning",
  "running",
  "stopping",
  "stopped",
  "starting",
  "suspended",
  "upgrading",
  "restoring",
  /** Being moved to another host (server_migrations): its own lifecycle jobs wait until the move ends. */
  "moving",
  "deleting",
  "deleted",
  "failed",
] as const;
export type ServerStatus = (typeof SERVER_STATUSES)[number];

// A customer's homeserver. Its id is also its workload's id on the host.
export const servers = sqliteTable(
  "servers",
  {
    id: text("id").primaryKey(),
    userId: text("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    /** A DNS label, immutable: it is the Matrix server_name's first label. */
    name: text("name").notNull().unique(),
    /**
     * The Matrix server_name when the customer chose their own domain (delegated by well-knowns to
     * `<name>.<HOMESERVER_DOMAIN>`, where it is still served); null: it is `<name>.<HOMESERVER_DOMAIN>`.
     * Immutable, and unique: no two homeservers ever claim one domain.
     */
    serverName: text("server_name").unique(),
    region: text("region").notNull(),
    hostId: text("host_id").references(() => hosts.id),
    /**
     * During a move, the other host whose room it also takes (placement counts it there): the
     * target until the switch, then the source until its copy is destroyed. Null otherwise.
     */
    reservedOnHostId: text("reserved_on_host_id").references(() => hosts.id),
    /** The plan the server is on: its resources are reserved on its host. */
    planId: text("plan_id").notNull().default("starter"),
    /** The plan whose limits its containers run with; differs from planId while a plan change is applied. */
    appliedPlanId: text("applied_plan_id"),
    /** The lifecycle job whose outcome decides the status now: a superseded job's late outcome changes nothing. */
    lifecycleJobId: text("lifecycle_job_id"),
    status: text("status", { enum: SERVER_STATUSES }).notNull().default("provisioning"),
    /** Why it failed, or what the last lifecycle step reported. */
    statusReason: text("status_reason"),
    /** While a step that must leave the server as it was if it fails is under way (restore, deletion): the status to go back to. */
    previousStatus: text("previous_status", { enum: SERVER_STATUSES }),
    synapseVersion: text("synapse_version"),
    /** The first admin account, made at provisioning with a password nobody knows until the owner sets one. */
    adminUserId: text("admin_user_id"),
    /** The settings its Synapse runs with, as the host last reported them applied; null: the defaults (DEFAULT_HOMESERVER_SETTINGS). */
    settings: text("settings", { mode: "json" }).$type<HomeserverSettings>(),
    /**
     * The peak memory its containers used over the last day, as its own host reported it, clamped to
     * its plan's limit: what placement counts it for (worker/servers/placement.ts). Null until measured.
     */
    measuredMemoryMiB: integer("measured_memory_mib"),
    /** When its host first reported its memory: until it has been measured a while, placement counts at least its plan's floor. */
    memoryMeasuredSince: timestamp("memory_measured_since"),
    createdAt: timestamp("created_at").notNull(),
    updatedAt: timestamp("updated_at").notNull().default(sql`0`),
  },
  (t) => [
    index("servers_user_idx").on(t.userId),
    index("servers_host_idx").on(t.hostId),
    // Placement counts the servers moving onto or off a host too.
    index("servers_reserved_on_host_idx").on(t.reservedOnHostId),
    // One live homeserver per account (its subscription includes one): the database settles concurrent creates.
    uniqueIndex("servers_one_live_per_user").on(t.userId).where(sql`status <> 'deleted'`),
  ],
);

/** pending: its records are to be written (by the request's background work or the minutely pass). */
export const DNS_STATES = ["ready", "waiting", "pending"] as const;
export type DnsState = (typeof DNS_STATES)[number];

/**
 * What we believe a homeserver's DNS records are (worker/dns/records.ts): the record ids the
 * provider gave them and what they point at, so that fixing or removing one needs no lookup, and
 * whether they are right (ready) or still to be made right (waiting, with the customer-facing reason).
 */
export const serverDns = sqliteTable("server_dns", {
  serverId: text("server_id")
    .primaryKey()
    .references(() => servers.id, { onDelete: "cascade" }),
  /** The fully qualified name, <name>.<HOMESERVER_DOMAIN>. */
  name: text("name").notNull(),
  /** The host the records should point at. */
  hostId: text("host_id"),
  aRecordId: text("a_record_id"),
  ipv4: text("ipv4"),
  aaaaRecordId: text("aaaa_record_id"),
  ipv6: text("ipv6"),
  state: text("state", { enum: DNS_STATES }).notNull(),
  /** Why it waits, in words for the customer (never the provider's raw answer). */
  reason: text("reason"),
  updatedAt: timestamp("updated_at").notNull(),
});

// Every name a homeserver ever had. A name is a Matrix server_name that other servers keep trusting,
// so it is never given out again: rows here outlive their server (no foreign key) and are never deleted.
export const serverNames = sqliteTable("server_names", {
  name: text("name").primaryKey(),
  /** The server that took it (which may since have been purged). */
  serverId: text("server_id").notNull(),
  claimedAt: timestamp("claimed_at").notNull(),
});

// The TLS certificates each host's proxy serves, as its agent last reported them.
export const certificates = sqliteTable(
  "certificates",
  {
    hostId: text("host_id")
      .notNull()
      .references(() => hosts.id, { onDelete: "cascade" }),
    serverName: text("server_name").notNull(),
    notBefore: timestamp("not_before"),
    notAfter: timestamp("not_after").notNull(),
    issuer: text("issuer").notNull(),
    updatedAt: timestamp("updated_at").notNull(),
    /** When operators were last alerted that it nears expiry. */
    alertedAt: timestamp("alerted_at"),
  },
  (t) => [primaryKey({ columns: [t.hostId, t.serverName] })],
);

// One-time links with which a server's owner sets its first admin's password.
/** One-time links a homeserver's owner makes to set the password of one of its users: the first admin, or any other. */
export const adminPasswordLinks = sqliteTable("admin_password_links", {
  /** SHA-256 of the token in the link. */
  id: text("id").primaryKey(),
  serverId: text("server_id")
    .notNull()
    .references(() => servers.id, { onDelete: "cascade" }),
  /** The Matrix user whose password it sets (the migration gave older links their server's first admin). */
  userId: text("user_id"),
  createdAt: timestamp("created_at").notNull(),
  expiresAt: timestamp("expires_at").notNull(),
  usedAt: timestamp("used_at"),
});

export const USAGE_RESOLUTIONS = ["raw", "5m", "1h"] as const;
export type UsageResolution = (typeof USAGE_RESOLUTIONS)[number];

// Host metrics: raw samples for 48 h, 5-minute averages for 30 days, hourly for a year.
export const hostUsage = sqliteTable(
  "host_usage",
  {
    hostId: text("host_id")
      .notNull()
      .references(() => hosts.id, { onDelete: "cascade" }),
    resolution: text("resolution", { enum: USAGE_RESOLUTIONS }).notNull(),
    at: timestamp("at").notNull(),
    cpuLoadPercent: real("cpu_load_percent").notNull(),
    memoryUsedBytes: real("memory_used_bytes").notNull(),
    memoryAvailableBytes: real("memory_available_bytes").notNull(),
    diskUsedBytes: real("disk_used_bytes").notNull(),
    diskSizeBytes: real("disk_size_bytes").notNull(),
    networkRxBytes: real("network_rx_bytes").notNull(),
    networkTxBytes: real("network_tx_bytes").notNull(),
  },
  // The hourly roll-up and retention read one resolution's time range across every host.
  (t) => [primaryKey({ columns: [t.hostId, t.resolution, t.at] }), index("host_usage_resolution_at_idx").on(t.resolution, t.at)],
);

// Per-workload (per-homeserver) container metrics, summed over the workload's containers.
export const workloadUsage = sqliteTable(
  "workload_usage",
  {
    workloadId: text("workload_id").notNull(),
    hostId: text("host_id").notNull(),
    resolution: text("resolution", { enum: USAGE_RESOLUTIONS }).notNull(),
    at: timestamp("at").notNull(),
    cpuPercent: real("cpu_percent").notNull(),
    memoryBytes: real("memory_bytes").notNull(),
    memoryLimitBytes: real("memory_limit_bytes").notNull(),
    networkRxBytes: real("network_rx_bytes").notNull(),
    networkTxBytes: real("network_tx_bytes").notNull(),
    blockReadBytes: real("block_read_bytes").notNull(),
    blockWriteBytes: real("block_write_bytes").notNull(),
    pids: real("pids").notNull(),
    /** The workload's data directory on disk; null when the agent did not measure it. */
    storageBytes: real("storage_bytes"),
    /** Its storage quota's filesystem, used and usable bytes (statfs); null without a mounted quota. */
    quotaUsedBytes: real("quota_used_bytes"),
    quotaBytes: real("quota_bytes"),
  },
  // By time across workloads: the minutely storage alert check reads every workload's last minutes of raw samples.
  (t) => [primaryKey({ columns: [t.workloadId, t.resolution, t.at] }), index("workload_usage_resolution_at_idx").on(t.resolution, t.at)],
);

/** The shares of a homeserver's storage quota at which its owner and the operators are told. */
export const STORAGE_ALERT_THRESHOLDS = [0.8, 0.95] as const;

// A homeserver's storage quota past a threshold: one row while it stays past it, so each threshold
// is mailed once; deleted when usage falls well below it, so a later crossing mails again.
export const storageAlerts = sqliteTable(
  "storage_alerts",
  {
    serverId: text("server_id")
      .notNull()
      .references(() => servers.id, { onDelete: "cascade" }),
    /** One of STORAGE_ALERT_THRESHOLDS. */
    threshold: real("threshold").notNull(),
    crossedAt: timestamp("crossed_at").notNull(),
    /** When the mail went out; null while it has not (a failed send is retried by the next cron run). */
    notifiedAt: timestamp("notified_at"),
    /** The figures of the sample that crossed it, as the quota's filesystem counted them. */
    usedBytes: real("used_bytes").notNull(),
    quotaBytes: real("quota_bytes").notNull(),
  },
  (t) => [primaryKey({ columns: [t.serverId, t.threshold] })],
);

// Each homeserver's database and media upkeep (homeserver.upkeep): its sizes before and after, as its host measured them.
export const upkeepRuns = sqliteTable(
  "upkeep_runs",
  {
    /** The job that ran it. */
    jobId: text("job_id").primaryKey(),
    serverId: text("server_id")
      .notNull()
      .references(() => servers.id, { onDelete: "cascade" }),
    databaseBytesBefore: integer("database_bytes_before").notNull(),
    databaseBytesAfter: integer("database_bytes_after").notNull(),
    stateGroupsStateRowsBefore: integer("state_groups_state_rows_before").notNull(),
    stateGroupsStateRowsAfter: integer("state_groups_state_rows_after").notNull(),
    mediaBytesBefore: integer("media_bytes_before").notNull(),
    mediaBytesAfter: integer("media_bytes_after").notNull(),
    remoteMediaDeleted: integer("remote_media_deleted").notNull(),
    compressorMs: integer("compressor_ms").notNull(),
    finishedAt: timestamp("finished_at").notNull(),
  },
  (t) => [index("upkeep_runs_server_idx").on(t.serverId, t.finishedAt)],
);

// The promise checks' results (worker/checks): one row per check run, kept 30 days for the customer's history.
export const checkResults = sqliteTable(
  "check_results",
  {
    id: text("id").primaryKey(),
    /** The account whose promise it is (the card-data check is about the account alone). */
    userId: text("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    /** The homeserver checked; null for an account check. */
    serverId: text("server_id").references(() => servers.id, { onDelete: "cascade" }),
    /** A CheckId (protocol/checks.ts). */
    checkId: text("check_id").notNull(),
    /** holds, fails or could_not_check. */
    result: text("result").notNull(),
    /** The evidence's sentence, in words the customer reads. */
    summary: text("summary").notNull(),
    /** The evidence's facts: JSON [{label, value}]. */
    facts: text("facts").notNull(),
    checkedAt: timestamp("checked_at").notNull(),
    /** The host job that ran it, when a host did. */
    jobId: text("job_id"),
  },
  (t) => [
    index("check_results_server_idx").on(t.serverId, t.checkId, t.checkedAt),
    index("check_results_user_idx").on(t.userId, t.checkId, t.checkedAt),
    index("check_results_result_idx").on(t.result, t.checkedAt),
  ],
);

// Refusals of unauthenticated callers (unsigned agent requests, say), counted per hour for operators.
// They are not audited: nothing an unauthenticated caller sends may write to an audit log customers read.
export const refusalCounts = sqliteTable(
  "refusal_counts",
  {
    /** What was refused, e.g. "agent.request_refused". */
    kind: text("kind").notNull(),
    reason: text("reason").notNull(),
    hourStart: timestamp("hour_start").notNull(),
    count: integer("count").notNull(),
  },
  (t) => [primaryKey({ columns: [t.kind, t.reason, t.hourStart] })],
);

export const auditLog = sqliteTable(
  "audit_log",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    at: timestamp("at").notNull(),
    /** "user:<id>", "host:<id>" or "anonymous". */
    actor: text("actor").notNull(),
    action: text("action").notNull(),
    target: text("target"),
    detail: text("detail", { mode: "json" }),
  },
  (t) => [index("audit_log_at_idx").on(t.at)],
);

// ---------- files uploaded in parts (legal exports, backups) ----------

/** A part of a multipart upload as the Worker received it; a retried part replaces its row. */
const receivedPartColumns = () => ({
  partNumber: integer("part_number").notNull(),
  size: integer("size").notNull(),
  /** Computed by the Worker from the bytes it streamed to R2. */
  sha256: text("sha256").notNull(),
  /** R2's etag, which completing the upload needs. */
  etag: text("etag").notNull(),
  uploadedAt: timestamp("uploaded_at").notNull(),
});

/** One part of an uploaded file as the Worker received it: the manifest lists them. */
export interface BackupManifestPart {
  partNumber: number;
  size: number;
  sha256: string;
}

/** A file a host uploads in parts through the Worker: where it goes in R2, and what arrived once complete. */
const uploadedFileColumns = () => ({
  r2Key: text("r2_key").notNull(),
  /** The R2 multipart upload, created with the row. */
  uploadId: text("upload_id").notNull(),
  /** Every part but the last has exactly this size. */
  partSize: integer("part_size").notNull(),
  /** Of the whole ciphertext, once its upload completed. */
  sizeBytes: integer("size_bytes"),
  sha256: text("sha256"),
  /** The manifest: each part's size and SHA-256, once complete. */
  parts: text("parts_json", { mode: "json" }).$type<BackupManifestPart[]>(),
});

// ---------- legal exports ----------

export const LEGAL_EXPORT_NOTICES = ["given", "barred"] as const;
export const LEGAL_EXPORT_STATUSES = ["requested", "running", "ready", "failed"] as const;
export type LegalExportStatus = (typeof LEGAL_EXPORT_STATUSES)[number];

/** How many records of each kind the host's file holds (what the audit log may say of it: no content). */
export interface LegalExportHostRecords {
  users: number;
  rooms: number;
  memberships: number;
  events: number;
}
/** How many records of each kind the Worker's file holds. */
export interface LegalExportWorkerRecords {
  accounts: number;
  subscriptions: number;
  invoices: number;
  usageSamples: number;
  auditEntries: number;
}

/**
 * An export of one homeserver under a named legal request, made by an operator. The request itself
 * is audited; the customer is told of it (their audit log and data export) unless `notice` is
 * "barred", which is audited too with the operator's stated reason.
 */
export const legalExports = sqliteTable(
  "legal_exports",
  {
    id: text("id").primaryKey(),
    serverId: text("server_id")
      .notNull()
      .references(() => servers.id),
    /** The server's host when it was asked: the only one that may upload the export. */
    hostId: text("host_id")
      .notNull()
      .references(() => hosts.id),
    /** Who asked. No foreign key: the record of a legal request outlives the operator's account, as the audit log does. */
    operatorId: text("operator_id").notNull(),
    reference: text("reference").notNull(),
    scope: text("scope_json", { mode: "json" }).$type<LegalExportScope>().notNull(),
    /** The operator's age recipient: the export is encrypted to it on the host. */
    recipient: text("recipient").notNull(),
    notice: text("notice", { enum: LEGAL_EXPORT_NOTICES }).notNull(),
    noticeBarredReason: text("notice_barred_reason"),
    /** The `homeserver.legal_export` job that makes the host's file: the only job whose agent may upload it. */
    jobId: text("job_id").notNull(),
    /** requested (job sent) → running (parts arriving) → ready (both files stored) | failed. */
    status: text("status", { enum: LEGAL_EXPORT_STATUSES }).notNull(),
    /** The host's file: legal-exports/<serverId>/<id>.age, uploaded in parts through the Worker. */
    ...uploadedFileColumns(),
    records: text("records_json", { mode: "json" }).$type<LegalExportHostRecords>(),
    /** The Worker's file (account, billing, usage, audit): legal-exports/<serverId>/<id>-worker.age, made with the request. */
    workerR2Key: text("worker_r2_key").notNull(),
    workerSizeBytes: integer("worker_size_bytes"),
    workerSha256: text("worker_sha256"),
    workerRecords: text("worker_records_json", { mode: "json" }).$type<LegalExportWorkerRecords>(),
    error: text("error"),
    createdAt: timestamp("created_at").notNull(),
    finishedAt: timestamp("finished_at"),
    /** When retention deleted both files from R2 (the row and its audit entries stay). */
    filesDeletedAt: timestamp("files_deleted_at"),
  },
  (t) => [index("legal_exports_server_idx").on(t.serverId), index("legal_exports_finished_idx").on(t.finishedAt)],
);
export type LegalExport = typeof legalExports.$inferSelect;

// The parts of a legal export's multipart upload as they arrive; a retried part replaces its row.
export const legalExportParts = sqliteTable(
  "legal_export_parts",
  {
    exportId: text("export_id")
      .notNull()
      .references(() => legalExports.id, { onDelete: "cascade" }),
    ...receivedPartColumns(),
  },
  (t) => [primaryKey({ columns: [t.exportId, t.partNumber] })],
);

// ---------- backups ----------

export const BACKUP_TRIGGERS = ["scheduled", "manual", "final", "migration"] as const;
export type BackupTrigger = (typeof BACKUP_TRIGGERS)[number];
export const BACKUP_STATUSES = ["pending", "running", "succeeded", "failed"] as const;
export type BackupStatus = (typeof BACKUP_STATUSES)[number];

// A homeserver's encrypted backup: an age file in R2, uploaded by its host in parts through the Worker.
// Backups outlive their server's deletion (no cascade): retention removes them with their R2 objects.
export const backups = sqliteTable(
  "backups",
  {
    id: text("id").primaryKey(),
    serverId: text("server_id")
      .notNull()
      .references(() => servers.id),
    /** The host that takes it: the only one that may upload it. */
    hostId: text("host_id")
      .notNull()
      .references(() => hosts.id),
    trigger: text("trigger", { enum: BACKUP_TRIGGERS }).notNull(),
    /** pending (queued) → running (parts arriving) → succeeded | failed. */
    status: text("status", { enum: BACKUP_STATUSES }).notNull(),
    ...uploadedFileColumns(),
    /** Ciphertext bytes received so far. */
    progressBytes: integer("progress_bytes").notNull().default(0),
    error: text("error"),
    // The manifest the host counted from the backup's snapshot (protocol BackupCounts); null for backups taken before it.
    userCount: integer("user_count"),
    roomCount: integer("room_count"),
    eventCount: integer("event_count"),
    mediaFileCount: integer("media_file_count"),
    /** The `homeserver.backup` job that makes it. */
    jobId: text("job_id").notNull(),
    createdAt: timestamp("created_at").notNull(),
    startedAt: timestamp("started_at"),
    completedAt: timestamp("completed_at"),
  },
  (t) => [
    index("backups_server_created_idx").on(t.serverId, t.createdAt),
    index("backups_status_idx").on(t.status),
    // One backup under way per server, whoever asks: the database settles races.
    uniqueIndex("backups_one_unfinished_per_server").on(t.serverId).where(sql`status IN ('pending', 'running')`),
  ],
);

// The parts of a backup's multipart upload as they arrive; a retried part replaces its row.
export const backupParts = sqliteTable(
  "backup_parts",
  {
    backupId: text("backup_id")
      .notNull()
      .references(() => backups.id, { onDelete: "cascade" }),
    ...receivedPartColumns(),
  },
  (t) => [primaryKey({ columns: [t.backupId, t.partNumber] })],
);

// Per homeserver an age X25519 key pair: the recipient (public) goes to hosts in every backup job;
// the identity (private) is kept wrapped (AES-256-GCM under BACKUP_KEY_WRAPPING_SECRET, the server id as associated data).
export const backupKeys = sqliteTable("backup_keys", {
  serverId: text("server_id")
    .primaryKey()
    .references(() => servers.id),
  recipient: text("recipient").notNull(),
  wrappedIdentity: text("wrapped_identity").notNull(),
  createdAt: timestamp("created_at").notNull(),
});

// ---------- self-service full exports ("Download your homeserver") ----------

export const SERVER_EXPORT_STATUSES = ["queued", "running", "ready", "failed", "expired"] as const;
export type ServerExportStatus = (typeof SERVER_EXPORT_STATUSES)[number];

// A homeserver exported whole for its owner to run elsewhere: an age file encrypted on the host to
// the owner's passphrase, uploaded in parts through the Worker and offered for download for a week.
export const serverExports = sqliteTable(
  "server_exports",
  {
    /** Random (a UUID): it names the download. */
    id: text("id").primaryKey(),
    serverId: text("server_id")
      .notNull()
      .references(() => servers.id),
    /** The account that asked: the only one that may download it. */
    userId: text("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    /** The server's host when it was asked: the only one that may upload it. */
    hostId: text("host_id")
      .notNull()
      .references(() => hosts.id),
    /** The `homeserver.full_export` job that makes it: the only job whose agent may upload it. */
    jobId: text("job_id").notNull(),
    /** queued (job sent) → running (parts arriving) → ready (downloadable) → expired (deleted) | failed. */
    status: text("status", { enum: SERVER_EXPORT_STATUSES }).notNull(),
    /** server-exports/<serverId>/<id>.age */
    ...uploadedFileColumns(),
    /** Ciphertext bytes received so far. */
    progressBytes: integer("progress_bytes").notNull().default(0),
    /** Why it failed, in our words or the host's (shown to the customer as customerFailureText says). */
    error: text("error"),
    createdAt: timestamp("created_at").notNull(),
    readyAt: timestamp("ready_at"),
    /** A week after it was ready: then its file is deleted and it is expired. */
    expiresAt: timestamp("expires_at"),
    /** When it failed, or expired and its file was deleted. */
    finishedAt: timestamp("finished_at"),
  },
  (t) => [
    index("server_exports_server_created_idx").on(t.serverId, t.createdAt),
    index("server_exports_expires_idx").on(t.status, t.expiresAt),
    // One export under way per server, whoever asks: the database settles races.
    uniqueIndex("server_exports_one_unfinished_per_server").on(t.serverId).where(sql`status IN ('queued', 'running')`),
  ],
);

// The parts of an export's multipart upload as they arrive; a retried part replaces its row.
export const serverExportParts = sqliteTable(
  "server_export_parts",
  {
    exportId: text("export_id")
      .notNull()
      .references(() => serverExports.id, { onDelete: "cascade" }),
    ...receivedPartColumns(),
  },
  (t) => [primaryKey({ columns: [t.exportId, t.partNumber] })],
);

// ---------- imports ----------

export const SERVER_IMPORT_STATUSES = ["uploading", "uploaded", "importing", "imported", "failed", "cancelled"] as const;
export type ServerImportStatus = (typeof SERVER_IMPORT_STATUSES)[number];

// "Import a homeserver": the archive its owner uploads in parts, resumably, to be made into their
// waiting homeserver (its own domain) once that domain delegates to us.
export const serverImports = sqliteTable(
  "server_imports",
  {
    id: text("id").primaryKey(),
    serverId: text("server_id")
      .notNull()
      .references(() => servers.id),
    /** The account that uploads it: the only one that may. */
    userId: text("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    /** uploading → uploaded (waits for the delegation) → importing (the job runs) → imported | failed; cancelled by its owner. */
    status: text("status", { enum: SERVER_IMPORT_STATUSES }).notNull(),
    /** server-imports/<serverId>/<id>: deleted once the job ended, or the import was cancelled. */
    r2Key: text("r2_key").notNull(),
    uploadId: text("upload_id").notNull(),
    /** Every part but the last has exactly this size. */
    partSize: integer("part_size").notNull(),
    /** The archive's size as its owner declared it: the parts add up to it. */
    sizeBytes: integer("size_bytes").notNull(),
    /** The passphrase its owner typed for a Berth export, wrapped; moved into the job as it is sent (null then, and for none). */
    wrappedPassphrase: text("wrapped_passphrase"),
    /** The `homeserver.import` job, once sent. */
    jobId: text("job_id"),
    /** Why it failed, as the owner reads it. */
    error: text("error"),
    /** What the imported homeserver holds, as its host counted it. */
    counts: text("counts_json", { mode: "json" }).$type<BackupCounts>(),
    createdAt: timestamp("created_at").notNull(),
    uploadedAt: timestamp("uploaded_at"),
    finishedAt: timestamp("finished_at"),
  },
  (t) => [
    index("server_imports_server_created_idx").on(t.serverId, t.createdAt),
    // One import under way per server: the database settles races.
    uniqueIndex("server_imports_one_unfinished_per_server").on(t.serverId).where(sql`status IN ('uploading', 'uploaded', 'importing')`),
  ],
);

// The parts of an import's upload as they arrive; a part sent again replaces its row.
export const serverImportParts = sqliteTable(
  "server_import_parts",
  {
    importId: text("import_id")
      .notNull()
      .references(() => serverImports.id, { onDelete: "cascade" }),
    ...receivedPartColumns(),
  },
  (t) => [primaryKey({ columns: [t.importId, t.partNumber] })],
);

// ---------- moving homeservers between hosts ----------

/**
 * A move's steps, in order (worker/servers/migration.ts). Forward: the target provisioned, the
 * source stopped, its final backup, the restore on the target, then (the route switched) the
 * target's health check, the source's copy destroyed. Back, after a failure: the source started
 * again where that is needed, then the target's copy removed.
 */
export const MIGRATION_PHASES = [
  "provisioning_target",
  "stopping_source",
  "backing_up",
  "restoring_target",
  "checking_target",
  "destroying_source",
  "restarting_source",
  "removing_target",
  "succeeded",
  "failed",
] as const;
export type MigrationPhase = (typeof MIGRATION_PHASES)[number];

// A homeserver moved from one host to another of its region: asked by an operator, alone or by a drain.
export const serverMigrations = sqliteTable(
  "server_migrations",
  {
    id: text("id").primaryKey(),
    serverId: text("server_id")
      .notNull()
      .references(() => servers.id, { onDelete: "cascade" }),
    sourceHostId: text("source_host_id")
      .notNull()
      .references(() => hosts.id),
    targetHostId: text("target_host_id")
      .notNull()
      .references(() => hosts.id),
    /** The drain that started it; null for a move an operator asked for. */
    drainId: text("drain_id"),
    /** Who asked (an operator, or the operator who started the drain). */
    requestedBy: text("requested_by").notNull(),
    phase: text("phase", { enum: MIGRATION_PHASES }).notNull(),
    /** The job whose outcome moves the migration on; a superseded job's late outcome changes nothing. */
    currentJobId: text("current_job_id"),
    /** The final backup taken on the source with Synapse stopped, which the target restores. */
    backupId: text("backup_id"),
    /** Why it failed, for operators (the agent's words included); customers read our own words. */
    error: text("error"),
    startedAt: timestamp("started_at").notNull(),
    /** When the source was told to stop: the homeserver's downtime counts from here. */
    sourceStoppedAt: timestamp("source_stopped_at"),
    /** When the route was switched to the target; null until then (or again after a switch back). */
    switchedAt: timestamp("switched_at"),
    /** When the target passed its health check: the homeserver serves again. */
    servingAt: timestamp("serving_at"),
    finishedAt: timestamp("finished_at"),
    /** From the source stopping to the target healthy (or the source running again after a rollback). */
    downtimeMs: integer("downtime_ms"),
    updatedAt: timestamp("updated_at").notNull(),
  },
  (t) => [
    index("server_migrations_server_idx").on(t.serverId, t.startedAt),
    index("server_migrations_drain_idx").on(t.drainId),
    index("server_migrations_job_idx").on(t.currentJobId),
    // One move of a server under way at a time, whoever asks: the database settles races.
    uniqueIndex("server_migrations_one_unfinished_per_server").on(t.serverId).where(sql`finished_at IS NULL`),
  ],
);

// An operator emptying a host: every running homeserver on it moved, a few at a time.
export const hostDrains = sqliteTable(
  "host_drains",
  {
    id: text("id").primaryKey(),
    hostId: text("host_id")
      .notNull()
      .references(() => hosts.id),
    requestedBy: text("requested_by").notNull(),
    /** How many of its moves may be under way at once. */
    concurrency: integer("concurrency").notNull(),
    startedAt: timestamp("started_at").notNull(),
    /** Set when an operator cancels it: no more moves start, those under way finish (or roll back). */
    cancelledAt: timestamp("cancelled_at"),
    cancelledBy: text("cancelled_by"),
    /** Set once nothing is under way and nothing more can be started (what is left is reported with its reason). */
    finishedAt: timestamp("finished_at"),
  },
  (t) => [uniqueIndex("host_drains_one_unfinished_per_host").on(t.hostId).where(sql`finished_at IS NULL`)],
);

export type Host = typeof hosts.$inferSelect;
export type Server = typeof servers.$inferSelect;
export type ServerDns = typeof serverDns.$inferSelect;
export type Job = typeof jobs.$inferSelect;
export type Workload = typeof workloads.$inferSelect;
export type Backup = typeof backups.$inferSelect;
export type ServerExport = typeof serverExports.$inferSelect;
export type ServerImport = typeof serverImports.$inferSelect;
export type UpkeepRun = typeof upkeepRuns.$inferSelect;
export type CheckResultRow = typeof checkResults.$inferSelect;
export type StorageAlert = typeof storageAlerts.$inferSelect;
export type ServerMigration = typeof serverMigrations.$inferSelect;
export type HostDrain = typeof hostDrains.$inferSelect;
