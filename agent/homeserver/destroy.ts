// homeserver.delete: everything of a server removed from this host.
import { rmSync } from "node:fs";
import type { HomeserverCore, Operation, OperationContext } from "./core.ts";
import { servedHostOf } from "./records.ts";
import { removeStorageQuota } from "./storage-quota.ts";

/**
 * Removes everything of a server from this host: its route, containers,
 * networks, firewall rules, data directory, imports' staging and record.
 * Irreversible: the caller makes sure a final backup exists first. Converges
 * like the rest (a rerun after a crash finishes the removal); its uid is never
 * reused.
 */
export function destroy(core: HomeserverCore, serverId: string, ctx: OperationContext): Promise<{ serverId: string; state: "deleted" }> {
  return core.serialised(serverId, async () => {
    const operation = core.operation(serverId, ctx);
    await removeHomeserver(core, serverId, operation);
    operation.step(1, "deleted");
    return { serverId, state: "deleted" as const };
  });
}

/** What destroy removes, under the lock its caller holds (an import that failed removes what it made). */
export async function removeHomeserver(core: HomeserverCore, serverId: string, { names, paths, step }: Operation): Promise<void> {
  const record = core.records.read(serverId);
  step(0.05, "removing the proxy route");
  if (record && core.options.proxy) await core.options.proxy.remove(servedHostOf(record));
  step(0.2, "removing the containers");
  // Synapse first: PostgreSQL outlives its last client and shuts down cleanly.
  for (const name of [names.synapse, names.synapsePrevious, names.postgres]) {
    await core.runtime.stopContainer(name, core.timeouts.stopSeconds);
    await core.runtime.removeContainer(name, { force: true });
  }
  step(0.5, "removing the networks and firewall rules");
  await core.runtime.removeNetwork(names.hsNetwork);
  await core.runtime.removeNetwork(names.dbNetwork);
  await core.options.firewall?.remove({ chainId: names.chainId, tag: names.firewallTag });
  step(0.7, "destroying the data");
  // Only now that both containers are gone: nothing of the tenant's runs to swap a link in while
  // this deletes. Its quota's filesystem (when it has one) goes whole, unmounted, with its image.
  await removeStorageQuota({ image: paths.storageImage, mountpoint: paths.root });
  rmSync(paths.root, { recursive: true, force: true });
  // An import the agent's death cut short leaves its staging: the owner's database dump and signing key.
  rmSync(paths.imports, { recursive: true, force: true });
  core.records.remove(serverId);
  await core.localFederation?.forget(serverId);
}
