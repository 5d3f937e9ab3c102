// What this host actually runs, as the control plane sees it: homeservers (from
// the Docker containers labelled berth.kind=homeserver, in this agent's host
// namespace: another agent's on the same Docker Engine are not this host's) and the test markers
// (one file per workload in <dataRoot>/workloads/<id>.json). Sent in hello and
// as an `inventory` message after changes.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type Docker from "dockerode";
import { isDeepStrictEqual } from "node:util";
import { z } from "zod";
import { resourceIdSchema, type ReportedWorkload } from "../protocol/messages.ts";
import { HOMESERVER_KIND, KIND_LABEL, ROLE_LABEL, WORKLOAD_LABEL, homeserverNames, inHostNamespace } from "./homeserver/names.ts";
import { errorMessage, silentLogger, type Logger } from "./log.ts";
import type { DockerRuntime } from "./runtime/docker.ts";

export const MAX_REPORTED_WORKLOADS = 10_000;

/** Workload ids (a homeserver's is its server id) become file names and paths: the protocol's resource ids. */
export const workloadIdSchema = resourceIdSchema;

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

// ---------- homeservers (Docker containers) ----------

type WorkloadState = ReportedWorkload["state"];

/** One container's state: running (healthy or no verdict yet), stopped, or failed. */
export function containerState(container: Pick<Docker.ContainerInfo, "State" | "Status">): WorkloadState {
  const state = container.State;
  if (state === "running") return /\(unhealthy\)/.test(container.Status) ? "failed" : "running";
  if (state === "exited" || state === "created") return "stopped";
  return "failed"; // restarting, dead, paused, removing
}

/**
 * A homeserver's state from its two containers: running when both run (and
 * neither is unhealthy), stopped when neither runs, failed otherwise (one
 * missing or crashing, or one running without the other).
 */
export function homeserverState(containers: Array<Pick<Docker.ContainerInfo, "State" | "Status" | "Labels">>): WorkloadState {
  const byRole = new Map<string, WorkloadState>();
  for (const c of containers) byRole.set(c.Labels[ROLE_LABEL] ?? "", containerState(c));
  const synapse = byRole.get("synapse");
  const postgres = byRole.get("postgres");
  if (!synapse || !postgres) return "failed";
  if (synapse === "running" && postgres === "running") return "running";
  if (synapse === "stopped" && postgres === "stopped") return "stopped";
  return "failed";
}

/** The homeservers Docker runs for this agent (of `hostNamespace`, or the default agent), from their containers' labels. */
export async function listHomeserverWorkloads(runtime: Pick<DockerRuntime, "listContainers">, hostNamespace?: string): Promise<ReportedWorkload[]> {
  const containers = await runtime.listContainers({ [KIND_LABEL]: HOMESERVER_KIND });
  const byServer = new Map<string, Docker.ContainerInfo[]>();
  for (const c of containers) {
    const id = c.Labels[WORKLOAD_LABEL];
    if (!id || !workloadIdSchema.safeParse(id).success || !inHostNamespace(c.Labels, hostNamespace)) continue;
    // The previous Synapse kept during an upgrade is not the server's state.
    if (c.Names.some((n) => n.replace(/^\//, "") === homeserverNames(id, hostNamespace).synapsePrevious)) continue;
    byServer.set(id, [...(byServer.get(id) ?? []), c]);
  }
  return [...byServer.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .slice(0, MAX_REPORTED_WORKLOADS)
    .map(([id, list]) => ({ id, kind: HOMESERVER_KIND, state: homeserverState(list) }));
}

export interface WorkloadInventoryOptions {
  dataRoot: string;
  runtime?: Pick<DockerRuntime, "listContainers">;
  /** The agent's host namespace (agent.json): only its containers are its homeservers. */
  hostNamespace?: string;
  log?: Logger;
}

/**
 * The inventory the connection sends: the markers (read on demand) plus the
 * homeservers as last seen in Docker (the Docker API is asynchronous, the
 * connection's inventory callback is not): refresh() after every job that
 * changes containers, and now and then for crashes nobody asked for.
 */
export class WorkloadInventory {
  private readonly o: WorkloadInventoryOptions;
  private readonly log: Logger;
  private homeservers: ReportedWorkload[] = [];
  private dockerFailing = false;

  constructor(options: WorkloadInventoryOptions) {
    this.o = options;
    this.log = options.log ?? silentLogger;
  }

  list(): ReportedWorkload[] {
    const homeserverIds = new Set(this.homeservers.map((w) => w.id));
    const markers = listWorkloads(this.o.dataRoot, this.log).filter((w) => !homeserverIds.has(w.id));
    return [...this.homeservers, ...markers].slice(0, MAX_REPORTED_WORKLOADS);
  }

  /** Reads the homeservers from Docker; returns whether they changed. Keeps the last list while Docker is unreachable. */
  async refresh(): Promise<boolean> {
    if (!this.o.runtime) return false;
    let next: ReportedWorkload[];
    try {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("no answer within 10 s")), 10_000);
      });
      next = await Promise.race([listHomeserverWorkloads(this.o.runtime, this.o.hostNamespace), timeout]).finally(() => clearTimeout(timer));
    } catch (error) {
      if (!this.dockerFailing) this.log.warn("Docker Engine unreachable: homeserver inventory not refreshed", { error: errorMessage(error) });
      this.dockerFailing = true;
      return false;
    }
    this.dockerFailing = false;
    const changed = !isDeepStrictEqual(next, this.homeservers);
    this.homeservers = next;
    return changed;
  }
}
