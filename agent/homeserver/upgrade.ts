// homeserver.upgrade: Synapse from a new image on the same data, rolled back to
// the previous container when the new one does not come up. (A crash mid-upgrade
// is rolled back by the next operation: HomeserverCore.recoverInterruptedUpgrade.)
import { errorMessage, type Logger } from "../log.ts";
import { SYNAPSE_PORT } from "./config.ts";
import { synapseContainer } from "./containers.ts";
import { HomeserverNotFound, type HomeserverCore, type OperationContext, type RunningResult } from "./core.ts";
import type { HomeserverNames } from "./names.ts";
import type { HomeserverRecord } from "./records.ts";
import { baseUrl, waitForClientApi } from "./synapse-api.ts";

/**
 * Replaces the Synapse container with one of `image` on the same data. If the
 * new one is not healthy (and answering) within the upgrade timeout, it is
 * removed and the previous container started again; the job then fails with
 * the reason. Synapse migrates its schema on start, so going back works as
 * long as the new version's schema stays compatible with the old (Synapse
 * guarantees that across adjacent releases); a real undo needs the
 * pre-upgrade backup (the backup issue).
 */
export function upgrade(core: HomeserverCore, serverId: string, image: string, ctx: OperationContext): Promise<RunningResult & { previousImage: string }> {
  return core.serialised(serverId, async () => {
    let record = core.requireRecord(serverId);
    const { names, paths, log, step } = core.operation(serverId, ctx, { image });
    if (record.suspended) throw new Error(`homeserver ${serverId} is suspended: resume it before upgrading`);
    step(0.02, `checking image ${image}`);
    await core.runtime.ensureImage(image, ctx.signal);
    await core.recoverInterruptedUpgrade(record, names, log);
    record = core.requireRecord(serverId);
    if (!(await core.runtime.inspectContainer(names.synapse))) {
      throw new HomeserverNotFound(`container ${names.synapse} is missing: provision the homeserver again`);
    }
    await core.ensureNetworking(names, serverId);

    step(0.05, "making sure PostgreSQL runs");
    await core.runtime.startContainer(names.postgres);
    await core.waitPostgres(names, ctx.signal);

    const previousImage = record.images.synapse;
    record = core.records.write({ ...record, upgrade: { from: previousImage, to: image } });
    step(0.1, "stopping the current Synapse (kept for a rollback)");
    await core.runtime.stopContainer(names.synapse, core.timeouts.stopSeconds);
    await core.runtime.renameContainer(names.synapse, names.synapsePrevious);

    let ip: string;
    try {
      step(0.2, `starting Synapse from ${image}`);
      const spec = synapseContainer(core.specInput(record, names, paths, "synapse", image));
      await core.ensureContainer(spec, [names.dbNetwork]);
      await core.runtime.startContainer(names.synapse);
      // A new image is judged by its own healthcheck (Docker's verdict), which may test more than ours.
      await core.runtime.waitHealthy(names.synapse, { timeoutMs: core.timeouts.upgradeHealthyMs, signal: ctx.signal });
      ip = await core.synapseAddress(names);
      await waitForClientApi(baseUrl(ip, SYNAPSE_PORT), core.timeouts.clientApiMs, ctx.signal);
    } catch (error) {
      if (ctx.signal.aborted) throw error; // shutting down: the rerun rolls back (recoverInterruptedUpgrade)
      const reason = errorMessage(error);
      const logs = await core.runtime.logs(names.synapse, 20).catch(() => "");
      log.warn("upgrade failed: rolling back", { error: reason, lastLogLines: logs.slice(-2000) });
      step(0.6, "the new Synapse failed: rolling back");
      try {
        await rollback(core, record, names, log);
        const rolledBack = core.requireRecord(serverId);
        await core.applyProxy(rolledBack, await core.synapseAddress(names), log);
      } catch (rollbackError) {
        throw new Error(`upgrade to ${image} failed: ${reason}; the ROLLBACK to ${previousImage} FAILED too: ${errorMessage(rollbackError)}`);
      }
      throw new Error(`upgrade to ${image} failed: ${reason}; rolled back to ${previousImage}, which is running again (data intact)`);
    }

    step(0.85, "new Synapse healthy: removing the previous container");
    const { upgrade: _done, ...rest } = record;
    record = core.records.write({ ...rest, images: { ...record.images, synapse: image } });
    await core.runtime.removeContainer(names.synapsePrevious, { force: true });
    await core.applyProxy(record, ip, log);
    const result = await core.runningResult(record, names, ip, ctx.signal);
    step(1, `running Synapse ${result.synapseVersion}`);
    return { ...result, previousImage };
  });
}

/** Removes a candidate Synapse and brings the previous container back, healthy. */
async function rollback(core: HomeserverCore, record: HomeserverRecord, names: HomeserverNames, log: Logger): Promise<void> {
  await core.runtime.removeContainer(names.synapse, { force: true });
  if (await core.runtime.inspectContainer(names.synapsePrevious)) {
    await core.runtime.renameContainer(names.synapsePrevious, names.synapse);
  }
  const { upgrade: _gone, ...rest } = record;
  core.records.write(rest);
  await core.runtime.startContainer(names.synapse);
  await core.waitSynapse(names, core.timeouts.synapseHealthyMs);
  log.info("rolled back to the previous Synapse container", { image: record.upgrade?.from ?? record.images.synapse });
}
