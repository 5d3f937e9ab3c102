// homeserver.stop / .start / .suspend / .resume, and what an agent or host
// restart needs put back (firewall rules, proxy routes). Stopping takes Synapse
// down before PostgreSQL; starting brings PostgreSQL up first and routes the
// proxy again (a container's address may change while it is stopped).
import { errorMessage, type Logger } from "../log.ts";
import { SYNAPSE_PORT } from "./config.ts";
import { HomeserverNotFound, type HomeserverCore, type OperationContext, type RunningResult, type Step } from "./core.ts";
import { homeserverPaths, type HomeserverNames } from "./names.ts";
import { servedHostOf } from "./records.ts";
import { mountStorageQuota } from "./storage-quota.ts";
import { baseUrl, waitForClientApi } from "./synapse-api.ts";

export function stop(core: HomeserverCore, serverId: string, ctx: OperationContext): Promise<{ serverId: string; state: "stopped" }> {
  return core.serialised(serverId, async () => {
    const { names, step } = core.operation(serverId, ctx);
    await core.recoverInterruptedUpgrade(core.requireRecord(serverId), names, core.log);
    // Before the containers stop: a reboot in between must not start them again.
    core.records.write({ ...core.requireRecord(serverId), stopped: true });
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
    if (core.options.proxy) await core.options.proxy.suspend(servedHostOf(record));
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
  const { names, paths, log, step } = core.operation(serverId, ctx);
  await core.recoverInterruptedUpgrade(core.requireRecord(serverId), names, log);
  let record = core.requireRecord(serverId);
  for (const name of [names.postgres, names.synapse]) {
    if (!(await core.runtime.inspectContainer(name))) {
      throw new HomeserverNotFound(`container ${name} is missing: provision the homeserver again`);
    }
  }
  if (record.stopped !== false) record = core.records.write({ ...record, stopped: false });
  // Its quota may be unmounted (a reboot the start-up restore could not finish).
  await mountStorageQuota({ image: paths.storageImage, mountpoint: paths.root });
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
 * Puts back what does not survive a reboot: storage quotas (mounts), firewall
 * rules (iptables is not persistent), the containers that should run, and proxy
 * routes (container addresses may change when Docker restarts containers). For
 * every server this agent provisioned.
 *
 * At boot Docker starts the containers before the agent runs: their bind
 * mounts' sources on the unmounted quota are missing, so Docker refuses to
 * start them (and does not retry); they are started here once their quota is mounted.
 */
export async function restoreHostState(core: HomeserverCore, dataRoot: string, log: Logger): Promise<void> {
  for (const serverId of core.records.ids()) {
    await core.serialised(serverId, () => restoreOne(core, dataRoot, serverId, log));
  }
}

async function restoreOne(core: HomeserverCore, dataRoot: string, serverId: string, log: Logger): Promise<void> {
  try {
    const record = core.requireRecord(serverId);
    const names = core.names(serverId);
    const paths = homeserverPaths(dataRoot, serverId);
    if (await mountStorageQuota({ image: paths.storageImage, mountpoint: paths.root })) log.info("storage quota mounted", { serverId });
    if (!(await core.runtime.inspectNetwork(names.hsNetwork)) || !(await core.runtime.inspectNetwork(names.dbNetwork))) return;
    await core.ensureNetworking(names, serverId);
    // A record from before `stopped` existed does not say: then only a start Docker refused is made again.
    if (!record.stopped && !record.suspended) await startIfDown(core, names, log, record.stopped === undefined);
    const info = await core.runtime.inspectContainer(names.synapse);
    if (info?.State.Running) await core.applyProxy(record, await core.synapseAddress(names), log);
    else if (record.suspended && core.options.proxy) await core.options.proxy.suspend(servedHostOf(record));
  } catch (error) {
    log.error("cannot restore a homeserver after a restart (storage quota, firewall rules, containers or route)", { serverId, error: errorMessage(error) });
  }
}

/**
 * PostgreSQL then Synapse started, each healthy, when they exist and are not running (a reboot whose
 * start Docker refused); `onlyRefused`: only those whose last start failed (Docker's State.Error).
 */
async function startIfDown(core: HomeserverCore, names: HomeserverNames, log: Logger, onlyRefused: boolean): Promise<void> {
  for (const name of [names.postgres, names.synapse]) {
    const info = await core.runtime.inspectContainer(name);
    if (!info || info.State.Running || (onlyRefused && !info.State.Error)) continue;
    log.info("starting a container that should run", { container: name, dockerError: info.State.Error || undefined });
    await core.runtime.startContainer(name);
    if (name === names.postgres) await core.waitPostgres(names, new AbortController().signal);
    else await core.waitSynapse(names, core.timeouts.synapseHealthyMs);
  }
}
