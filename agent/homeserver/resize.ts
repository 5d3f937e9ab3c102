// homeserver.resize: a plan change, applied to the running containers in place.
import { splitResources, type PlanResources } from "./containers.ts";
import type { HomeserverCore, OperationContext } from "./core.ts";
import { writeUserLimit } from "./user-limit.ts";

/**
 * Gives the homeserver a new plan: its storage quota first (grown online, or
 * with the containers stopped where the kernel cannot; a shrink the data does
 * not fit in fails the job with the figures, the record's plan unchanged),
 * then its containers' limits in place (no restart), recorded so that a later
 * provisioning creates its containers with them. PostgreSQL's settings and
 * Synapse's database pool and allocator (tuning.ts) follow when the containers are
 * next created and homeserver.yaml next written. Containers not
 * created yet get them then. The plan's bound on users goes to Synapse's own
 * check, which reads it at each registration.
 */
export function resize(
  core: HomeserverCore,
  serverId: string,
  resources: PlanResources,
  maxUsers: number | undefined,
  ctx: OperationContext,
): Promise<{ serverId: string; resources: PlanResources }> {
  return core.serialised(serverId, async () => {
    const { names, paths, log, step } = core.operation(serverId, ctx);
    step(0.1, `storage quota: ${resources.storageGiB} GiB`);
    const quota = await core.ensureQuota(resources.storageGiB, names, paths, ctx, log);
    const record = core.records.write({ ...core.requireRecord(serverId), resources, storageQuota: quota !== "no quota" });
    if (maxUsers !== undefined) writeUserLimit(paths, record.uid, maxUsers);
    const split = splitResources(resources);
    step(0.3, `storage quota ${quota}`);
    step(0.4, "PostgreSQL's limits");
    await core.runtime.updateContainerLimits(names.postgres, split.postgres);
    step(0.7, "Synapse's limits");
    await core.runtime.updateContainerLimits(names.synapse, split.synapse);
    step(1, `limits: ${resources.memoryMiB} MiB, ${resources.cpus} CPUs, ${resources.storageGiB} GiB`);
    return { serverId, resources };
  });
}
