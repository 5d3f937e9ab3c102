// What this host actually runs, as the control plane sees it: one marker file per
// workload in <dataRoot>/workloads/<id>.json (the homeserver issue will add
// real containers). Sent in hello and as an `inventory` message after changes.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import type { ReportedWorkload } from "../protocol/messages.ts";
import { silentLogger, type Logger } from "./log.ts";

export const MAX_REPORTED_WORKLOADS = 10_000;

/** Workload ids become file names: letters, digits, '_' and '-' only. */
export const workloadIdSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9][A-Za-z0-9_-]*$/, "letters, digits, '_' and '-', starting with a letter or digit");

export const workloadMarkerSchema = z.strictObject({
  id: workloadIdSchema,
  kind: z.string().min(1).max(64),
  spec: z.json(),
  updatedAt: z.number().int().nonnegative(),
});
export type WorkloadMarker = z.infer<typeof workloadMarkerSchema>;

export function workloadsDir(dataRoot: string): string {
  return join(dataRoot, "workloads");
}

export function markerPath(dataRoot: string, id: string): string {
  return join(workloadsDir(dataRoot), `${id}.json`);
}

export function readMarker(dataRoot: string, id: string): WorkloadMarker | undefined {
  try {
    const parsed = workloadMarkerSchema.safeParse(JSON.parse(readFileSync(markerPath(dataRoot, id), "utf8")));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export function listWorkloads(dataRoot: string, log: Logger = silentLogger): ReportedWorkload[] {
  let names: string[];
  try {
    names = readdirSync(workloadsDir(dataRoot));
  } catch {
    return [];
  }
  const out: ReportedWorkload[] = [];
  for (const name of names.sort()) {
    if (!name.endsWith(".json") || name.startsWith(".")) continue;
    const id = name.slice(0, -".json".length);
    const marker = readMarker(dataRoot, id);
    if (!marker || marker.id !== id) {
      log.warn("unreadable workload marker ignored", { file: join(workloadsDir(dataRoot), name) });
      continue;
    }
    out.push({ id: marker.id, kind: marker.kind, state: "running" });
    if (out.length >= MAX_REPORTED_WORKLOADS) break;
  }
  return out;
}
