import type { DeletionTerms } from "../account/deletion";
import type { CheckFailure } from "../checks/alerts";
import { countsText, formatBytes } from "../pages/charts";
import type { BackupCounts } from "../../protocol/jobs";
import type { Mail } from "./mailer";

/** A homeserver's storage quota past a threshold, as its host measured it. */
export interface StorageThresholdFacts {
  serverName: string;
  /** The threshold crossed (the highest, when one sample crossed several). */
  threshold: number;
  usedBytes: number;
  quotaBytes: number;
}

const percent = (share: number) => `${Math.floor(share * 100)} %`;
const storageLine = (facts: StorageThresholdFacts) =>
  `${facts.serverName} uses ${formatBytes(facts.usedBytes)} of its ${formatBytes(facts.quotaBytes)} of storage (${percent(facts.usedBytes / facts.quotaBytes)}).`;

// Plain-text messages. Links go both into the text and into `links`, in order.
function mail(to: string, subject: string, lines: string[], links: string[]): Mail {
  return { to, subject, text: `${lines.join("\n")}\n\n— Berth`, links };
}

export const templates = {
  verifyEmail: (to: string, link: string) =>
    mail(
      to,
      "Confirm your email address",
      [
        "Welcome to Berth.",
        "",
        "Confirm this email address by opening the link below (valid for 24 hours):",
        link,
        "",
        "If you did not sign up, ignore this message.",
      ],
      [link],
    ),

  accountAlreadyExists: (to: string, loginLink: string, resetLink: string) =>
    mail(
      to,
      "You already have a Berth account",
      [
        "Someone, probably you, tried to sign up with this address, but it already has a Berth account.",
        "",
        `Log in: ${loginLink}`,
        `Forgot your password? ${resetLink}`,
        "",
        "If this was not you, you can ignore this message: nothing has changed.",
      ],
      [loginLink, resetLink],
    ),

  passwordReset: (to: string, link: string) =>
    mail(
      to,
      "Reset your Berth password",
      [
        "Open the link below to choose a new password (valid for 1 hour, once):",
        link,
        "",
        "Resetting logs you out everywhere. If you did not ask for this, ignore this message.",
      ],
      [link],
    ),

  passwordResetWithoutAccount: (to: string, signupLink: string) =>
    mail(
      to,
      "Password reset requested",
      [
        "Someone asked to reset the password of a Berth account with this address, but there is none.",
        "If you have an account, it may be under another address.",
        "",
        `Sign up: ${signupLink}`,
      ],
      [signupLink],
    ),

  passwordChanged: (to: string, resetLink: string) =>
    mail(
      to,
      "Your Berth password was changed",
      [
        "The password of your Berth account was just changed and other sessions were logged out.",
        "",
        `If this was not you, reset your password now: ${resetLink}`,
      ],
      [resetLink],
    ),

  confirmEmailChange: (to: string, link: string) =>
    mail(
      to,
      "Confirm your new email address",
      [
        "Open the link below to make this the email address of your Berth account (valid for 1 hour, once):",
        link,
        "",
        "If you did not ask for this, ignore this message.",
      ],
      [link],
    ),

  emailChangeTargetTaken: (to: string, loginLink: string) =>
    mail(
      to,
      "Email change not possible",
      [
        "Someone asked to move a Berth account to this address, but this address already has its own account.",
        "Nothing has changed.",
        "",
        `Log in: ${loginLink}`,
      ],
      [loginLink],
    ),

  emailChangeRequested: (to: string, newEmail: string, resetLink: string) =>
    mail(
      to,
      "Email change requested",
      [
        `Someone asked to change your Berth account's email address to ${newEmail}.`,
        "It changes only once the link sent to the new address is opened.",
        "",
        `If this was not you, reset your password now: ${resetLink}`,
      ],
      [resetLink],
    ),

  emailChanged: (to: string, newEmail: string) =>
    mail(
      to,
      "Your Berth email address was changed",
      [`Your Berth account's email address is now ${newEmail}; all sessions were logged out.`, "If this was not you, contact Berth support at once."],
      [],
    ),

  paymentFailed: (to: string, billingLink: string) =>
    mail(
      to,
      "Your Berth payment failed",
      [
        "We could not charge your card for your Berth subscription.",
        "Your homeservers keep running for a grace period of 7 days; after that they are suspended.",
        "",
        `Update your card on the billing page: ${billingLink}`,
      ],
      [billingLink],
    ),

  storageThreshold: (to: string, facts: StorageThresholdFacts & { link: string }) =>
    mail(
      to,
      `${facts.serverName} has used ${percent(facts.threshold)} of its storage`,
      [
        storageLine(facts),
        "",
        "When it is full, uploads (images, files) are refused; messages keep working for a while, until the database has no room left either.",
        "To make room, delete media you no longer need, or move to a plan with more storage.",
        "",
        `Your homeserver's page: ${facts.link}`,
        "",
        "We tell you once at 80 % and once at 95 %; if usage falls well below and rises again, we tell you again.",
      ],
      [facts.link],
    ),

  storageThresholdOperator: (to: string, facts: StorageThresholdFacts & { serverId: string; hostId: string | null }) =>
    mail(
      to,
      `[Berth operators] ${facts.serverName} at ${percent(facts.threshold)} of its storage quota`,
      [
        storageLine(facts),
        "",
        `Server: ${facts.serverId}`,
        `Host: ${facts.hostId ?? "none"}`,
        "",
        "Its owner was told too. Standing alerts: GET /api/admin/storage-alerts",
      ],
      [],
    ),

  delegationBroken: (to: string, facts: { serverName: string; summary: string; link: string }) =>
    mail(
      to,
      `${facts.serverName}: its Matrix delegation is broken`,
      [
        `Our daily check of the well-knowns on https://${facts.serverName} failed:`,
        facts.summary,
        "",
        "Until they are right again, other Matrix servers cannot federate with your homeserver and Matrix apps cannot find it from your user ids.",
        `What to publish, and what is wrong: ${facts.link}`,
        "",
        "We tell you once; once the check passes again and then fails, we tell you again.",
      ],
      [facts.link],
    ),

  delegationLapsed: (to: string, facts: { serverName: string; days: number; link: string }) =>
    mail(
      to,
      `${facts.serverName}: not set up, its domain's well-knowns never passed`,
      [
        `Your homeserver ${facts.serverName} waited ${facts.days} days for the well-knowns on https://${facts.serverName}, and our check of them never passed.`,
        "So we did not set it up, and it is deleted: nothing of it was made, and the domain is free again.",
        "",
        `Once both well-knowns are published, create it again (or choose to publish them later): ${facts.link}`,
      ],
      [facts.link],
    ),

  exportReady: (to: string, facts: { serverName: string; link: string; expiresAt: Date; sizeBytes: number }) =>
    mail(
      to,
      `Your export of ${facts.serverName} is ready`,
      [
        `The export of ${facts.serverName} you asked for is ready to download (${formatBytes(facts.sizeBytes)}):`,
        facts.link,
        "",
        `It can be downloaded until ${facts.expiresAt.toISOString().slice(0, 16).replace("T", " ")} UTC; then we delete it.`,
        "It is encrypted with the passphrase you chose; we do not keep it and cannot recover it. The README inside says how to run it on your own Synapse.",
      ],
      [facts.link],
    ),

  exportFailed: (to: string, facts: { serverName: string; link: string }) =>
    mail(
      to,
      `The export of ${facts.serverName} failed`,
      [
        `The export of ${facts.serverName} you asked for could not be made, and nothing of it was kept.`,
        `Why, and to ask again (with a passphrase): ${facts.link}`,
      ],
      [facts.link],
    ),

  importDone: (to: string, facts: { serverName: string; link: string; counts: BackupCounts }) =>
    mail(
      to,
      `${facts.serverName} is imported`,
      [
        `Your homeserver ${facts.serverName} was made from the archive you uploaded, and runs: ${countsText(facts.counts)}.`,
        "Its users log in with the passwords they had; the archive itself is deleted.",
        facts.link,
      ],
      [facts.link],
    ),

  importFailed: (to: string, facts: { serverName: string; reason: string; link: string }) =>
    mail(
      to,
      `The import into ${facts.serverName} failed`,
      [
        `The archive you uploaded could not be made into ${facts.serverName}: ${facts.reason}.`,
        "Nothing of it was kept, and the archive is deleted; your homeserver still waits for an upload or to be set up.",
        `To upload again: ${facts.link}`,
      ],
      [facts.link],
    ),

  checkFailureDigest: (to: string, failures: CheckFailure[], consoleLink: string) =>
    mail(
      to,
      `[Berth operators] ${failures.length} promise check ${failures.length === 1 ? "failure" : "failures"} in the last 24 hours`,
      [
        "Promise checks that failed in the last 24 hours, oldest first:",
        "",
        ...failures.map(
          (failure) =>
            `- ${failure.checkedAt.toISOString()} ${failure.checkId} on ${failure.serverName ?? "the account"} (server ${failure.serverId ?? "none"}, account ${failure.userId}, host ${failure.hostId ?? "none"}): ${failure.summary}`,
        ),
        "",
        `What fails now: ${consoleLink}`,
      ],
      [consoleLink],
    ),

  accountDeleted: (to: string, terms: DeletionTerms) =>
    mail(
      to,
      "Your Berth account was deleted",
      [
        "Your Berth account was deleted and you can no longer log in.",
        "",
        terms.servers.length
          ? `Your homeservers (${terms.servers.map((server) => server.name).join(", ")}) are being deleted: each takes a final backup, then its host destroys it.`
          : "You had no homeservers.",
        "",
        "Deleted now:",
        ...terms.deletedNow.map((line) => `- ${line}`),
        "",
        "Kept:",
        ...terms.kept.map((line) => `- ${line}`),
        "",
        `Everything but the invoices and the audit log is destroyed by ${terms.destroyedBy}.`,
      ],
      [],
    ),
};
