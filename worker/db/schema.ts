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
