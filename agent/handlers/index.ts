// The registry of job kinds this agent runs: the test kinds, the workload
// markers and the homeserver.* kinds, each a kind of the job catalogue
// (protocol/jobs.ts); a new capability adds its entry there and its handlers here.
import type { HomeserverJobKind } from "../../protocol/jobs.ts";
import { HandlerRegistry } from "./registry.ts";
import { testHandlers } from "./test-kinds.ts";
import type { JobHandlers } from "./types.ts";
import { workloadHandlers, type WorkloadHandlerOptions } from "./workload.ts";

export type { JobContext, JobHandler, JobHandlers, Json } from "./types.ts";
export { HandlerRegistry } from "./registry.ts";
export { homeserverHandlers, type HomeserverHandlerOptions } from "./homeserver.ts";

export interface BuiltinHandlerOptions extends WorkloadHandlerOptions {
  /**
   * The homeserver.* kinds, from homeserverHandlers() (which also gives the manager the agent needs
   * at start): the lifecycle kinds (homeserver.ts) and the administration kinds (administration.ts)
   * around one manager.
   */
  homeservers?: JobHandlers<HomeserverJobKind>;
}

export function builtinHandlers(options: BuiltinHandlerOptions): HandlerRegistry {
  const registry = new HandlerRegistry().registerAll(testHandlers).registerAll(workloadHandlers(options));
  if (options.homeservers) registry.registerAll(options.homeservers);
  return registry;
}
