import { index, integer, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

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
    createdAt: timestamp("created_at").notNull(),
    updatedAt: timestamp("updated_at").notNull(),
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
