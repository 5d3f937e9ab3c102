// homeserver.resize: a plan change, applied to the running containers in place.
import { splitResources, type PlanResources } from "./containers.ts";
import type { HomeserverCore, OperationContext } from "./core.ts";
import { writeUserLimit } from "./user-limit.ts";

/**
 * Gives the homeserver's containers a new plan's limits in place (no restart)
 * and records them, so that a later provisioning creates its containers with
 * them. PostgreSQL's memory settings (shared_buffers) follow when its
 * container is next created. Containers not created yet get them then. The
 * plan's bound on users goes to Synapse's own check, which reads it at each
 * registration.
 */
export function resize(
  core: HomeserverCore,
  serverId: string,
  resources: PlanResources,
  maxUsers: number | undefined,
  ctx: OperationContext,
): Promise<{ serverId: string; resources: PlanResources }> {
  return core.serialised(serverId, async () => {
    const record = core.records.write({ ...core.requireRecord(serverId), resources });
    const { names, paths, step } = core.operation(serverId, ctx);
    if (maxUsers !== undefined) writeUserLimit(paths, record.uid, maxUsers);
    const split = splitResources(resources);
    step(0.2, "PostgreSQL's limits");
    await core.runtime.updateContainerLimits(names.postgres, split.postgres);
    step(0.6, "Synapse's limits");
    await core.runtime.updateContainerLimits(names.synapse, split.synapse);
    step(1, `limits: ${resources.memoryMiB} MiB, ${resources.cpus} CPUs`);
    return { serverId, resources };
  });
}
