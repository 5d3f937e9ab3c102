// The promise checks: the security page's promises that are checked for each customer, one by one.
// This file only defines them; the security page names each one (a test keeps the two in step).

import { CHECK_IDS, type CheckEvidence, type CheckId, type CheckResultKind } from "../../protocol/checks";

export { CHECK_IDS, CHECK_RESULTS, type CheckEvidence, type CheckId, type CheckResultKind } from "../../protocol/checks";

export interface PromiseCheck {
  /** Stable: it names the check in the API, in stored results and in the page's anchors. */
  id: CheckId;
  /** The promise, one plain sentence, as the customer reads it. */
  promise: string;
  /** What the check looks at to decide whether the promise holds. */
  covers: string;
  /** What it is run against: a homeserver, or the customer's account. */
  subject: "homeserver" | "account";
  /** How often it runs; every check also runs on demand. */
  every: "day" | "week";
  /** Run only for homeservers whose Matrix server name is the customer's own domain. */
  customServerNamesOnly?: true;
}

/** Keyed by id, so a check without its definition does not compile. */
const DEFINITIONS: Record<CheckId, Omit<PromiseCheck, "id">> = {
  "encryption-by-default": {
    promise: "Private rooms and direct messages on your homeserver are end-to-end encrypted by default.",
    covers:
      "The configuration your homeserver runs with encrypts private rooms by default, and a private room made by a throwaway user (created for the probe, then deactivated) has encryption switched on without asking for it.",
    subject: "homeserver",
    every: "day",
  },
  certificates: {
    promise: "Your homeserver answers only over HTTPS, with a valid certificate that is renewed automatically.",
    covers:
      "The certificate your homeserver serves: that it is valid for its name, who issued it and in how many days it expires (renewal is due well before), and that the client and federation endpoints answer over it.",
    subject: "homeserver",
    every: "day",
  },
  delegation: {
    promise: "Your own domain leads Matrix apps and other servers to your homeserver.",
    covers:
      "For a homeserver whose server name is your own domain: the two well-knowns published on it (/.well-known/matrix/server and /.well-known/matrix/client, with the header web apps need) point at the address we serve it at, fetched over HTTPS from the public internet.",
    subject: "homeserver",
    every: "day",
    customServerNamesOnly: true,
  },
  "disk-encryption": {
    promise: "Your homeserver's data is stored on an encrypted disk.",
    covers:
      "The device under the host's data root that holds your homeserver: that it is an encrypted (dm-crypt or LUKS) device, and its cipher; a development machine allowed to run without it is shown as such.",
    subject: "homeserver",
    every: "day",
  },
  isolation: {
    promise: "Your homeserver runs isolated from other customers' homeservers and from our hosts' own services.",
    covers:
      "What Docker reports for your homeserver's containers: their own networks, a non-root user of their own, no capabilities, no new privileges, a read-only root and resource limits; and a probe from your homeserver's network that must not reach another customer's network or the host's private services.",
    subject: "homeserver",
    every: "day",
  },
  backups: {
    promise: "Your homeserver is backed up, encrypted, every day, and backups are kept for 30 days.",
    covers: "The last successful backup is less than 26 hours old, and the oldest one kept is no more than 30 days old.",
    subject: "homeserver",
    every: "day",
  },
  "restore-verified": {
    promise: "Your latest backup is proven to restore, not hoped to.",
    covers:
      "Every week and after each upgrade, the latest backup is restored into a throwaway sandbox on the host (its own network, no route out, no federation), Synapse starts on it, and its users, rooms, events and media files are counted against what was recorded when the backup was made; then the sandbox is destroyed.",
    subject: "homeserver",
    every: "week",
  },
  software: {
    promise: "Your homeserver runs a Synapse release we ship, with its security fixes.",
    covers: "The Synapse version your homeserver runs, and whether it is the newest release we ship; an older one missing a security fix fails.",
    subject: "homeserver",
    every: "day",
  },
  "card-data": {
    promise: "We hold no card data about you: only the ids Stripe gives us.",
    covers:
      "What your account holds about payments: Stripe's customer and subscription ids and your invoices, and no card number, brand, expiry or last four digits.",
    subject: "account",
    every: "day",
  },
};

export const promiseCheck = (id: CheckId): PromiseCheck => ({ id, ...DEFINITIONS[id] });

/** In the order the security page and a server's checks list them. */
export const PROMISE_CHECKS: readonly PromiseCheck[] = CHECK_IDS.map(promiseCheck);

export interface CheckResult {
  checkId: CheckId;
  result: CheckResultKind;
  checkedAt: Date;
  evidence: CheckEvidence;
}
