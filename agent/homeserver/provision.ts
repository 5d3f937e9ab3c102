// homeserver.provision: a server from nothing (or from wherever a crashed
// provisioning stopped) to Synapse answering behind the proxy — uid, data
// directories, secrets and signing key, configuration, networks and firewall
// rules, PostgreSQL, Synapse, the first admin account, the host's service
// account, the route. An import (import.ts) makes its server the same way,
// from its owner's archive.
import { existsSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { errorMessage, type Logger } from "../log.ts";
import { ContainerFailedError, delay } from "../runtime/docker.ts";
import type { HomeserverSettings } from "../../protocol/homeserver-settings.ts";
import { SYNAPSE_PORT } from "./config.ts";
import { postgresContainer, synapseContainer, type PlanResources } from "./containers.ts";
import type { HomeserverCore, Operation, OperationContext, RunningResult } from "./core.ts";
import type { HomeserverNames, HomeserverPaths } from "./names.ts";
import type { HomeserverRecord } from "./records.ts";
import { ensureDataDirs, ensureSecrets, ensureSigningKey, existingOwner, randomSecret, type HomeserverSecrets } from "./secrets.ts";
import { ensureServiceAccount } from "./service-account.ts";
import { writeUserLimit } from "./user-limit.ts";
import { baseUrl, logout, registerWithSharedSecret, waitForClientApi } from "./synapse-api.ts";

export interface ProvisionSpec {
  serverId: string;
  serverName: string;
  publicBaseUrl: string;
  resources: PlanResources;
  images: { synapse: string; postgres: string };
  /** The owner's settings as the control plane keeps them; absent: the record's (a re-provision), else the defaults. */
  settings?: HomeserverSettings;
  /** The plan's bound on users, for Synapse's own check; absent: the one last written stays. */
  maxUsers?: number;
}

export interface ProvisionResult extends RunningResult {
  adminUserId: string;
}

class PostgresNotReady extends Error {
  override name = "PostgresNotReady";
}

/**
 * What an import brings into the server being made (import.ts); a provision brings nothing, and
 * everything is generated or starts empty.
 */
export interface HomeserverSource {
  /** Into synapse/ (the uid's) before the secrets and signing key are made: the archive's signing key and media. */
  placeFiles(paths: HomeserverPaths, uid: number): Promise<void>;
  /** With PostgreSQL running on its empty database, before Synapse first starts: the archive's database. */
  restoreDatabase(record: HomeserverRecord, names: HomeserverNames): Promise<void>;
}

export function provision(core: HomeserverCore, spec: ProvisionSpec, ctx: OperationContext): Promise<ProvisionResult> {
  return core.serialised(spec.serverId, () => makeHomeserver(core, spec, core.operation(spec.serverId, ctx), ctx));
}

/** The server made (or converged), from nothing or from `source`; the caller holds the server's lock. */
export async function makeHomeserver(
  core: HomeserverCore,
  spec: ProvisionSpec,
  { names, paths, log, step }: Operation,
  ctx: OperationContext,
  source?: HomeserverSource,
): Promise<ProvisionResult> {
  const existing = core.records.read(spec.serverId);
  if (existing && existing.serverName !== spec.serverName) {
    throw new Error(`homeserver ${spec.serverId} runs here as ${existing.serverName}; its server name cannot change to ${spec.serverName}`);
  }

  step(0.02, "storage quota");
  const quota = await core.ensureQuota(spec.resources.storageGiB, names, paths, ctx, log);
  step(
    0.03,
    quota === "no quota"
      ? "NO storage quota: the server's data is bounded by nothing but the host's disk"
      : `storage quota: ${spec.resources.storageGiB} GiB (${quota})`,
  );
  step(0.04, "allocating the server's uid and data directories");
  const uid = core.uids.allocate(spec.serverId, existingOwner(paths));
  ensureDataDirs(paths, uid);
  source?.placeFiles(paths, uid);

  // An upgrade replaced the Synapse image: a repeated provision keeps it.
  const images = { synapse: existing?.images.synapse ?? spec.images.synapse, postgres: existing?.images.postgres ?? spec.images.postgres };
  step(0.05, `checking images ${images.postgres} and ${images.synapse}`);
  await core.runtime.ensureImage(images.postgres, ctx.signal);
  await core.runtime.ensureImage(images.synapse, ctx.signal);

  const settings = spec.settings ?? existing?.settings;
  step(0.08, "secrets and signing key");
  const secrets = ensureSecrets(paths, uid);
  ensureSigningKey(paths, spec.serverName, uid);
  let record = core.records.write({
    serverId: spec.serverId,
    serverName: spec.serverName,
    publicBaseUrl: spec.publicBaseUrl,
    uid,
    images,
    resources: spec.resources,
    suspended: existing?.suspended ?? false,
    stopped: false,
    storageQuota: quota !== "no quota",
    ...(settings ? { settings } : {}),
    ...(existing?.adminUserId ? { adminUserId: existing.adminUserId } : {}),
    ...(existing?.upgrade ? { upgrade: existing.upgrade } : {}),
  });
  ctx.signal.throwIfAborted();

  step(0.12, "networks and firewall rules");
  await core.ensureNetworking(names, spec.serverId);

  const configChanged = await core.writeSynapseConfig(record, names, paths, secrets, ctx.signal);
  // before Synapse starts, so that no account, the first admin's included, passes the plan
  if (spec.maxUsers !== undefined) writeUserLimit(paths, record.uid, spec.maxUsers);
  await core.recoverInterruptedUpgrade(record, names, log);
  record = core.requireRecord(spec.serverId);
  ctx.signal.throwIfAborted();

  step(0.2, "starting PostgreSQL");
  await ensurePostgres(core, record, names, paths, ctx, log);
  await source?.restoreDatabase(record, names);

  step(0.45, source ? "starting Synapse (it migrates the database to its schema)" : "starting Synapse");
  await ensureSynapse(core, record, names, paths, { restartIfRunning: configChanged }, ctx);
  const ip = await core.synapseAddress(names);
  const base = baseUrl(ip, SYNAPSE_PORT);
  step(0.75, "checking Synapse's client API");
  await waitForClientApi(base, core.timeouts.clientApiMs, ctx.signal);

  step(0.8, "creating the admin account");
  const adminUserId = await ensureAdmin(core, record, secrets, base, ctx.signal, log);
  record = core.records.write({ ...record, adminUserId });

  step(0.85, "the host's service account");
  await ensureServiceAccount(core, record, names, paths, ctx, log);

  step(0.9, record.suspended ? "proxy: suspended" : "routing the proxy");
  await core.applyProxy(record, ip, log);

  const result = await core.runningResult(record, names, ip, ctx.signal);
  step(1, `running Synapse ${result.synapseVersion}`);
  return { ...result, adminUserId };
}

/**
 * PostgreSQL running, healthy and letting Synapse's user in. A data directory
 * whose first initialisation never finished (no .postgres-initialised marker:
 * the agent or host died during initdb) cannot hold customer data (Synapse
 * starts only after the marker is written), so it is emptied and initialised again.
 */
async function ensurePostgres(
  core: HomeserverCore,
  record: HomeserverRecord,
  names: HomeserverNames,
  paths: HomeserverPaths,
  ctx: OperationContext,
  log: Logger,
): Promise<void> {
  const spec = postgresContainer(core.specInput(record, names, paths, "postgres", record.images.postgres));
  for (let attempt = 1; ; attempt++) {
    await core.ensureContainer(spec, []);
    await core.runtime.startContainer(names.postgres);
    try {
      await core.waitPostgres(names, ctx.signal);
      await checkDatabase(core, names, ctx.signal);
      break;
    } catch (error) {
      const retriable = error instanceof ContainerFailedError || error instanceof PostgresNotReady;
      if (attempt === 1 && retriable && !existsSync(paths.postgresInitialised)) {
        log.warn("PostgreSQL's first initialisation did not finish before (interrupted): initialising it again from an empty data directory", {
          error: errorMessage(error),
        });
        // Its container is gone and no other mounts postgres/: nothing of the tenant's can swap a link in while this deletes.
        await core.runtime.removeContainer(names.postgres, { force: true });
        for (const entry of readdirSync(paths.postgres)) rmSync(join(paths.postgres, entry), { recursive: true, force: true });
        continue;
      }
      throw error;
    }
  }
  if (!existsSync(paths.postgresInitialised)) writeFileSync(paths.postgresInitialised, `${new Date().toISOString()}\n`, { mode: 0o600 });
}

/** Synapse's user can log in to its database; transient states (starting up, crash recovery) are waited out for a while. */
async function checkDatabase(core: HomeserverCore, names: HomeserverNames, signal: AbortSignal): Promise<void> {
  const started = Date.now();
  for (;;) {
    const check = await core.psql(names, "SELECT 1;");
    if (check.exitCode === 0) return;
    const why = check.stderr.trim().slice(0, 300);
    if (!/starting up|recovery mode|shutting down|not yet accepting/i.test(why) || Date.now() - started > 15_000) {
      throw new PostgresNotReady(`PostgreSQL does not let Synapse's user in: ${why}`);
    }
    await delay(1_000, signal);
  }
}

/** Synapse's container from the record's image, started (restarted if its configuration changed) and healthy. */
export async function ensureSynapse(
  core: HomeserverCore,
  record: HomeserverRecord,
  names: HomeserverNames,
  paths: HomeserverPaths,
  options: { restartIfRunning: boolean },
  ctx: OperationContext,
): Promise<void> {
  const spec = synapseContainer(core.specInput(record, names, paths, "synapse", record.images.synapse));
  const created = await core.ensureContainer(spec, [names.dbNetwork]);
  const info = await core.runtime.inspectContainer(names.synapse);
  if (!created && options.restartIfRunning && info?.State.Running) {
    core.log.info("Synapse's configuration changed: restarting it", { serverId: record.serverId });
    await core.runtime.restartContainer(names.synapse, core.timeouts.stopSeconds);
  } else {
    await core.runtime.startContainer(names.synapse);
  }
  await core.waitSynapse(names, core.timeouts.synapseHealthyMs, ctx.signal);
}

/** The first admin account's localpart on this host. */
export function adminLocalpart(core: HomeserverCore): string {
  return core.options.adminLocalpart ?? "admin";
}

/**
 * The first admin account, with a random password that is thrown away at
 * once (never logged, stored or returned): its owner sets a real one through
 * the control plane (homeserver.set_admin_password). The session the
 * registration opens is logged out.
 */
async function ensureAdmin(
  core: HomeserverCore,
  record: HomeserverRecord,
  secrets: HomeserverSecrets,
  base: string,
  signal: AbortSignal,
  log: Logger,
): Promise<string> {
  const localpart = adminLocalpart(core);
  const outcome = await registerWithSharedSecret(
    base,
    secrets.registrationSharedSecret,
    { localpart, password: (core.options.randomPassword ?? (() => randomSecret(32)))(), admin: true, serverName: record.serverName },
    signal,
  );
  if (outcome.created) {
    await logout(base, outcome.accessToken, signal);
    log.info("admin account created", { adminUserId: outcome.userId });
  } else {
    log.info("admin account exists already", { adminUserId: outcome.userId });
  }
  return outcome.userId;
}
