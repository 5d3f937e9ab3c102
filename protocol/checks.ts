// The promise checks' shared words: which checks there are, what a result can be and what evidence
// looks like. The Worker defines each check for customers (worker/checks/registry.ts); the hosts run
// the ones only a host can see (agent/checks) and report in these shapes.
import { z } from "zod";

export const CHECK_IDS = [
  "encryption-by-default",
  "certificates",
  "delegation",
  "disk-encryption",
  "isolation",
  "backups",
  "restore-verified",
  "software",
  "card-data",
] as const;

export type CheckId = (typeof CHECK_IDS)[number];

/**
 * The checks a host runs in `homeserver.checks`: they look at what only the host can see. `software`
 * is decided by the Worker (which knows the releases we ship) from the version the host reports.
 * `delegation` has a job of its own (`homeserver.delegation_check`): it is asked before a
 * custom-named homeserver is provisioned, when the host has no record of it yet.
 */
export const HOST_CHECK_IDS = ["encryption-by-default", "certificates", "disk-encryption", "isolation"] as const satisfies readonly CheckId[];

export type HostCheckId = (typeof HOST_CHECK_IDS)[number];

/** `could_not_check`: the check did not reach a verdict (the host was offline, say); never counted as holding. */
export const CHECK_RESULTS = ["holds", "fails", "could_not_check"] as const;

export type CheckResultKind = (typeof CHECK_RESULTS)[number];

/** What a check found, in words a customer understands: one sentence (naming the cause when it fails), then the facts behind it. */
export const checkEvidenceSchema = z.strictObject({
  summary: z.string().trim().min(1).max(500),
  facts: z.array(z.strictObject({ label: z.string().trim().min(1).max(80), value: z.string().max(500) })).max(20),
});

export type CheckEvidence = z.output<typeof checkEvidenceSchema>;

/** One host check's outcome, as the agent reports it. */
export const hostCheckOutcomeSchema = z.strictObject({
  checkId: z.enum(HOST_CHECK_IDS),
  result: z.enum(CHECK_RESULTS),
  evidence: checkEvidenceSchema,
});

export type HostCheckOutcome = z.output<typeof hostCheckOutcomeSchema>;

/** The delegation check's outcome, as the agent reports it in `homeserver.delegation_check`. */
export const delegationOutcomeSchema = hostCheckOutcomeSchema.omit({ checkId: true });

export type DelegationOutcome = z.output<typeof delegationOutcomeSchema>;
