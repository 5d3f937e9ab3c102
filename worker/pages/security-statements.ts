import { REGIONS } from "../fleet/enrollment";
import type { CheckId } from "../checks/registry";

// What the security page says, statement by statement, and how each is kept. The page and the
// "how we keep it" pages render this; a test holds it to the checks and to the docs it cites.

export const HOW_TOPICS = [
  "encryption",
  "regions",
  "certificates",
  "your-domain",
  "disk-encryption",
  "isolation",
  "backups",
  "software",
  "payments",
  "accounts",
  "what-we-see",
  "our-word",
  "legal-requests",
] as const;

export type HowTopicId = (typeof HOW_TOPICS)[number];

/** A part of a document in the repository, by its heading: where the decision behind a topic is recorded. */
export interface DocSection {
  doc: "README.md" | "docs/decisions.md" | "docs/data-export.md" | "agent/README.md";
  heading: string;
}

export interface HowTopic {
  title: string;
  paragraphs: string[];
  sources: DocSection[];
  /** The test files that fail if the topic's statements stop being true. */
  tests: string[];
}

/**
 * `server`: a property of each customer's homeserver as it runs, so it names the check that looks at
 * it every day. `account`: the customer's account with us. `service`: how we run the service.
 */
export type Statement = { id: string; text: string; how: HowTopicId } & (
  | { about: "server"; check: CheckId }
  | { about: "account" | "service"; check?: CheckId }
);

export interface Section {
  id: string;
  title: string;
  statements: Statement[];
}

export const SECURITY_SECTIONS: Section[] = [
  {
    id: "encryption",
    title: "Encryption",
    statements: [
      {
        id: "check-encryption-by-default",
        about: "server",
        check: "encryption-by-default",
        how: "encryption",
        text: "Private rooms and direct messages are end-to-end encrypted by default. The keys live on your members' devices: what we store of those conversations, on the host and in backups, is ciphertext only.",
      },
      {
        id: "public-rooms",
        about: "service",
        how: "encryption",
        text: "Large public rooms are usually not encrypted (anyone may join them, so encryption would protect little). Their messages are stored on your homeserver as they were sent: we have technical access to them, and we do not read them.",
      },
    ],
  },
  {
    id: "infrastructure",
    title: "Infrastructure",
    statements: [
      {
        id: "regions",
        about: "service",
        how: "regions",
        text: `Our hosts are in the United States. You choose the region of your homeserver (${REGIONS.join(", ")}) and it stays in that region.`,
      },
      {
        id: "check-certificates",
        about: "server",
        check: "certificates",
        how: "certificates",
        text: "Every connection to your homeserver is HTTPS, with a certificate that is renewed automatically long before it expires.",
      },
      {
        id: "check-delegation",
        about: "server",
        check: "delegation",
        how: "your-domain",
        text: "If your homeserver's name is your own domain, we check every day that the two files you publish on it lead Matrix apps and other servers to your homeserver, and tell you when they stop doing so. The certificate stays ours: your domain needs none from us.",
      },
      {
        id: "check-disk-encryption",
        about: "server",
        check: "disk-encryption",
        how: "disk-encryption",
        text: "Your homeserver's data sits on a disk encrypted with dm-crypt; we do not place customer data on a host whose disk is not encrypted.",
      },
      {
        id: "check-isolation",
        about: "server",
        check: "isolation",
        how: "isolation",
        text: "Your homeserver runs in an environment of its own: its own networks and user, no privileges, a read-only system and fixed limits. It cannot reach other customers' homeservers or our hosts' private services, and they cannot reach it.",
      },
      {
        id: "check-backups",
        about: "server",
        check: "backups",
        how: "backups",
        text: "Your homeserver is backed up every day, encrypted on its host before the backup leaves it, and each backup is kept for 30 days.",
      },
      {
        id: "check-restore-verified",
        about: "server",
        check: "restore-verified",
        how: "backups",
        text: "A backup counts only if it restores: every week, and after each upgrade, the latest backup is restored into a throwaway sandbox and compared with what it should hold.",
      },
      {
        id: "check-software",
        about: "server",
        check: "software",
        how: "software",
        text: "We upgrade your homeserver's Synapse for you, and an upgrade that does not come up healthy is rolled back by itself.",
      },
    ],
  },
  {
    id: "payments",
    title: "Payments",
    statements: [
      {
        id: "stripe",
        about: "service",
        how: "payments",
        text: "Stripe processes your card. You enter it on Stripe's own pages (Checkout and the Customer Portal), never on ours.",
      },
      {
        id: "check-card-data",
        about: "account",
        check: "card-data",
        how: "payments",
        text: "We keep your subscription's and invoices' state only: no card number, brand, expiry or last four digits ever reaches our servers.",
      },
    ],
  },
  {
    id: "accounts",
    title: "Your account",
    statements: [
      {
        id: "passwords",
        about: "account",
        how: "accounts",
        text: "Your password is stored only as a hash made with a memory-hard function at OWASP's recommended strength, and re-hashed when we raise it.",
      },
      {
        id: "email-verification",
        about: "account",
        how: "accounts",
        text: "You confirm your email address before you can subscribe.",
      },
      {
        id: "sessions",
        about: "account",
        how: "accounts",
        text: "Your log-in session is signed with secret keys that we rotate every week. Logging out everywhere, and changing your password or email address, ends your other sessions at once.",
      },
      {
        id: "one-time-links",
        about: "account",
        how: "accounts",
        text: "Links to reset your password or change your email address work once and expire within an hour; a newer link cancels the older ones.",
      },
    ],
  },
  {
    id: "what-we-see",
    title: "What we can see, and what we cannot",
    statements: [
      {
        id: "can-see",
        about: "account",
        how: "what-we-see",
        text: "We can see your account (email address, sessions), your billing records, your homeserver's resource usage, and Matrix metadata: your homeserver's name, status and version and, when you look at them, its users and its rooms' ids, sizes and whether they are encrypted. You can download exactly this about yourself at any time.",
      },
      {
        id: "cannot-see",
        about: "service",
        how: "encryption",
        text: "We cannot see the contents of end-to-end encrypted rooms and messages: not on the host, not in a backup, not in anything we could hand over.",
      },
    ],
  },
  {
    id: "our-word",
    title: "What we will not do with your data",
    statements: [
      {
        id: "no-reading",
        about: "service",
        how: "our-word",
        text: "We do not read your messages or look at your media. The tools we built to run your homeserver show metadata only.",
      },
      {
        id: "no-selling",
        about: "service",
        how: "our-word",
        text: "We do not sell, rent or share your data, and we do not use it for advertising or profiling. Our pages load no third-party scripts or trackers.",
      },
      {
        id: "deletion",
        about: "account",
        how: "our-word",
        text: "When you delete your account, we delete your data: at once, or, for the final backup of each homeserver, 30 days later. Only invoices are kept, for bookkeeping, detached from your account.",
      },
    ],
  },
  {
    id: "legal-requests",
    title: "Legal requests",
    statements: [
      {
        id: "only-what-we-have",
        about: "service",
        how: "legal-requests",
        text: "We hand over only what we have, and only for a valid legal request: an export of one homeserver, limited to the users, rooms and time the request names. End-to-end encrypted messages stay ciphertext in it.",
      },
      {
        id: "recorded",
        about: "service",
        how: "legal-requests",
        text: "Every such request is recorded in an audit log, and you are told of it unless the law forbids us to tell you.",
      },
    ],
  },
];

const DECISIONS = "docs/decisions.md";

export const HOW_WE_KEEP_IT: Record<HowTopicId, HowTopic> = {
  encryption: {
    title: "End-to-end encryption by default",
    paragraphs: [
      "Every homeserver's configuration is generated by our host agent, never edited by hand, and it tells Synapse to encrypt every room made by invitation (private rooms and direct messages) from its first message: encryption_enabled_by_default_for_room_type is invite.",
      "Encryption happens on your members' devices, with keys that never leave them. So the database, the media store, the logs and the backups on our side hold only the ciphertext the clients sent. A test runs a real Matrix client with its end-to-end encryption, sends messages, and then searches the host (a dump of the database, the media store, the data directory, the container logs and the stored backup) for their plaintext; finding it anywhere fails the test.",
      "Public rooms are the exception clients make themselves: anyone may join them, so they are usually created without encryption, and their messages are stored as sent. Nothing we built reads them: our tools for owners and operators show a room's metadata (id, members, encryption, size), and a private room's name never leaves its host.",
    ],
    sources: [
      { doc: DECISIONS, heading: "Homeservers" },
      { doc: DECISIONS, heading: "A homeserver's rooms: metadata only" },
    ],
    tests: ["test/e2e/homeserver.test.ts", "test/agent/homeserver/config.test.ts"],
  },
  regions: {
    title: "US regions",
    paragraphs: [
      `Every host joins one region, and the regions are a fixed list: ${REGIONS.join(", ")}. A homeserver is placed on a host of the region its owner chose, and never moved out of it: an operator moving a homeserver (to drain a host, say) can only choose another host of the same region.`,
    ],
    sources: [
      { doc: DECISIONS, heading: "The fleet" },
      { doc: DECISIONS, heading: "Moving a homeserver between hosts" },
    ],
    tests: ["test/worker/servers/placement.test.ts", "test/worker/servers/migration.test.ts"],
  },
  certificates: {
    title: "Certificates, renewed automatically",
    paragraphs: [
      "Each host runs Caddy in front of its homeservers, configured by our agent through Caddy's admin API: it terminates HTTPS for every homeserver, gets certificates from Let's Encrypt (ZeroSSL if it fails) through ACME, and renews them on its own.",
      "The agent reports every certificate's validity to us. When less than a third of a certificate's lifetime remains (at most 14 days), renewal is failing, and our operators are alerted.",
    ],
    sources: [{ doc: DECISIONS, heading: "Homeservers" }],
    tests: ["test/e2e/homeserver.test.ts"],
  },
  "your-domain": {
    title: "Your own domain",
    paragraphs: [
      "A homeserver may take your own domain as its Matrix server name, so that user ids read @alice:your-domain; it is still served at its address under ours, with our certificate. Two small JSON files on your domain (its Matrix well-knowns) join the two, and we show them exactly as they must be.",
      "The host that serves your homeserver fetches both files over HTTPS from the public internet, and only from public addresses: before your homeserver is set up (unless you tell us you will publish them later), every day after, and whenever you ask. When they are wrong or missing we show what is wrong, and we email you once when a working delegation breaks.",
    ],
    sources: [{ doc: DECISIONS, heading: "Custom server names: where the delegation check runs" }],
    tests: ["test/agent/checks/delegation.test.ts", "test/worker/checks/delegation.test.ts", "test/worker/servers/custom-server-names.test.ts"],
  },
  "disk-encryption": {
    title: "Full-disk encryption",
    paragraphs: [
      "The agent on each host finds the block device under its data root and checks that it is a dm-crypt device (LUKS or plain dm-crypt). It reports the answer every time it connects, and operators see it for every host.",
      "Without encryption, the agent refuses to place customer data, and in production we place homeservers only on hosts whose data root is encrypted. The one exception is a development machine started with an explicit flag, which the host's record shows; in production, an operator would have to allow such a host explicitly, with a reason that the audit log records.",
    ],
    sources: [
      { doc: DECISIONS, heading: "The fleet" },
      { doc: "agent/README.md", heading: "The encrypted data root" },
    ],
    tests: ["test/agent/disk-encryption.test.ts", "test/worker/servers/placement.test.ts"],
  },
  isolation: {
    title: "Isolation",
    paragraphs: [
      "Each homeserver is a Synapse and a PostgreSQL container of its own, run as a user id of its own that is never reused, on two networks of its own (its database's has no way out). Both containers drop every capability, cannot gain privileges, have a read-only root filesystem, and run within process, memory and CPU limits from the plan. Its data is a filesystem of its own, of the plan's size.",
      "Firewall rules for each homeserver drop traffic to private, link-local and carrier-grade NAT addresses, to other customers' networks and to the host itself (except the HTTPS port, so homeservers can federate). Synapse refuses the same addresses for URL previews. Tests start two customers' homeservers on a real Docker Engine and try to reach one from the other.",
    ],
    sources: [
      { doc: DECISIONS, heading: "Homeservers" },
      { doc: DECISIONS, heading: "Hard storage quotas (on the host)" },
    ],
    tests: ["test/agent/homeserver/isolation.test.ts"],
  },
  backups: {
    title: "Daily encrypted backups, and restores",
    paragraphs: [
      "Once a day, at an hour of its own, each homeserver's database and media are archived, compressed and encrypted on its host with age, to a key made for that homeserver alone; the ciphertext is uploaded to our storage in parts whose sizes and hashes we check. Nothing of the backup is written to the host's disk, and nothing but ciphertext leaves it.",
      "The key that opens a backup is kept by the control plane, encrypted under a secret of ours, and sent to the host only inside a restore job. Backups older than 30 days are deleted (except a homeserver's newest good one), and a homeserver without a good backup for two days alerts our operators.",
      "A restore never writes over the running homeserver until it has worked: it is unpacked and loaded beside it, swapped in, and swapped back if Synapse does not come up. The restore check goes further, without touching your homeserver: every week it restores the latest backup into a throwaway sandbox on the host, starts Synapse on it, and compares what it holds with the counts recorded when the backup was made.",
    ],
    sources: [
      { doc: DECISIONS, heading: "Backups (control plane)" },
      { doc: DECISIONS, heading: "Backups (on the host)" },
    ],
    tests: ["test/worker/backups/backups.test.ts", "test/worker/backups/maintenance.test.ts", "test/agent/homeserver/backup.test.ts"],
  },
  software: {
    title: "Upgrades",
    paragraphs: [
      "The Synapse image we run is pinned to a release in our configuration: the control plane refuses to start with an image that is not pinned. Upgrading a homeserver starts the new release on the same data; if it is not healthy in time, the previous one is started again.",
    ],
    sources: [
      { doc: DECISIONS, heading: "Homeservers" },
      { doc: DECISIONS, heading: "Production vs development configuration" },
    ],
    tests: ["test/agent/homeserver/lifecycle.test.ts", "test/worker/config.test.ts"],
  },
  payments: {
    title: "Payments through Stripe",
    paragraphs: [
      "You subscribe on Stripe Checkout and manage your card on Stripe's Customer Portal: the card is typed into Stripe's pages, never ours.",
      "Stripe tells us what changed through signed events, and we then ask Stripe for the subscription or invoice as it is. We keep Stripe's customer and subscription ids, the plan, the subscription's status and period, and invoices (number, amounts, status, links to Stripe's copy). Stripe's events also carry details of the card; a test delivers such events and then searches every table and every log line for them.",
    ],
    sources: [{ doc: DECISIONS, heading: "Billing: the event says what changed, the API says what is true" }],
    tests: ["test/worker/billing/card-data.test.ts", "test/worker/billing/webhooks.test.ts"],
  },
  accounts: {
    title: "Accounts: passwords, email, sessions and links",
    paragraphs: [
      "Passwords are hashed with scrypt (N=2^15, r=8, p=3: one of OWASP's recommended settings, 32 MiB of memory per hash), stored as PHC strings, compared in constant time, and re-hashed at your next log-in when we raise the parameters.",
      "Subscribing needs a confirmed email address: the server refuses checkout to an account that has not confirmed one.",
      "A session is a random secret in a cookie signed with a key ring: a new signing key every 7 days, old keys only verifying until the sessions they signed expire. We store only a hash of each session's secret, so deleting it ends the session at once: on log-out, log-out everywhere, and a password or email change.",
      "Links for confirming an address, resetting a password or changing an email address carry 256 random bits, of which we store only a hash; each works once, a new one cancels the older ones, and reset and email-change links expire after an hour (confirmation links after a day). An email change is confirmed from the new address, and the old one is told.",
    ],
    sources: [
      { doc: DECISIONS, heading: "Passwords: scrypt N=2^15, r=8, p=3, native in workerd" },
      { doc: DECISIONS, heading: "Sessions: a D1 row, a signed cookie, a wrapped key ring" },
      { doc: DECISIONS, heading: "One-time tokens" },
    ],
    tests: [
      "test/worker/auth/password.test.ts",
      "test/worker/auth/keyring.test.ts",
      "test/worker/billing/checkout.test.ts",
      "test/worker/routes/password-reset.test.ts",
      "test/worker/routes/email-change.test.ts",
    ],
  },
  "what-we-see": {
    title: "What we can see",
    paragraphs: [
      "What we hold about you falls into four parts: your account, your billing records, your homeservers' resource usage, and Matrix metadata. Your account page shows them, and the data export (a JSON file you can download there) holds every one of them, field by field.",
      "Nothing secret is in the export (no password hash, key or token), and nothing of the content of your homeserver's database or media: that stays on your host, and in backups as ciphertext.",
    ],
    sources: [
      { doc: "docs/data-export.md", heading: "Data export: what `GET /api/me/export` holds" },
      { doc: "docs/data-export.md", heading: "Tables that are not in it, and why" },
    ],
    tests: ["test/worker/account/export.test.ts", "test/worker/account/visibility.test.ts"],
  },
  "our-word": {
    title: "What we will not do",
    paragraphs: [
      "The jobs that run your homeserver read no message: the rooms page and its API show metadata only, and Synapse runs with its usage-statistics reporting off. The one job that can read messages is a legal-request export, which only an operator can ask for and the audit log records.",
      "Our pages load only our own scripts, styles and images (their content security policy allows nothing else), so no third party sees you use them.",
      "Deleting your account cancels your subscription, closes the account at once (email address and password gone, sessions and links deleted) and deletes each homeserver after a final backup, which is itself deleted 30 days later. Invoices are kept for bookkeeping, no longer linked to any account.",
    ],
    sources: [
      { doc: DECISIONS, heading: "A homeserver's rooms: metadata only" },
      { doc: DECISIONS, heading: "Account deletion" },
      { doc: "docs/data-export.md", heading: "What account deletion keeps (`DELETE /api/me`)" },
    ],
    tests: ["test/worker/account/deletion.test.ts", "test/worker/http/security-headers.test.ts"],
  },
  "legal-requests": {
    title: "Legal requests",
    paragraphs: [
      "Only an operator can export a homeserver's data for a legal request, one homeserver at a time, narrowed to the users, rooms and time range the request names, with or without messages. The export is encrypted on the host to the requester's key, so neither the host's disk nor our control plane sees it in the clear, and its files are deleted 30 days after it is made.",
      "Nothing is decrypted for it: an encrypted room's messages are exported as the ciphertext your members' devices made. The request, with its reference and scope, is written to the audit log; when we may tell you, your own audit log and data export show it, its hand-over and its deletion; when the law bars that, the operator must record why.",
    ],
    sources: [{ doc: DECISIONS, heading: "Legal-request exports" }],
    tests: ["test/worker/legal/exports.test.ts", "test/agent/homeserver/legal-export.test.ts"],
  },
};
