// Runs the promise checks a homeserver.checks job asks for, in order, each on its own: a check
// that throws (or returns something that is not an outcome of itself) is that check's
// could_not_check, logged for the operator, while the others still run. What a customer reads
// never carries the error itself (it may name host paths or containers).
import { hostCheckOutcomeSchema, type HostCheckId, type HostCheckOutcome } from "../../protocol/checks.ts";
import { errorMessage, type Logger } from "../log.ts";

/** The checks this host has a module for, each returning its own outcome. */
export type HostChecks = Partial<Record<HostCheckId, () => Promise<HostCheckOutcome>>>;

export const CHECK_ERROR_SUMMARY = "The check met an error on the host and reached no verdict; it runs again with the next checks.";
export const CHECK_NOT_HERE_SUMMARY = "This check does not run on this host yet.";

export interface CheckRunContext {
  progress(progress: number, message?: string): void;
  signal: AbortSignal;
  log: Logger;
}

export async function runHostChecks(ids: readonly HostCheckId[], checks: HostChecks, ctx: CheckRunContext): Promise<HostCheckOutcome[]> {
  const outcomes: HostCheckOutcome[] = [];
  for (const [index, checkId] of ids.entries()) {
    ctx.signal.throwIfAborted();
    ctx.progress(index / ids.length, checkId);
    outcomes.push(await runOne(checkId, checks[checkId], ctx));
  }
  ctx.progress(1, "checks done");
  return outcomes;
}

async function runOne(checkId: HostCheckId, check: (() => Promise<HostCheckOutcome>) | undefined, ctx: CheckRunContext): Promise<HostCheckOutcome> {
  if (!check) return notChecked(checkId, CHECK_NOT_HERE_SUMMARY);
  try {
    const outcome = hostCheckOutcomeSchema.parse(await check());
    if (outcome.checkId !== checkId) throw new Error(`the ${checkId} check answered for ${outcome.checkId}`);
    return outcome;
  } catch (error) {
    ctx.signal.throwIfAborted();
    ctx.log.warn("a promise check could not be completed", { checkId, error: errorMessage(error) });
    return notChecked(checkId, CHECK_ERROR_SUMMARY);
  }
}

function notChecked(checkId: HostCheckId, summary: string): HostCheckOutcome {
  return { checkId, result: "could_not_check", evidence: { summary, facts: [] } };
}
