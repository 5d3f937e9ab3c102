// The reconciliation test kinds: workload.ensure writes a marker file for the
// workload (customer data, so only on an encrypted data root unless the agent
// runs with --allow-unencrypted-data-root); workload.remove deletes it.
import { mkdirSync, unlinkSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import type { WorkloadJobKind } from "../../protocol/jobs.ts";
import type { DiskEncryption } from "../../protocol/messages.ts";
import { writeFileAtomic } from "../atomic-file.ts";
import { markerPath, readMarker, workloadsDir } from "../inventory.ts";
import type { JobHandlers } from "./types.ts";

export interface WorkloadHandlerOptions {
  /** The data root's encryption, checked before every placement (a LUKS volume may be opened late). */
  diskEncryption: () => DiskEncryption;
  /** Called after the set of workloads changed (the agent then sends an `inventory` message). */
  onInventoryChanged: () => void;
  now?: () => number;
}

export class CustomerDataRefused extends Error {
  override name = "CustomerDataRefused";
}

/** Throws unless customer data may be placed under the data root. */
export function assertCustomerDataAllowed(report: DiskEncryption): void {
  if (report.encrypted || report.allowUnencrypted) return;
  throw new CustomerDataRefused(
    `refusing to place customer data: the data root ${report.dataRoot} is not on an encrypted (dm-crypt/LUKS) device ` +
      `(${report.devices.join(" → ") || "no device found"}); put it on LUKS, or for development only start the agent with --allow-unencrypted-data-root`,
  );
}

export function workloadHandlers(options: WorkloadHandlerOptions): JobHandlers<WorkloadJobKind> {
  const now = options.now ?? Date.now;
  return {
    "workload.ensure": async ({ id, kind, spec }, ctx) => {
      assertCustomerDataAllowed(options.diskEncryption());
      const existing = readMarker(ctx.dataRoot, id);
      if (existing && existing.kind === kind && isDeepStrictEqual(existing.spec, spec)) {
        return { id, kind, state: "running", changed: false };
      }
      mkdirSync(workloadsDir(ctx.dataRoot), { recursive: true, mode: 0o700 });
      writeFileAtomic(markerPath(ctx.dataRoot, id), `${JSON.stringify({ id, kind, spec, updatedAt: now() })}\n`, 0o600);
      options.onInventoryChanged();
      return { id, kind, state: "running", changed: true };
    },
    "workload.remove": async ({ id }, ctx) => {
      let removed = true;
      try {
        unlinkSync(markerPath(ctx.dataRoot, id));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
        removed = false;
      }
      if (removed) options.onInventoryChanged();
      return { id, removed };
    },
  };
}
