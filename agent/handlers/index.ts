// The registry of job kinds this agent runs. Later issues add their kinds here
// (homeserver.*, backup.*) or register them at start-up: the map stays open.
import { fail, noop, sleep } from "./test-kinds.ts";
import type { HandlerRegistry } from "./types.ts";
import { workloadHandlers, type WorkloadHandlerOptions } from "./workload.ts";

export type { HandlerRegistry, JobContext, JobHandler, Json } from "./types.ts";

export function builtinHandlers(options: WorkloadHandlerOptions): HandlerRegistry {
  const registry: HandlerRegistry = new Map();
  registry.set("noop", noop);
  registry.set("sleep", sleep);
  registry.set("fail", fail);
  for (const [kind, handler] of Object.entries(workloadHandlers(options))) registry.set(kind, handler);
  return registry;
}
