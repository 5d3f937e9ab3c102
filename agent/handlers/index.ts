// The registry of job kinds this agent runs: the test kinds, the workload
// markers and the homeserver.* kinds; later issues add theirs (backup.*) here
// or register them at start-up: the map stays open.
import { fail, noop, sleep } from "./test-kinds.ts";
import type { HomeserverJobKind } from "../../protocol/messages.ts";
import type { HandlerRegistry, JobHandler } from "./types.ts";
import { workloadHandlers, type WorkloadHandlerOptions } from "./workload.ts";

export type { HandlerRegistry, JobContext, JobHandler, Json } from "./types.ts";
export { homeserverHandlers, type HomeserverHandlerOptions } from "./homeserver.ts";

export interface BuiltinHandlerOptions extends WorkloadHandlerOptions {
  /** The homeserver.* kinds, from homeserverHandlers() (which also gives the manager the agent needs at start). */
  homeservers?: Record<HomeserverJobKind, JobHandler>;
}

export function builtinHandlers(options: BuiltinHandlerOptions): HandlerRegistry {
  const registry: HandlerRegistry = new Map();
  registry.set("noop", noop);
  registry.set("sleep", sleep);
  registry.set("fail", fail);
  for (const [kind, handler] of Object.entries(workloadHandlers(options))) registry.set(kind, handler);
  for (const [kind, handler] of Object.entries(options.homeservers ?? {})) registry.set(kind, handler);
  return registry;
}
