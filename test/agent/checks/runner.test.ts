// The runner of a homeserver.checks job's checks: in the order asked, each on its own. A check
// that throws, or answers with something that is not its own outcome, is could_not_check with a
// summary that carries nothing of the error (which may name host paths or containers), and the
// checks after it still run; a check this host has no module for says so.
import { describe, expect, it } from "vitest";
import type { HostCheckOutcome } from "../../../protocol/checks.ts";
import { CHECK_ERROR_SUMMARY, CHECK_NOT_HERE_SUMMARY, runHostChecks } from "../../../agent/checks/index.ts";
import { captureLog } from "../helpers.ts";

const holds = (checkId: HostCheckOutcome["checkId"]): HostCheckOutcome => ({
  checkId,
  result: "holds",
  evidence: { summary: "It holds.", facts: [{ label: "Device", value: "dm-0" }] },
});

function context() {
  const captured = captureLog();
  const progress: Array<[number, string | undefined]> = [];
  return {
    captured,
    progress,
    ctx: { progress: (p: number, m?: string) => void progress.push([p, m]), signal: new AbortController().signal, log: captured.log },
  };
}

describe("running the host checks", () => {
  it("a check that throws is could_not_check, its error only in the log, and the next check still runs", async () => {
    const { captured, progress, ctx } = context();
    const outcomes = await runHostChecks(
      ["encryption-by-default", "disk-encryption"],
      {
        "encryption-by-default": async () => {
          throw new Error("container 3f2a9c at /var/lib/berth/data/x refused");
        },
        "disk-encryption": async () => holds("disk-encryption"),
      },
      ctx,
    );
    expect(outcomes).toEqual([
      { checkId: "encryption-by-default", result: "could_not_check", evidence: { summary: CHECK_ERROR_SUMMARY, facts: [] } },
      holds("disk-encryption"),
    ]);
    expect(JSON.stringify(outcomes)).not.toMatch(/3f2a9c|\/var\/lib/);
    expect(JSON.stringify(captured.lines)).toContain("3f2a9c");
    expect(progress).toEqual([
      [0, "encryption-by-default"],
      [0.5, "disk-encryption"],
      [1, "checks done"],
    ]);
  });

  it("a check answering for another check, or outside the outcome's shape, is could_not_check", async () => {
    const { ctx } = context();
    const outcomes = await runHostChecks(
      ["disk-encryption", "encryption-by-default"],
      {
        "disk-encryption": async () => holds("encryption-by-default"),
        "encryption-by-default": async () => ({ ...holds("encryption-by-default"), evidence: { summary: "", facts: [] } }),
      },
      ctx,
    );
    expect(outcomes.map((o) => [o.checkId, o.result])).toEqual([
      ["disk-encryption", "could_not_check"],
      ["encryption-by-default", "could_not_check"],
    ]);
  });

  it("a check without a module on this host says it does not run here yet", async () => {
    const { ctx } = context();
    expect(await runHostChecks(["isolation"], {}, ctx)).toEqual([
      { checkId: "isolation", result: "could_not_check", evidence: { summary: CHECK_NOT_HERE_SUMMARY, facts: [] } },
    ]);
  });

  it("an aborted job stops instead of reporting checks as not done", async () => {
    const { ctx } = context();
    const controller = new AbortController();
    const run = runHostChecks(
      ["encryption-by-default", "disk-encryption"],
      {
        "encryption-by-default": async () => {
          controller.abort(new Error("agent shutting down"));
          throw new Error("interrupted");
        },
        "disk-encryption": async () => holds("disk-encryption"),
      },
      { ...ctx, signal: controller.signal },
    );
    await expect(run).rejects.toThrow("agent shutting down");
  });
});
