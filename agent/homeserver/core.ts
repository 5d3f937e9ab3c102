// What the homeserver operations share (one file per operation beside this one):
// the per-server lock, the records, the containers' specs, networks and
// firewall rules, waiting for PostgreSQL and Synapse, the proxy, the result of a
// running server, and the recovery of an upgrade a crash interrupted (which runs
// before anything else happens to a server). Every operation converges: rerun
// after a crash at any point, it finishes the job instead of duplicating or
// breaking anything.
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import type Docker from "dockerode";
import { DEFAULT_HOMESERVER_SETTINGS, type HomeserverSettings } from "../../protocol/homeserver-settings.ts";
import { silentLogger, type Logger } from "../log.ts";
import type { HomeserverFirewall } from "../network/firewall.ts";
import type { DockerRuntime, ExecResult } from "../runtime/docker.ts";
import {
  HOMESERVER_CONFIG_FILE,
  LOG_CONFIG_FILE,
  SYNAPSE_DATA,
  SYNAPSE_PORT,
  renderHomeserverConfig,
  renderLogConfig,
  type LocalFederationConfig,
  type SynapseConfigAdjustment,
} from "./config.ts";
import {
  assertNoDockerSocket,
  POSTGRES_READY_TEST,
  splitResources,
  STOP_TIMEOUT_SECONDS,
  type ContainerSpecInput,
  type HealthcheckOverride,
} from "./containers.ts";
import {
  HOMESERVER_KIND,
  KIND_LABEL,
  SPEC_HASH_LABEL,
  WORKLOAD_LABEL,
  homeserverNames,
  hostNamespaceLabels,
  homeserverPaths,
  type HomeserverNames,
  type HomeserverPaths,
} from "./names.ts";
import { LOCAL_FEDERATION_CA_FILE, LocalFederationHosts, type LocalFederationOptions } from "./local-federation.ts";
import type { HomeserverProxy } from "./proxy.ts";
import { HomeserverRecords, servedHostOf, type HomeserverRecord } from "./records.ts";
import { POSTGRES_DB, POSTGRES_USER, signingKeyFileName, writeOwnedFile, type HomeserverSecrets } from "./secrets.ts";
import { baseUrl, serverVersion, synapseHealthy } from "./synapse-api.ts";
import { UidAllocator, uidRangeOf, type UidRange } from "./uids.ts";
import { writeSynapseModules } from "./user-limit-module.ts";
import { ensureStorageQuota, migrateIntoStorageQuota, mountedDevice, QuotaTooSmallError, type QuotaChange, type WhileStopped } from "./storage-quota.ts";

export interface Timeouts {
  /** PostgreSQL healthy after start (first start includes initdb). */
  postgresHealthyMs: number;
  /** Synapse healthy after start (first start creates the schema). */
  synapseHealthyMs: number;
  /** A new Synapse image healthy during an upgrade; past it the upgrade is rolled back. */
  upgradeHealthyMs: number;
  /** The client API answering once the container is healthy. */
  clientApiMs: number;
  stopSeconds: number;
}

export const DEFAULT_TIMEOUTS: Timeouts = {
  postgresHealthyMs: 180_000,
  synapseHealthyMs: 300_000,
  upgradeHealthyMs: 300_000,
  clientApiMs: 60_000,
  stopSeconds: STOP_TIMEOUT_SECONDS,
};

export interface HomeserverManagerOptions {
  /** The agent's state dir: uid allocations and per-server records. */
  stateDir: string;
  runtime: DockerRuntime;
  /** The host's reverse proxy; without one, servers are not routed (tests, development). */
  proxy?: HomeserverProxy;
  /** Isolation rules; without one, none are installed (development only: logged). */
  firewall?: HomeserverFirewall;
  log?: Logger;
  healthcheck?: HealthcheckOverride;
  timeouts?: Partial<Timeouts>;
  /** Synapse's trusted_key_servers (default matrix.org). */
  trustedKeyServers?: string[];
  /** Development only (--allow-local-federation): this host's homeservers federate with each other (local-federation.ts). */
  localFederation?: LocalFederationOptions;
  /**
   * Several agents on one Docker Engine (development, tests: names.ts): this agent's
   * namespace, in every name it gives and on every label; its uids from a range of its own.
   */
  hostNamespace?: string;
  /** Default: the host namespace's (uids.ts). */
  uidRange?: UidRange;
  /** Labels added to every container and network (tests mark their run). */
  extraLabels?: Record<string, string>;
  /** The first admin's localpart (default "admin"). */
  adminLocalpart?: string;
  /** Source of the admin's throwaway password (tests observe it to prove it leaks nowhere). */
  randomPassword?: () => string;
  /** The tool image upkeep runs the state compressor in (default berth/upkeep:latest: images/build.sh). */
  upkeepImage?: string;
  /** Has the last word on every homeserver.yaml written (tests make one Synapse refuses, to prove a rollback). */
  adjustSynapseConfig?: SynapseConfigAdjustment;
  /**
   * Development only (--allow-no-storage-quota, where loop mounts are impossible): servers
   * without a quota image get none (logged). An image that exists is always mounted.
   */
  allowNoStorageQuota?: boolean;
}

/** What an operation needs of its job (a JobContext fits). */
export interface OperationContext {
  dataRoot: string;
  signal: AbortSignal;
  progress(progress: number, message?: string): void;
  log?: Logger;
}

export interface ContainerRef {
  name: string;
  id: string;
}

export interface RunningResult {
  serverId: string;
  serverName: string;
  state: "running";
  synapseVersion: string;
  image: string;
  ipAddress: string;
  containers: { synapse: ContainerRef; postgres: ContainerRef };
}

export class HomeserverNotFound extends Error {
  override name = "HomeserverNotFound";
}

/** Reports a step of an operation: progress to the job, a line to the log; throws once the job is aborted. */
export type Step = (progress: number, message: string) => void;

/** Where an operation on one server starts: its names, paths, logger and steps. */
export interface Operation {
  names: HomeserverNames;
  paths: HomeserverPaths;
  log: Logger;
  step: Step;
}

export class HomeserverCore {
  readonly options: HomeserverManagerOptions;
  readonly runtime: DockerRuntime;
  readonly uids: UidAllocator;
  readonly records: HomeserverRecords;
  readonly timeouts: Timeouts;
  readonly log: Logger;
  /** On everything this agent makes: the tests' extra labels and its host namespace's. */
  readonly labels: Record<string, string>;
  /** Present only with the development flag --allow-local-federation. */
  readonly localFederation: LocalFederationHosts | undefined;
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(options: HomeserverManagerOptions) {
    this.options = options;
    this.runtime = options.runtime;
    this.uids = new UidAllocator(options.stateDir, options.uidRange ?? uidRangeOf(options.hostNamespace));
    this.labels = { ...options.extraLabels, ...hostNamespaceLabels(options.hostNamespace) };
    this.records = new HomeserverRecords(options.stateDir);
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.log = options.log ?? silentLogger;
    this.localFederation = options.localFederation
      ? new LocalFederationHosts(options.stateDir, options.runtime, this.records, options.localFederation, options.hostNamespace)
      : undefined;
  }

  /** Operations on one server run one at a time (a stop arriving mid-provision waits). */
  serialised<T>(serverId: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(serverId) ?? Promise.resolve();
    const next = previous.then(fn, fn);
    const settled = next.catch(() => undefined);
    this.locks.set(serverId, settled);
    void settled.then(() => {
      if (this.locks.get(serverId) === settled) this.locks.delete(serverId);
    });
    return next;
  }

  /** The server's names on this agent (in its host namespace). */
  names(serverId: string): HomeserverNames {
    return homeserverNames(serverId, this.options.hostNamespace);
  }

  /** The names, paths, logger (the job's, else the agent's, with `serverId` and `fields`) and steps of an operation. */
  operation(serverId: string, ctx: OperationContext, fields: Record<string, unknown> = {}): Operation {
    const log = (ctx.log ?? this.log).child({ serverId, ...fields });
    return { names: this.names(serverId), paths: homeserverPaths(ctx.dataRoot, serverId), log, step: stepper(ctx, log) };
  }

  requireRecord(serverId: string): HomeserverRecord {
    const record = this.records.read(serverId);
    if (!record) throw new HomeserverNotFound(`homeserver ${serverId} is not provisioned on this host`);
    return record;
  }

  specInput(record: HomeserverRecord, names: HomeserverNames, paths: HomeserverPaths, role: "synapse" | "postgres", image: string): ContainerSpecInput {
    return {
      names,
      paths,
      serverName: record.serverName,
      uid: record.uid,
      image,
      resources: splitResources(record.resources)[role],
      healthcheck: this.options.healthcheck,
      extraLabels: this.labels,
      ...(this.localFederation && role === "synapse" ? { hostsFile: this.localFederation.hostsFile(record.serverId) } : {}),
      maxUploadMiB: settingsOf(record).maxUploadMiB,
    };
  }

  /** homeserver.yaml and log.config (0600, the server's uid), Berth's Synapse modules, and in development the proxy's CA; returns whether anything changed. */
  async writeSynapseConfig(
    record: HomeserverRecord,
    names: HomeserverNames,
    paths: HomeserverPaths,
    secrets: HomeserverSecrets,
    signal: AbortSignal,
  ): Promise<boolean> {
    const split = splitResources(record.resources);
    let caChanged = false;
    let localFederation: LocalFederationConfig | undefined;
    if (this.localFederation) {
      caChanged = writeOwnedFile(join(paths.synapse, LOCAL_FEDERATION_CA_FILE), await this.localFederation.caRoot(signal), record.uid);
      localFederation = { hostAddress: await this.localFederation.hostAddress(names), caFile: `${SYNAPSE_DATA}/${LOCAL_FEDERATION_CA_FILE}` };
    }
    const config = renderHomeserverConfig(
      {
        serverName: record.serverName,
        publicBaseUrl: record.publicBaseUrl,
        postgresHost: names.postgres,
        postgresUser: POSTGRES_USER,
        postgresDb: POSTGRES_DB,
        secrets,
        signingKeyFile: signingKeyFileName(record.serverName),
        synapseMemoryMiB: split.synapse.memoryMiB,
        postgresMemoryMiB: split.postgres.memoryMiB,
        dockerSubnets: await this.runtime.networkSubnets(),
        settings: settingsOf(record),
        ...(this.options.trustedKeyServers ? { trustedKeyServers: this.options.trustedKeyServers } : {}),
        ...(localFederation ? { localFederation } : {}),
      },
      this.options.adjustSynapseConfig,
    );
    const a = writeOwnedFile(join(paths.synapse, HOMESERVER_CONFIG_FILE), config, record.uid);
    const b = writeOwnedFile(join(paths.synapse, LOG_CONFIG_FILE), renderLogConfig(), record.uid);
    const modulesChanged = writeSynapseModules(paths);
    return a || b || caChanged || modulesChanged;
  }

  /** Both networks exist (the -db one internal, with fixed bridge names) and the firewall rules are in place. */
  async ensureNetworking(names: HomeserverNames, serverId: string): Promise<void> {
    const labels = { ...this.labels, [WORKLOAD_LABEL]: serverId, [KIND_LABEL]: HOMESERVER_KIND };
    await this.runtime.ensureNetwork(names.dbNetwork, { internal: true, bridgeName: names.dbBridge, labels });
    await this.runtime.ensureNetwork(names.hsNetwork, { internal: false, bridgeName: names.hsBridge, labels });
    const db = await this.runtime.inspectNetwork(names.dbNetwork);
    const hs = await this.runtime.inspectNetwork(names.hsNetwork);
    if (!db || !hs) throw new Error(`the networks of ${serverId} vanished while being set up`);
    if (this.options.firewall) {
      await this.firewallBridges(names, hs.bridge, db.bridge);
    } else {
      this.log.warn("no firewall configured: this homeserver's containers are NOT isolated (development only)", { serverId });
    }
    if (this.localFederation) {
      await this.localFederation.refresh();
      // Docker would make a missing bind source a directory: Synapse's /etc/hosts must be the file.
      if (!existsSync(this.localFederation.hostsFile(serverId))) throw new Error(`no hosts file for ${serverId}: local federation is not set up`);
    }
  }

  /** The server's firewall rules on its two bridges (restore-verify.ts: one bridge serving as both). */
  async firewallBridges(names: HomeserverNames, hsBridge: string, dbBridge: string): Promise<void> {
    await this.options.firewall?.ensure({
      chainId: names.chainId,
      tag: names.firewallTag,
      hsBridge,
      dbBridge,
      dockerSubnets: await this.runtime.networkSubnets(),
    });
  }

  /**
   * Creates the container unless one with the same spec exists (a changed spec,
   * e.g. a new plan, replaces it; data lives in bind mounts), and connects it
   * to `extraNetworks`. Returns whether it was created.
   */
  async ensureContainer(options: Docker.ContainerCreateOptions, extraNetworks: string[]): Promise<boolean> {
    const name = options.name!;
    let info = await this.runtime.inspectContainer(name);
    if (info && info.Config.Labels?.[SPEC_HASH_LABEL] !== options.Labels?.[SPEC_HASH_LABEL]) {
      this.log.info("container spec changed: replacing the container (data is kept)", { container: name });
      await this.runtime.stopContainer(name, this.timeouts.stopSeconds);
      await this.runtime.removeContainer(name, { force: true });
      info = undefined;
    }
    const created = !info;
    if (created) await this.runtime.createContainer(options);
    for (const network of extraNetworks) {
      if (!info?.NetworkSettings.Networks[network]) await this.runtime.connectNetwork(network, name);
    }
    const final = await this.runtime.inspectContainer(name);
    if (!final) throw new Error(`container ${name} vanished right after it was created`);
    assertNoDockerSocket(final);
    return created;
  }

  /** SQL on psql's stdin as Synapse's database user, over the container's own socket. */
  async psql(names: HomeserverNames, sql: string, timeoutMs = 60_000, database = POSTGRES_DB): Promise<ExecResult> {
    return this.runtime.exec(
      names.postgres,
      ["psql", "-h", "/run/postgresql", "-U", POSTGRES_USER, "-d", database, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"],
      { stdin: sql, env: ["PGPASSFILE=/run/secrets/pgpass"], timeoutMs },
    );
  }

  /** Healthy by Docker's healthcheck, or by the same test (pg_isready over TCP) run now. */
  waitPostgres(names: HomeserverNames, signal: AbortSignal): Promise<void> {
    const ready = async () => (await this.runtime.exec(names.postgres, POSTGRES_READY_TEST, { timeoutMs: 10_000 })).exitCode === 0;
    return this.runtime.waitHealthy(names.postgres, { timeoutMs: this.timeouts.postgresHealthyMs, signal, ready });
  }

  /**
   * PostgreSQL running for `fn` (a stopped or suspended server's is started
   * for it and stopped again afterwards, unless Synapse runs by then).
   */
  async withPostgres<T>(names: HomeserverNames, ctx: OperationContext, fn: () => Promise<T>): Promise<T> {
    const wasRunning = (await this.runtime.inspectContainer(names.postgres))?.State.Running ?? false;
    await this.runtime.startContainer(names.postgres);
    await this.waitPostgres(names, ctx.signal);
    try {
      return await fn();
    } finally {
      if (!wasRunning && !(await this.runtime.inspectContainer(names.synapse))?.State.Running) {
        await this.runtime.stopContainer(names.postgres, this.timeouts.stopSeconds);
      }
    }
  }

  /** Healthy by Docker's healthcheck, or by the same test (GET /health answering "OK") run now from the host. */
  waitSynapse(names: HomeserverNames, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const ready = async () => synapseHealthy(baseUrl(await this.synapseAddress(names), SYNAPSE_PORT), signal);
    return this.runtime.waitHealthy(names.synapse, { timeoutMs, ready, ...(signal ? { signal } : {}) });
  }

  /** Synapse's address on the customer's -hs network: where the proxy sends its traffic. */
  async synapseAddress(names: HomeserverNames, container = names.synapse): Promise<string> {
    const info = await this.runtime.inspectContainer(container);
    const ip = info?.NetworkSettings.Networks[names.hsNetwork]?.IPAddress;
    if (!ip) throw new Error(`container ${container} has no address on ${names.hsNetwork} (is it running?)`);
    return ip;
  }

  /** The proxy routes the server to `ip`, or answers "suspended" for it. */
  async applyProxy(record: HomeserverRecord, ip: string, log: Logger): Promise<void> {
    if (!this.options.proxy) {
      log.warn("no proxy configured: the homeserver is not routed");
      return;
    }
    if (record.suspended) await this.options.proxy.suspend(servedHostOf(record));
    else await this.options.proxy.route(servedHostOf(record), { host: ip, port: SYNAPSE_PORT }, { maxBodyBytes: settingsOf(record).maxUploadMiB * MiB });
  }

  async runningResult(record: HomeserverRecord, names: HomeserverNames, ip: string, signal: AbortSignal): Promise<RunningResult> {
    const [synapse, postgres] = await Promise.all([this.runtime.inspectContainer(names.synapse), this.runtime.inspectContainer(names.postgres)]);
    if (!synapse || !postgres) throw new Error(`the containers of ${record.serverId} vanished`);
    return {
      serverId: record.serverId,
      serverName: record.serverName,
      state: "running",
      synapseVersion: await serverVersion(baseUrl(ip, SYNAPSE_PORT), signal),
      image: synapse.Config.Image,
      ipAddress: ip,
      containers: { synapse: { name: names.synapse, id: synapse.Id }, postgres: { name: names.postgres, id: postgres.Id } },
    };
  }

  /**
   * The server's storage quota made, mounted and sized to the plan's storage (storage-quota.ts),
   * before anything writes to its directory: the containers must see the quota's filesystem, never
   * the directory beneath. A change the kernel makes only unmounted runs with the containers
   * stopped (started again after, PostgreSQL first); so does moving the data of a server from
   * before quotas onto one (mounting over it would hide it).
   */
  async ensureQuota(storageGiB: number, names: HomeserverNames, paths: HomeserverPaths, ctx: OperationContext, log: Logger): Promise<QuotaOutcome> {
    const quota = { image: paths.storageImage, mountpoint: paths.root };
    const bytes = storageGiB * GiB;
    const made = existsSync(quota.image) || (await mountedDevice(quota.mountpoint)) !== undefined;
    if (!made && this.options.allowNoStorageQuota) {
      log.warn("NO STORAGE QUOTA for this homeserver (--allow-no-storage-quota, development only): it can fill the host's disk");
      return "no quota";
    }
    if (!made && process.getuid?.() !== 0) {
      throw new Error(
        "storage quotas need root (a loop-mounted filesystem per homeserver): run the agent as root, or with --allow-no-storage-quota in development",
      );
    }
    if (bytes < MIN_STORAGE_QUOTA_BYTES) {
      throw new QuotaTooSmallError(
        `the plan's storage (${storageGiB} GiB) is below the smallest quota a homeserver runs in (${MIN_STORAGE_QUOTA_BYTES / MiB} MiB)`,
      );
    }
    if (!made && hasData(quota.mountpoint)) {
      log.warn("this homeserver's data predates storage quotas: moving it onto its quota (its containers stopped for the copy)", { dataDir: paths.root });
      await migrateIntoStorageQuota(quota, bytes, this.whileStopped(names, ctx));
      return "moved onto a quota";
    }
    return ensureStorageQuota(quota, bytes, this.whileStopped(names, ctx));
  }

  /** Stops Synapse then PostgreSQL for `change`; starts again those that ran (PostgreSQL first, each healthy) whatever happened. */
  whileStopped(names: HomeserverNames, ctx: OperationContext): WhileStopped {
    return async (change) => {
      const running = new Set<string>();
      for (const name of [names.synapse, names.postgres]) {
        if ((await this.runtime.inspectContainer(name))?.State.Running) running.add(name);
        await this.runtime.stopContainer(name, this.timeouts.stopSeconds);
      }
      try {
        await change();
      } finally {
        if (running.has(names.postgres)) {
          await this.runtime.startContainer(names.postgres);
          await this.waitPostgres(names, ctx.signal);
        }
        if (running.has(names.synapse)) {
          await this.runtime.startContainer(names.synapse);
          await this.waitSynapse(names, this.timeouts.synapseHealthyMs, ctx.signal);
        }
      }
    };
  }

  /**
   * An upgrade interrupted by a crash leaves "<name>-synapse-previous" behind:
   * if the record still says "trying", the candidate is dropped and the
   * previous container restored (stopped: the caller starts what it needs);
   * if the upgrade had been committed, the leftover previous container goes.
   */
  async recoverInterruptedUpgrade(record: HomeserverRecord, names: HomeserverNames, log: Logger): Promise<void> {
    const previous = await this.runtime.inspectContainer(names.synapsePrevious);
    if (previous && !record.upgrade) {
      await this.runtime.removeContainer(names.synapsePrevious, { force: true });
      return;
    }
    if (!record.upgrade) return;
    if (previous) {
      log.warn("an interrupted upgrade is rolled back", { from: record.upgrade.from, to: record.upgrade.to });
      await this.runtime.removeContainer(names.synapse, { force: true });
      await this.runtime.renameContainer(names.synapsePrevious, names.synapse);
    }
    const { upgrade: _gone, ...rest } = record;
    this.records.write(rest);
  }
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** The smallest storage quota: PostgreSQL and Synapse's schema take ~55 MiB before the first message. */
export const MIN_STORAGE_QUOTA_BYTES = 256 * MiB;

/** What happened to a server's storage quota: changed as storage-quota.ts says, its data from before quotas moved onto one, or none (--allow-no-storage-quota). */
export type QuotaOutcome = QuotaChange | "moved onto a quota" | "no quota";

/** The settings a server runs with: its owner's, or the defaults for a record from before settings existed. */
export function settingsOf(record: HomeserverRecord): HomeserverSettings {
  return record.settings ?? DEFAULT_HOMESERVER_SETTINGS;
}

/** A directory with anything in it (a missing one has nothing). */
function hasData(dir: string): boolean {
  try {
    return readdirSync(dir).length > 0;
  } catch {
    return false;
  }
}

function stepper(ctx: OperationContext, log: Logger): Step {
  return (progress, message) => {
    ctx.signal.throwIfAborted();
    ctx.progress(progress, message);
    log.info(message, { progress });
  };
}
