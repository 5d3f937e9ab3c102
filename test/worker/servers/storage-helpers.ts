import { env } from "cloudflare:workers";
import { expect, vi } from "vitest";
import type { UsageSample } from "../../../protocol/messages";
import { EVERY_MINUTE } from "../../../worker/scheduled";
import type { FakeAgent } from "../fleet/fleet-helpers";
import { runCron } from "../helpers";

export const MiB = 1024 * 1024;
export const QUOTA = 1024 * MiB;

/** A usage sample whose only figure is one homeserver's storage and its quota's. */
export function quotaSample(at: number, serverId: string, quota: Record<string, unknown>): UsageSample {
  return {
    at,
    host: { cpuLoadPercent: 1, memoryUsedBytes: 1, memoryAvailableBytes: 1, disks: [], networkRxBytes: 0, networkTxBytes: 0 },
    containers: [],
    storage: [{ workloadId: serverId, usedBytes: 1, quota } as NonNullable<UsageSample["storage"]>[number]],
  };
}

/**
 * The host reports that `share` of the server's 1 GiB quota is used, then the minutely cron runs,
 * as it would next. Each report is a second after the one before, so the newest one decides.
 */
export function quotaReporter(agent: FakeAgent, serverId: string) {
  let at = Date.now() - 10 * 60_000;
  return async (share: number) => {
    at += 1000;
    // Rounded up: the share reported is at least `share` (percentages shown are rounded down).
    const usedBytes = Math.ceil(QUOTA * share);
    agent.send({ type: "usage", samples: [quotaSample(at, serverId, { usedBytes, quotaBytes: QUOTA })] });
    await vi.waitFor(async () => {
      const row = await env.DB.prepare("SELECT quota_used_bytes AS used FROM workload_usage WHERE workload_id = ? AND resolution = 'raw' AND at = ?")
        .bind(serverId, at)
        .first<{ used: number }>();
      expect(row?.used).toBe(usedBytes);
    });
    await runCron(new Date(), EVERY_MINUTE);
  };
}
