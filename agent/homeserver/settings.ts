// homeserver.settings.apply: the owner's settings rendered into a new
// homeserver.yaml and Synapse restarted on it; if Synapse does not come back
// healthy and answering, the previous record is put back, the configuration
// rendered from it again and Synapse restarted on them, and the job fails saying
// so. Data is never touched. (The previous configuration is rendered, not copied
// back from disk: Synapse can write to its own directory, and whatever it put
// there is nothing to restore, nor a file to read through a link it planted.)
import { SETTINGS_ROLLED_BACK, type HomeserverSettings } from "../../protocol/homeserver-settings.ts";
import { errorMessage } from "../log.ts";
import { SYNAPSE_PORT } from "./config.ts";
import { HomeserverNotFound, type HomeserverCore, type OperationContext } from "./core.ts";
import type { HomeserverNames, HomeserverPaths } from "./names.ts";
import { ensureSynapse } from "./provision.ts";
import type { HomeserverRecord } from "./records.ts";
import { ensureSecrets } from "./secrets.ts";
import { baseUrl, waitForClientApi } from "./synapse-api.ts";

export function applySettings(
  core: HomeserverCore,
  serverId: string,
  settings: HomeserverSettings,
  ctx: OperationContext,
): Promise<{ serverId: string; settings: HomeserverSettings }> {
  return core.serialised(serverId, async () => {
    const { names, paths, log, step } = core.operation(serverId, ctx);
    await core.recoverInterruptedUpgrade(core.requireRecord(serverId), names, log);
    const previous = core.requireRecord(serverId);
    if (previous.suspended) throw new Error(`homeserver ${serverId} is suspended: resume it before changing its settings`);
    for (const name of [names.postgres, names.synapse]) {
      if (!(await core.runtime.inspectContainer(name))) throw new HomeserverNotFound(`container ${name} is missing: provision the homeserver again`);
    }
    // A stop that overtook the change wins: the change is not applied rather than the server started for it.
    if (!(await core.runtime.inspectContainer(names.synapse))?.State.Running) {
      throw new Error(`homeserver ${serverId} is not running: start it before changing its settings`);
    }
    const secrets = ensureSecrets(paths, previous.uid);

    const record = core.records.write({ ...previous, settings });
    try {
      step(0.1, "writing the new configuration");
      const changed = await core.writeSynapseConfig(record, names, paths, secrets, ctx.signal);
      step(0.2, "making sure PostgreSQL runs");
      await core.runtime.startContainer(names.postgres);
      await core.waitPostgres(names, ctx.signal);
      step(0.3, changed ? "restarting Synapse on the new configuration" : "the configuration is unchanged: making sure Synapse runs");
      await runSynapse(core, record, names, paths, changed, ctx);
    } catch (error) {
      if (ctx.signal.aborted) throw error;
      const reason = errorMessage(error);
      const logs = await core.runtime.logs(names.synapse, 20).catch(() => "");
      log.warn("Synapse did not come back on the new settings: rolling back", { error: reason, lastLogLines: logs.slice(-2000) });
      step(0.6, "Synapse did not come back: putting the previous configuration back");
      try {
        const restored = core.records.write(previous);
        await core.writeSynapseConfig(restored, names, paths, secrets, ctx.signal);
        await runSynapse(core, restored, names, paths, true, ctx);
      } catch (rollbackError) {
        throw new Error(`applying the settings failed: ${reason}; the ROLLBACK FAILED too: ${errorMessage(rollbackError)}`);
      }
      throw new Error(`applying the settings failed: ${reason}; ${SETTINGS_ROLLED_BACK}`);
    }
    step(1, "Synapse runs with the new settings");
    return { serverId, settings };
  });
}

/** Synapse (re)started on the record's configuration, healthy, answering, and routed with its upload limit. */
async function runSynapse(
  core: HomeserverCore,
  record: HomeserverRecord,
  names: HomeserverNames,
  paths: HomeserverPaths,
  restart: boolean,
  ctx: OperationContext,
): Promise<void> {
  await ensureSynapse(core, record, names, paths, { restartIfRunning: restart }, ctx);
  const ip = await core.synapseAddress(names);
  await waitForClientApi(baseUrl(ip, SYNAPSE_PORT), core.timeouts.clientApiMs, ctx.signal);
  await core.applyProxy(record, ip, core.operation(record.serverId, ctx).log);
}
