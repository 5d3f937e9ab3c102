// homeserver.stop / .start / .suspend / .resume, and what an agent or host
// restart needs put back (firewall rules, proxy routes). Stopping takes Synapse
// down before PostgreSQL; starting brings PostgreSQL up first and routes the
// proxy again (a container's address may change while it is stopped).
import { errorMessage, type Logger } from "../log.ts";
import { SYNAPSE_PORT } from "./config.ts";
import { HomeserverNotFound, type HomeserverCore, type OperationContext, type RunningResult, type Step } from "./core.ts";
import { homeserverNames, type HomeserverNames } from "./names.ts";
import { baseUrl, waitForClientApi } from "./synapse-api.ts";

export function stop(core: HomeserverCore, serverId: string, ctx: OperationContext): Promise<{ serverId: string; state: "stopped" }> {
  return core.serialised(serverId, async () => {
    const record = core.requireRecord(serverId);
    const { names, step } = core.operation(serverId, ctx);
    await core.recoverInterruptedUpgrade(record, names, core.log);
    await stopContainers(core, names, step, [0.1, 0.5]);
    step(1, "stopped");
    return { serverId, state: "stopped" as const };
  });
}

export function start(core: HomeserverCore, serverId: string, ctx: OperationContext): Promise<RunningResult> {
  return core.serialised(serverId, () => startLocked(core, serverId, ctx, false));
}

export function suspend(core: HomeserverCore, serverId: string, ctx: OperationContext): Promise<{ serverId: string; state: "suspended" }> {
  return core.serialised(serverId, async () => {
    const { names, log, step } = core.operation(serverId, ctx);
    await core.recoverInterruptedUpgrade(core.requireRecord(serverId), names, log);
    const record = core.records.write({ ...core.requireRecord(serverId), suspended: true });
    step(0.1, 'proxy: answering "suspended"');
    // First the proxy, so that clients see "suspended" rather than a dead upstream.
    if (core.options.proxy) await core.options.proxy.suspend(record.serverName);
    else log.warn('no proxy configured: nothing answers "suspended"');
    await stopContainers(core, names, step, [0.3, 0.6]);
    step(1, "suspended");
    return { serverId, state: "suspended" as const };
  });
}

export function resume(core: HomeserverCore, serverId: string, ctx: OperationContext): Promise<RunningResult> {
  return core.serialised(serverId, () => startLocked(core, serverId, ctx, true));
}

/** Synapse first, then PostgreSQL (which outlives its last client and shuts down cleanly); `at`: each step's progress. */
async function stopContainers(core: HomeserverCore, names: HomeserverNames, step: Step, at: [number, number]): Promise<void> {
  step(at[0], "stopping Synapse");
  await core.runtime.stopContainer(names.synapse, core.timeouts.stopSeconds);
  step(at[1], "stopping PostgreSQL");
  await core.runtime.stopContainer(names.postgres, core.timeouts.stopSeconds);
}

async function startLocked(core: HomeserverCore, serverId: string, ctx: OperationContext, resuming: boolean): Promise<RunningResult> {
  const { names, log, step } = core.operation(serverId, ctx);
  await core.recoverInterruptedUpgrade(core.requireRecord(serverId), names, log);
  let record = core.requireRecord(serverId);
  for (const name of [names.postgres, names.synapse]) {
    if (!(await core.runtime.inspectContainer(name))) {
      throw new HomeserverNotFound(`container ${name} is missing: provision the homeserver again`);
    }
  }
  // Networks and rules may be gone after a host reboot (iptables rules are not persistent).
  await core.ensureNetworking(names, serverId);
  step(0.1, "starting PostgreSQL");
  await core.runtime.startContainer(names.postgres);
  await core.waitPostgres(names, ctx.signal);
  step(0.4, "starting Synapse");
  await core.runtime.startContainer(names.synapse);
  await core.waitSynapse(names, core.timeouts.synapseHealthyMs, ctx.signal);
  const ip = await core.synapseAddress(names);
  await waitForClientApi(baseUrl(ip, SYNAPSE_PORT), core.timeouts.clientApiMs, ctx.signal);
  if (resuming && record.suspended) record = core.records.write({ ...record, suspended: false });
  step(0.9, record.suspended ? "proxy: still suspended" : "routing the proxy");
  // The address may have changed while the container was stopped: route again.
  await core.applyProxy(record, ip, log);
  const result = await core.runningResult(record, names, ip, ctx.signal);
  step(1, "running");
  return result;
}

/**
 * Puts back what does not survive a reboot: firewall rules (iptables is not
 * persistent) and proxy routes (container addresses may change when Docker
 * restarts containers). For every server this agent provisioned.
 */
export async function restoreHostState(core: HomeserverCore, log: Logger): Promise<void> {
  for (const serverId of core.records.ids()) {
    await core.serialised(serverId, () => restoreOne(core, serverId, log));
  }
}

async function restoreOne(core: HomeserverCore, serverId: string, log: Logger): Promise<void> {
  try {
    const record = core.requireRecord(serverId);
    const names = homeserverNames(serverId);
    if (!(await core.runtime.inspectNetwork(names.hsNetwork)) || !(await core.runtime.inspectNetwork(names.dbNetwork))) return;
    await core.ensureNetworking(names, serverId);
    const info = await core.runtime.inspectContainer(names.synapse);
    if (info?.State.Running) await core.applyProxy(record, await core.synapseAddress(names), log);
    else if (record.suspended && core.options.proxy) await core.options.proxy.suspend(record.serverName);
  } catch (error) {
    log.error("cannot restore a homeserver's firewall rules or route", { serverId, error: errorMessage(error) });
  }
}
