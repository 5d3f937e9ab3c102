// The homeserver lifecycle on one host: provision, stop/start, suspend/resume,
// upgrade with automatic rollback, the admin password. Every operation
// converges: rerun after a crash at any point, it finishes the job instead of
// duplicating or breaking anything (containers, networks and rules are found by
// name and compared; secrets are made once; an interrupted upgrade is rolled
// back before anything else happens to the server).
import { createReadStream, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Readable } from "node:stream";
import type Docker from "dockerode";
import { errorMessage, silentLogger, type Logger } from "../log.ts";
import type { HomeserverFirewall } from "../network/firewall.ts";
import { localMediaFiles, DUMP_FILE, type ArchiveFile } from "../backup/archive.ts";
import { backupStream, restoreStream } from "../backup/backup.ts";
import type { UploadResult } from "../backup/transfer.ts";
import { ContainerFailedError, delay, type DockerRuntime, type ExecResult, type StreamingExec } from "../runtime/docker.ts";
import {
  HOMESERVER_CONFIG_FILE,
  LOG_CONFIG_FILE,
  MEDIA_STORE_DIR,
  SYNAPSE_PORT,
  renderHomeserverConfig,
  renderLogConfig,
} from "./config.ts";
import {
  assertNoDockerSocket,
  postgresContainer,
  POSTGRES_READY_TEST,
  splitResources,
  synapseContainer,
  STOP_TIMEOUT_SECONDS,
  type ContainerSpecInput,
  type HealthcheckOverride,
  type PlanResources,
} from "./containers.ts";
import {
  HOMESERVER_KIND,
  KIND_LABEL,
  SPEC_HASH_LABEL,
  WORKLOAD_LABEL,
  homeserverNames,
  homeserverPaths,
  restoreStaging,
  type HomeserverNames,
  type HomeserverPaths,
} from "./names.ts";
import type { HomeserverProxy } from "./proxy.ts";
import { HomeserverRecords, type HomeserverRecord } from "./records.ts";
import { dropReplaced, prepareRestoredTree, restoredFiles, swapBack, swapIn } from "./restore-files.ts";
import {
  POSTGRES_DB,
  POSTGRES_USER,
  ensureDataDirs,
  ensureSecrets,
  ensureSigningKey,
  existingOwner,
  randomSecret,
  SECRET_FILES,
  signingKeyFileName,
  writeOwnedFile,
  type HomeserverSecrets,
} from "./secrets.ts";
import { baseUrl, logout, registerWithSharedSecret, serverVersion, synapseHealthy, waitForClientApi } from "./synapse-api.ts";
import { UidAllocator, type UidRange } from "./uids.ts";

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
  uidRange?: UidRange;
  /** Labels added to every container and network (tests mark their run). */
  extraLabels?: Record<string, string>;
  /** The first admin's localpart (default "admin"). */
  adminLocalpart?: string;
  /** Source of the admin's throwaway password (tests observe it to prove it leaks nowhere). */
  randomPassword?: () => string;
}

/** What an operation needs of its job (a JobContext fits). */
export interface OperationContext {
  dataRoot: string;
  signal: AbortSignal;
  progress(progress: number, message?: string): void;
  log?: Logger;
}

export interface ProvisionSpec {
  serverId: string;
  serverName: string;
  publicBaseUrl: string;
  resources: PlanResources;
  images: { synapse: string; postgres: string };
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

export interface ProvisionResult extends RunningResult {
  adminUserId: string;
}

export class HomeserverNotFound extends Error {
  override name = "HomeserverNotFound";
}

class PostgresNotReady extends Error {
  override name = "PostgresNotReady";
}

const BCRYPT_HASH = /^\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}$/;
const USER_ID = /^@[a-z0-9._=\-/+]+:[A-Za-z0-9.-]+(:\d+)?$/;

export class HomeserverManager {
  private readonly o: HomeserverManagerOptions;
  private readonly runtime: DockerRuntime;
  private readonly uids: UidAllocator;
  readonly records: HomeserverRecords;
  private readonly timeouts: Timeouts;
  private readonly log: Logger;
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(options: HomeserverManagerOptions) {
    this.o = options;
    this.runtime = options.runtime;
    this.uids = new UidAllocator(options.stateDir, options.uidRange);
    this.records = new HomeserverRecords(options.stateDir);
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.log = options.log ?? silentLogger;
  }

  /** Operations on one server run one at a time (a stop arriving mid-provision waits). */
  private serialised<T>(serverId: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(serverId) ?? Promise.resolve();
    const next = previous.then(fn, fn);
    const settled = next.catch(() => undefined);
    this.locks.set(serverId, settled);
    void settled.then(() => {
      if (this.locks.get(serverId) === settled) this.locks.delete(serverId);
    });
    return next;
  }

  private labels(serverId: string): Record<string, string> {
    return { ...this.o.extraLabels, [WORKLOAD_LABEL]: serverId, [KIND_LABEL]: HOMESERVER_KIND };
  }

  private requireRecord(serverId: string): HomeserverRecord {
    const record = this.records.read(serverId);
    if (!record) throw new HomeserverNotFound(`homeserver ${serverId} is not provisioned on this host`);
    return record;
  }

  private specInput(record: HomeserverRecord, names: HomeserverNames, paths: HomeserverPaths, role: "synapse" | "postgres", image: string): ContainerSpecInput {
    return {
      names,
      paths,
      serverName: record.serverName,
      uid: record.uid,
      image,
      resources: splitResources(record.resources)[role],
      healthcheck: this.o.healthcheck,
      extraLabels: this.o.extraLabels,
    };
  }

  // ---------- provision ----------

  provision(spec: ProvisionSpec, ctx: OperationContext): Promise<ProvisionResult> {
    return this.serialised(spec.serverId, async () => {
      const log = (ctx.log ?? this.log).child({ serverId: spec.serverId });
      const step = stepper(ctx, log);
      const names = homeserverNames(spec.serverId);
      const paths = homeserverPaths(ctx.dataRoot, spec.serverId);
      const existing = this.records.read(spec.serverId);
      if (existing && existing.serverName !== spec.serverName) {
        throw new Error(`homeserver ${spec.serverId} runs here as ${existing.serverName}; its server name cannot change to ${spec.serverName}`);
      }

      step(0.02, "allocating the server's uid and data directories");
      const uid = this.uids.allocate(spec.serverId, existingOwner(paths));
      ensureDataDirs(paths, uid);

      // An upgrade replaced the Synapse image: a repeated provision keeps it.
      const images = { synapse: existing?.images.synapse ?? spec.images.synapse, postgres: existing?.images.postgres ?? spec.images.postgres };
      step(0.05, `checking images ${images.postgres} and ${images.synapse}`);
      await this.runtime.ensureImage(images.postgres, ctx.signal);
      await this.runtime.ensureImage(images.synapse, ctx.signal);

      step(0.08, "secrets and signing key");
      const secrets = ensureSecrets(paths, uid);
      ensureSigningKey(paths, spec.serverName, uid);
      let record = this.records.write({
        serverId: spec.serverId,
        serverName: spec.serverName,
        publicBaseUrl: spec.publicBaseUrl,
        uid,
        images,
        resources: spec.resources,
        suspended: existing?.suspended ?? false,
        ...(existing?.adminUserId ? { adminUserId: existing.adminUserId } : {}),
        ...(existing?.upgrade ? { upgrade: existing.upgrade } : {}),
      });
      ctx.signal.throwIfAborted();

      step(0.12, "networks and firewall rules");
      await this.ensureNetworking(names, spec.serverId);

      const configChanged = await this.writeSynapseConfig(record, names, paths, secrets);
      await this.recoverInterruptedUpgrade(record, names, log);
      record = this.requireRecord(spec.serverId);
      ctx.signal.throwIfAborted();

      step(0.2, "starting PostgreSQL");
      await this.ensurePostgres(record, names, paths, ctx, log);

      step(0.45, "starting Synapse");
      await this.ensureSynapse(record, names, paths, record.images.synapse, { restartIfRunning: configChanged }, ctx);
      const ip = await this.synapseAddress(names);
      const base = baseUrl(ip, SYNAPSE_PORT);
      step(0.75, "checking Synapse's client API");
      await waitForClientApi(base, this.timeouts.clientApiMs, ctx.signal);

      step(0.8, "creating the admin account");
      const adminUserId = await this.ensureAdmin(record, secrets, base, ctx.signal, log);
      record = this.records.write({ ...record, adminUserId });

      step(0.9, record.suspended ? "proxy: suspended" : "routing the proxy");
      await this.applyProxy(record, ip, log);

      const result = await this.runningResult(record, names, ip, ctx.signal);
      step(1, `running Synapse ${result.synapseVersion}`);
      return { ...result, adminUserId };
    });
  }

  /** Both networks exist (the -db one internal, with fixed bridge names) and the firewall rules are in place. */
  private async ensureNetworking(names: HomeserverNames, serverId: string): Promise<void> {
    const labels = this.labels(serverId);
    await this.runtime.ensureNetwork(names.dbNetwork, { internal: true, bridgeName: names.dbBridge, labels });
    await this.runtime.ensureNetwork(names.hsNetwork, { internal: false, bridgeName: names.hsBridge, labels });
    const db = await this.runtime.inspectNetwork(names.dbNetwork);
    const hs = await this.runtime.inspectNetwork(names.hsNetwork);
    if (!db || !hs) throw new Error(`the networks of ${serverId} vanished while being set up`);
    if (this.o.firewall) {
      await this.o.firewall.ensure({
        shortId: names.shortId,
        tag: names.firewallTag,
        hsBridge: hs.bridge,
        dbBridge: db.bridge,
        dockerSubnets: await this.runtime.networkSubnets(),
      });
    } else {
      this.log.warn("no firewall configured: this homeserver's containers are NOT isolated (development only)", { serverId });
    }
  }

  /** homeserver.yaml and log.config (0600, the server's uid); returns whether anything changed. */
  private async writeSynapseConfig(record: HomeserverRecord, names: HomeserverNames, paths: HomeserverPaths, secrets: HomeserverSecrets): Promise<boolean> {
    const split = splitResources(record.resources);
    const config = renderHomeserverConfig({
      serverName: record.serverName,
      publicBaseUrl: record.publicBaseUrl,
      postgresHost: names.postgres,
      postgresUser: POSTGRES_USER,
      postgresDb: POSTGRES_DB,
      secrets,
      signingKeyFile: signingKeyFileName(record.serverName),
      synapseMemoryMiB: split.synapse.memoryMiB,
      dockerSubnets: await this.runtime.networkSubnets(),
      ...(this.o.trustedKeyServers ? { trustedKeyServers: this.o.trustedKeyServers } : {}),
    });
    const a = writeOwnedFile(join(paths.synapse, HOMESERVER_CONFIG_FILE), config, record.uid);
    const b = writeOwnedFile(join(paths.synapse, LOG_CONFIG_FILE), renderLogConfig(), record.uid);
    return a || b;
  }

  /**
   * Creates the container unless one with the same spec exists (a changed spec,
   * e.g. a new plan, replaces it; data lives in bind mounts), and connects it
   * to `extraNetworks`. Returns whether it was created.
   */
  private async ensureContainer(options: Docker.ContainerCreateOptions, extraNetworks: string[]): Promise<boolean> {
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

  private async psql(names: HomeserverNames, sql: string, timeoutMs = 60_000, database = POSTGRES_DB): Promise<ExecResult> {
    return this.runtime.exec(
      names.postgres,
      ["psql", "-h", "/run/postgresql", "-U", POSTGRES_USER, "-d", database, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"],
      { stdin: sql, env: ["PGPASSFILE=/run/secrets/pgpass"], timeoutMs },
    );
  }

  /**
   * PostgreSQL running, healthy and letting Synapse's user in. A data directory
   * whose first initialisation never finished (no .postgres-initialised marker:
   * the agent or host died during initdb) cannot hold customer data (Synapse
   * starts only after the marker is written), so it is emptied and initialised again.
   */
  private async ensurePostgres(record: HomeserverRecord, names: HomeserverNames, paths: HomeserverPaths, ctx: OperationContext, log: Logger): Promise<void> {
    const spec = postgresContainer(this.specInput(record, names, paths, "postgres", record.images.postgres));
    for (let attempt = 1; ; attempt++) {
      await this.ensureContainer(spec, []);
      await this.runtime.startContainer(names.postgres);
      try {
        await this.waitPostgres(names, ctx.signal);
        await this.checkDatabase(names, ctx.signal);
        break;
      } catch (error) {
        const retriable = error instanceof ContainerFailedError || error instanceof PostgresNotReady;
        if (attempt === 1 && retriable && !existsSync(paths.postgresInitialised)) {
          log.warn("PostgreSQL's first initialisation did not finish before (interrupted): initialising it again from an empty data directory", {
            error: errorMessage(error),
          });
          // Its container is gone and no other mounts postgres/: nothing of the tenant's can swap a link in while this deletes.
          await this.runtime.removeContainer(names.postgres, { force: true });
          for (const entry of readdirSync(paths.postgres)) rmSync(join(paths.postgres, entry), { recursive: true, force: true });
          continue;
        }
        throw error;
      }
    }
    if (!existsSync(paths.postgresInitialised)) writeFileSync(paths.postgresInitialised, `${new Date().toISOString()}\n`, { mode: 0o600 });
  }

  /** Synapse's user can log in to its database; transient states (starting up, crash recovery) are waited out for a while. */
  private async checkDatabase(names: HomeserverNames, signal: AbortSignal): Promise<void> {
    const started = Date.now();
    for (;;) {
      const check = await this.psql(names, "SELECT 1;");
      if (check.exitCode === 0) return;
      const why = check.stderr.trim().slice(0, 300);
      if (!/starting up|recovery mode|shutting down|not yet accepting/i.test(why) || Date.now() - started > 15_000) {
        throw new PostgresNotReady(`PostgreSQL does not let Synapse's user in: ${why}`);
      }
      await delay(1_000, signal);
    }
  }

  private async ensureSynapse(
    record: HomeserverRecord,
    names: HomeserverNames,
    paths: HomeserverPaths,
    image: string,
    options: { restartIfRunning: boolean },
    ctx: OperationContext,
  ): Promise<void> {
    const spec = synapseContainer(this.specInput(record, names, paths, "synapse", image));
    const created = await this.ensureContainer(spec, [names.dbNetwork]);
    const info = await this.runtime.inspectContainer(names.synapse);
    if (!created && options.restartIfRunning && info?.State.Running) {
      this.log.info("Synapse's configuration changed: restarting it", { serverId: record.serverId });
      await this.runtime.restartContainer(names.synapse, this.timeouts.stopSeconds);
    } else {
      await this.runtime.startContainer(names.synapse);
    }
    await this.waitSynapse(names, this.timeouts.synapseHealthyMs, ctx.signal);
  }

  /** Healthy by Docker's healthcheck, or by the same test (pg_isready over TCP) run now. */
  private waitPostgres(names: HomeserverNames, signal: AbortSignal): Promise<void> {
    const ready = async () => (await this.runtime.exec(names.postgres, POSTGRES_READY_TEST, { timeoutMs: 10_000 })).exitCode === 0;
    return this.runtime.waitHealthy(names.postgres, { timeoutMs: this.timeouts.postgresHealthyMs, signal, ready });
  }

  /**
   * PostgreSQL running for `fn` (a stopped or suspended server's is started
   * for it and stopped again afterwards, unless Synapse runs by then).
   */
  private async withPostgres<T>(names: HomeserverNames, ctx: OperationContext, fn: () => Promise<T>): Promise<T> {
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
  private waitSynapse(names: HomeserverNames, timeoutMs: number, signal?: AbortSignal): Promise<void> {
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

  /**
   * The first admin account, with a random password that is thrown away at
   * once (never logged, stored or returned): its owner sets a real one through
   * the control plane (homeserver.set_admin_password). The session the
   * registration opens is logged out.
   */
  private async ensureAdmin(record: HomeserverRecord, secrets: HomeserverSecrets, base: string, signal: AbortSignal, log: Logger): Promise<string> {
    const localpart = this.o.adminLocalpart ?? "admin";
    const outcome = await registerWithSharedSecret(
      base,
      secrets.registrationSharedSecret,
      { localpart, password: (this.o.randomPassword ?? (() => randomSecret(32)))(), admin: true, serverName: record.serverName },
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

  private async applyProxy(record: HomeserverRecord, ip: string, log: Logger): Promise<void> {
    if (!this.o.proxy) {
      log.warn("no proxy configured: the homeserver is not routed");
      return;
    }
    if (record.suspended) await this.o.proxy.suspend(record.serverName);
    else await this.o.proxy.route(record.serverName, { host: ip, port: SYNAPSE_PORT });
  }

  private async runningResult(record: HomeserverRecord, names: HomeserverNames, ip: string, signal: AbortSignal): Promise<RunningResult> {
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

  // ---------- stop / start / suspend / resume ----------

  stop(serverId: string, ctx: OperationContext): Promise<{ serverId: string; state: "stopped" }> {
    return this.serialised(serverId, async () => {
      const record = this.requireRecord(serverId);
      const names = homeserverNames(serverId);
      const step = stepper(ctx, (ctx.log ?? this.log).child({ serverId }));
      await this.recoverInterruptedUpgrade(record, names, this.log);
      step(0.1, "stopping Synapse");
      await this.runtime.stopContainer(names.synapse, this.timeouts.stopSeconds);
      step(0.5, "stopping PostgreSQL");
      await this.runtime.stopContainer(names.postgres, this.timeouts.stopSeconds);
      step(1, "stopped");
      return { serverId, state: "stopped" as const };
    });
  }

  start(serverId: string, ctx: OperationContext): Promise<RunningResult> {
    return this.serialised(serverId, () => this.startLocked(serverId, ctx, false));
  }

  private async startLocked(serverId: string, ctx: OperationContext, resuming: boolean): Promise<RunningResult> {
    let record = this.requireRecord(serverId);
    const names = homeserverNames(serverId);
    const log = (ctx.log ?? this.log).child({ serverId });
    const step = stepper(ctx, log);
    await this.recoverInterruptedUpgrade(record, names, log);
    record = this.requireRecord(serverId);
    for (const name of [names.postgres, names.synapse]) {
      if (!(await this.runtime.inspectContainer(name))) {
        throw new HomeserverNotFound(`container ${name} is missing: provision the homeserver again`);
      }
    }
    // Networks and rules may be gone after a host reboot (iptables rules are not persistent).
    await this.ensureNetworking(names, serverId);
    step(0.1, "starting PostgreSQL");
    await this.runtime.startContainer(names.postgres);
    await this.waitPostgres(names, ctx.signal);
    step(0.4, "starting Synapse");
    await this.runtime.startContainer(names.synapse);
    await this.waitSynapse(names, this.timeouts.synapseHealthyMs, ctx.signal);
    const ip = await this.synapseAddress(names);
    await waitForClientApi(baseUrl(ip, SYNAPSE_PORT), this.timeouts.clientApiMs, ctx.signal);
    if (resuming && record.suspended) record = this.records.write({ ...record, suspended: false });
    step(0.9, record.suspended ? "proxy: still suspended" : "routing the proxy");
    // The address may have changed while the container was stopped: route again.
    await this.applyProxy(record, ip, log);
    const result = await this.runningResult(record, names, ip, ctx.signal);
    step(1, "running");
    return result;
  }

  suspend(serverId: string, ctx: OperationContext): Promise<{ serverId: string; state: "suspended" }> {
    return this.serialised(serverId, async () => {
      let record = this.requireRecord(serverId);
      const names = homeserverNames(serverId);
      const log = (ctx.log ?? this.log).child({ serverId });
      const step = stepper(ctx, log);
      await this.recoverInterruptedUpgrade(record, names, log);
      record = this.records.write({ ...this.requireRecord(serverId), suspended: true });
      step(0.1, "proxy: answering \"suspended\"");
      // First the proxy, so that clients see "suspended" rather than a dead upstream.
      if (this.o.proxy) await this.o.proxy.suspend(record.serverName);
      else log.warn("no proxy configured: nothing answers \"suspended\"");
      step(0.3, "stopping Synapse");
      await this.runtime.stopContainer(names.synapse, this.timeouts.stopSeconds);
      step(0.6, "stopping PostgreSQL");
      await this.runtime.stopContainer(names.postgres, this.timeouts.stopSeconds);
      step(1, "suspended");
      return { serverId, state: "suspended" as const };
    });
  }

  resume(serverId: string, ctx: OperationContext): Promise<RunningResult> {
    return this.serialised(serverId, () => this.startLocked(serverId, ctx, true));
  }

  // ---------- resize (a plan change) ----------

  /**
   * Gives the homeserver's containers a new plan's limits in place (no restart)
   * and records them, so that a later provisioning creates its containers with
   * them. PostgreSQL's memory settings (shared_buffers) follow when its
   * container is next created. Containers not created yet get them then.
   */
  resize(serverId: string, resources: PlanResources, ctx: OperationContext): Promise<{ serverId: string; resources: PlanResources }> {
    return this.serialised(serverId, async () => {
      this.records.write({ ...this.requireRecord(serverId), resources });
      const names = homeserverNames(serverId);
      const step = stepper(ctx, (ctx.log ?? this.log).child({ serverId }));
      const split = splitResources(resources);
      step(0.2, "PostgreSQL's limits");
      await this.runtime.updateContainerLimits(names.postgres, split.postgres);
      step(0.6, "Synapse's limits");
      await this.runtime.updateContainerLimits(names.synapse, split.synapse);
      step(1, `limits: ${resources.memoryMiB} MiB, ${resources.cpus} CPUs`);
      return { serverId, resources };
    });
  }

  // ---------- upgrade ----------

  /**
   * Replaces the Synapse container with one of `image` on the same data. If the
   * new one is not healthy (and answering) within the upgrade timeout, it is
   * removed and the previous container started again; the job then fails with
   * the reason. Synapse migrates its schema on start, so going back works as
   * long as the new version's schema stays compatible with the old (Synapse
   * guarantees that across adjacent releases); a real undo needs the
   * pre-upgrade backup (the backup issue).
   */
  upgrade(serverId: string, image: string, ctx: OperationContext): Promise<RunningResult & { previousImage: string }> {
    return this.serialised(serverId, async () => {
      let record = this.requireRecord(serverId);
      const names = homeserverNames(serverId);
      const paths = homeserverPaths(ctx.dataRoot, serverId);
      const log = (ctx.log ?? this.log).child({ serverId, image });
      const step = stepper(ctx, log);
      if (record.suspended) throw new Error(`homeserver ${serverId} is suspended: resume it before upgrading`);
      step(0.02, `checking image ${image}`);
      await this.runtime.ensureImage(image, ctx.signal);
      await this.recoverInterruptedUpgrade(record, names, log);
      record = this.requireRecord(serverId);
      if (!(await this.runtime.inspectContainer(names.synapse))) {
        throw new HomeserverNotFound(`container ${names.synapse} is missing: provision the homeserver again`);
      }
      await this.ensureNetworking(names, serverId);

      step(0.05, "making sure PostgreSQL runs");
      await this.runtime.startContainer(names.postgres);
      await this.waitPostgres(names, ctx.signal);

      const previousImage = record.images.synapse;
      record = this.records.write({ ...record, upgrade: { from: previousImage, to: image } });
      step(0.1, "stopping the current Synapse (kept for a rollback)");
      await this.runtime.stopContainer(names.synapse, this.timeouts.stopSeconds);
      await this.runtime.renameContainer(names.synapse, names.synapsePrevious);

      let ip: string;
      try {
        step(0.2, `starting Synapse from ${image}`);
        const spec = synapseContainer(this.specInput(record, names, paths, "synapse", image));
        await this.ensureContainer(spec, [names.dbNetwork]);
        await this.runtime.startContainer(names.synapse);
        // A new image is judged by its own healthcheck (Docker's verdict), which may test more than ours.
        await this.runtime.waitHealthy(names.synapse, { timeoutMs: this.timeouts.upgradeHealthyMs, signal: ctx.signal });
        ip = await this.synapseAddress(names);
        await waitForClientApi(baseUrl(ip, SYNAPSE_PORT), this.timeouts.clientApiMs, ctx.signal);
      } catch (error) {
        if (ctx.signal.aborted) throw error; // shutting down: the rerun rolls back (recoverInterruptedUpgrade)
        const reason = errorMessage(error);
        const logs = await this.runtime.logs(names.synapse, 20).catch(() => "");
        log.warn("upgrade failed: rolling back", { error: reason, lastLogLines: logs.slice(-2000) });
        step(0.6, "the new Synapse failed: rolling back");
        try {
          await this.rollback(record, names, log);
          const rolledBack = this.requireRecord(serverId);
          await this.applyProxy(rolledBack, await this.synapseAddress(names), log);
        } catch (rollbackError) {
          throw new Error(`upgrade to ${image} failed: ${reason}; the ROLLBACK to ${previousImage} FAILED too: ${errorMessage(rollbackError)}`);
        }
        throw new Error(`upgrade to ${image} failed: ${reason}; rolled back to ${previousImage}, which is running again (data intact)`);
      }

      step(0.85, "new Synapse healthy: removing the previous container");
      const { upgrade: _done, ...rest } = record;
      record = this.records.write({ ...rest, images: { ...record.images, synapse: image } });
      await this.runtime.removeContainer(names.synapsePrevious, { force: true });
      await this.applyProxy(record, ip, log);
      const result = await this.runningResult(record, names, ip, ctx.signal);
      step(1, `running Synapse ${result.synapseVersion}`);
      return { ...result, previousImage };
    });
  }

  /** Removes a candidate Synapse and brings the previous container back, healthy. */
  private async rollback(record: HomeserverRecord, names: HomeserverNames, log: Logger): Promise<void> {
    await this.runtime.removeContainer(names.synapse, { force: true });
    if (await this.runtime.inspectContainer(names.synapsePrevious)) {
      await this.runtime.renameContainer(names.synapsePrevious, names.synapse);
    }
    const { upgrade: _gone, ...rest } = record;
    this.records.write(rest);
    await this.runtime.startContainer(names.synapse);
    await this.waitSynapse(names, this.timeouts.synapseHealthyMs);
    log.info("rolled back to the previous Synapse container", { image: record.upgrade?.from ?? record.images.synapse });
  }

  /**
   * An upgrade interrupted by a crash leaves "<name>-synapse-previous" behind:
   * if the record still says "trying", the candidate is dropped and the
   * previous container restored (stopped: the caller starts what it needs);
   * if the upgrade had been committed, the leftover previous container goes.
   */
  private async recoverInterruptedUpgrade(record: HomeserverRecord, names: HomeserverNames, log: Logger): Promise<void> {
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

  // ---------- admin password ----------

  /**
   * Writes a bcrypt hash (made by the control plane) as the admin's password,
   * straight into Synapse's database, and ends all of that user's sessions.
   * The SQL goes to psql on stdin, so the hash is in no command line. Synapse
   * caches access tokens in memory; when sessions existed, it is restarted so
   * that the deleted tokens stop working at once.
   */
  setAdminPassword(serverId: string, adminUserId: string, passwordHash: string, ctx: OperationContext): Promise<{ serverId: string; adminUserId: string; sessionsEnded: number }> {
    return this.serialised(serverId, async () => {
      const record = this.requireRecord(serverId);
      const names = homeserverNames(serverId);
      const log = (ctx.log ?? this.log).child({ serverId });
      const step = stepper(ctx, log);
      if (!BCRYPT_HASH.test(passwordHash)) throw new Error("the password hash is not a bcrypt hash");
      if (!USER_ID.test(adminUserId) || !adminUserId.endsWith(`:${record.serverName}`)) {
        throw new Error(`${adminUserId} is not a user of ${record.serverName}`);
      }
      if (record.adminUserId && record.adminUserId !== adminUserId) {
        throw new Error(`${adminUserId} is not this homeserver's admin account (${record.adminUserId})`);
      }
      step(0.1, "making sure PostgreSQL runs");
      const sessionsEnded = await this.withPostgres(names, ctx, async () => {
        step(0.3, "writing the password hash");
        const q = (s: string) => `'${s.replaceAll("'", "''")}'`;
        const sql = [
          "BEGIN;",
          `WITH u AS (UPDATE users SET password_hash = ${q(passwordHash)} WHERE name = ${q(adminUserId)} RETURNING 1) SELECT 'updated=' || count(*) FROM u;`,
          `WITH t AS (DELETE FROM access_tokens WHERE user_id = ${q(adminUserId)} RETURNING 1) SELECT 'tokens=' || count(*) FROM t;`,
          `WITH r AS (DELETE FROM refresh_tokens WHERE user_id = ${q(adminUserId)} RETURNING 1) SELECT 'refresh=' || count(*) FROM r;`,
          "COMMIT;",
          "",
        ].join("\n");
        const result = await this.psql(names, sql);
        if (result.exitCode !== 0) throw new Error(`updating the password in PostgreSQL failed: ${result.stderr.trim().slice(0, 500)}`);
        const counts = Object.fromEntries(
          result.stdout
            .split("\n")
            .map((line) => /^(\w+)=(\d+)$/.exec(line.trim()))
            .filter((m): m is RegExpExecArray => m !== null)
            .map((m) => [m[1]!, Number(m[2])]),
        );
        if (counts.updated !== 1) throw new Error(`${adminUserId} does not exist on ${record.serverName}`);
        const tokensDeleted = (counts.tokens ?? 0) + (counts.refresh ?? 0);
        if (tokensDeleted > 0 && (await this.runtime.inspectContainer(names.synapse))?.State.Running) {
          step(0.6, "restarting Synapse to forget the ended sessions");
          await this.runtime.restartContainer(names.synapse, this.timeouts.stopSeconds);
          await this.waitSynapse(names, this.timeouts.synapseHealthyMs, ctx.signal);
          const ip = await this.synapseAddress(names);
          await waitForClientApi(baseUrl(ip, SYNAPSE_PORT), this.timeouts.clientApiMs, ctx.signal);
          await this.applyProxy(this.requireRecord(serverId), ip, log);
        }
        return counts.tokens ?? 0;
      });
      step(1, "admin password set");
      return { serverId, adminUserId, sessionsEnded };
    });
  }

  // ---------- backup and restore ----------

  /**
   * A consistent snapshot, streamed: pg_dump (one transaction; one-time keys'
   * data left out, as Synapse's backup guide says), the local media, the
   * signing key, configuration and secrets → tar → zstd → age to the server's
   * recipient → `upload`. Nothing is held whole in memory or written to disk.
   * pg_dump failing part-way fails the archive, so the upload is aborted.
   */
  backup(
    serverId: string,
    job: { backupId: string; recipient: string },
    upload: (ciphertext: Readable) => Promise<UploadResult>,
    ctx: OperationContext,
  ): Promise<UploadResult & { serverId: string; backupId: string }> {
    return this.serialised(serverId, async () => {
      const record = this.requireRecord(serverId);
      const names = homeserverNames(serverId);
      const paths = homeserverPaths(ctx.dataRoot, serverId);
      const step = stepper(ctx, (ctx.log ?? this.log).child({ serverId, backupId: job.backupId }));
      step(0.05, "making sure PostgreSQL runs");
      const result = await this.withPostgres(names, ctx, async () => {
        step(0.1, "dumping the database, archiving, compressing, encrypting and uploading");
        const dump = await this.runtime.execStreaming(names.postgres, PG_DUMP, { env: ["PGPASSFILE=/run/secrets/pgpass"] });
        const files = snapshotFiles(record, paths);
        const ciphertext = backupStream({
          manifest: {
            format: 1,
            serverId,
            serverName: record.serverName,
            createdAt: new Date().toISOString(),
            synapseImage: record.images.synapse,
            postgresImage: record.images.postgres,
            entries: ["database", "synapse", "secrets"],
          },
          dump: checkedOutput(dump, "pg_dump"),
          files,
          recipient: job.recipient,
        });
        return upload(ciphertext);
      });
      step(1, `uploaded ${result.parts.length} part${result.parts.length === 1 ? "" : "s"}, ${result.size} bytes`);
      return { serverId, backupId: job.backupId, ...result };
    });
  }

  /**
   * Restores a backup of this server: decrypted and extracted into a staging
   * directory first (a wrong key, a corrupted or truncated backup fails here,
   * with the server untouched), the dump restored into a fresh database beside
   * the live one; only then is Synapse stopped, the databases swapped by name,
   * media, signing key and secrets put back, and Synapse started and checked.
   * If that fails, everything is swapped back and Synapse runs as before.
   */
  restore(
    serverId: string,
    job: { backupId: string; identity: string },
    download: () => Promise<Readable>,
    ctx: OperationContext,
  ): Promise<RunningResult & { backupId: string; restoredFrom: string }> {
    return this.serialised(serverId, async () => {
      let record = this.requireRecord(serverId);
      const names = homeserverNames(serverId);
      const paths = homeserverPaths(ctx.dataRoot, serverId);
      const log = (ctx.log ?? this.log).child({ serverId, backupId: job.backupId });
      const step = stepper(ctx, log);
      if (record.suspended) throw new Error(`homeserver ${serverId} is suspended: resume it before restoring`);
      await this.recoverInterruptedUpgrade(record, names, log);
      record = this.requireRecord(serverId);
      const staging = restoreStaging(paths, job.backupId);
      rmSync(staging, { recursive: true, force: true });
      mkdirSync(join(paths.root, "restore"), { mode: 0o700, recursive: true });

      step(0.05, "downloading, decrypting and unpacking the backup");
      const extracted = await restoreStream(await download(), job.identity, staging);
      try {
        if (extracted.manifest.serverName !== record.serverName) {
          throw new Error(`the backup is of ${extracted.manifest.serverName}, not ${record.serverName}: refusing to restore it here`);
        }
        prepareRestoredTree(staging, record.uid);
        const fresh = `${POSTGRES_DB}_restore_${job.backupId.replaceAll("-", "").slice(0, 12)}`;
        const previous = `${POSTGRES_DB}_before_${job.backupId.replaceAll("-", "").slice(0, 12)}`;

        step(0.4, "restoring the database into a fresh one beside the live one");
        await this.runtime.startContainer(names.postgres);
        await this.waitPostgres(names, ctx.signal);
        await this.admin(names, `DROP DATABASE IF EXISTS ${fresh};`);
        await this.admin(names, `CREATE DATABASE ${fresh} OWNER ${POSTGRES_USER} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C';`);
        try {
          const restore = await this.runtime.execStreaming(names.postgres, [...PG_RESTORE, `--dbname=${fresh}`], {
            stdin: createReadStream(join(staging, DUMP_FILE)),
            env: ["PGPASSFILE=/run/secrets/pgpass"],
          });
          for await (const _ of checkedOutput(restore, "pg_restore"));
          const truncated = await this.psql(names, "TRUNCATE e2e_one_time_keys_json;", 60_000, fresh);
          if (truncated.exitCode !== 0) throw new Error(`truncating one-time keys failed: ${truncated.stderr.trim().slice(0, 300)}`);
        } catch (error) {
          await this.admin(names, `DROP DATABASE IF EXISTS ${fresh};`).catch(() => undefined);
          throw error;
        }

        step(0.7, "stopping Synapse and swapping in the restored data");
        await this.runtime.stopContainer(names.synapse, this.timeouts.stopSeconds);
        const swap = restoredFiles(record.serverName, paths, staging);
        try {
          await this.admin(names, `ALTER DATABASE ${POSTGRES_DB} RENAME TO ${previous};`);
          await this.admin(names, `ALTER DATABASE ${fresh} RENAME TO ${POSTGRES_DB};`);
          swapIn(swap);
          step(0.8, "starting Synapse on the restored data");
          await this.runtime.startContainer(names.synapse);
          await this.waitSynapse(names, this.timeouts.synapseHealthyMs, ctx.signal);
          await waitForClientApi(baseUrl(await this.synapseAddress(names), SYNAPSE_PORT), this.timeouts.clientApiMs, ctx.signal);
        } catch (error) {
          if (ctx.signal.aborted) throw error;
          log.warn("the restored homeserver did not come up: putting the previous data back", { error: errorMessage(error) });
          await this.runtime.stopContainer(names.synapse, this.timeouts.stopSeconds);
          swapBack(swap);
          dropReplaced(staging);
          await this.admin(names, `ALTER DATABASE IF EXISTS ${POSTGRES_DB} RENAME TO ${fresh};`).catch(() => undefined);
          await this.admin(names, `ALTER DATABASE ${previous} RENAME TO ${POSTGRES_DB};`);
          await this.admin(names, `DROP DATABASE IF EXISTS ${fresh};`);
          await this.runtime.startContainer(names.synapse);
          await this.waitSynapse(names, this.timeouts.synapseHealthyMs, ctx.signal);
          throw new Error(`restoring backup ${job.backupId} failed: ${errorMessage(error)}; the previous data is back and running`);
        }

        step(0.9, "dropping the data the restore replaced");
        await this.admin(names, `DROP DATABASE IF EXISTS ${previous};`);
        dropReplaced(staging);
        const ip = await this.synapseAddress(names);
        await this.applyProxy(record, ip, log);
        const result = await this.runningResult(record, names, ip, ctx.signal);
        step(1, `restored from the backup of ${extracted.manifest.createdAt}`);
        return { ...result, backupId: job.backupId, restoredFrom: extracted.manifest.createdAt };
      } finally {
        rmSync(staging, { recursive: true, force: true });
      }
    });
  }

  /** SQL as Synapse's (owner) role, connected to the maintenance database: for CREATE/ALTER/DROP DATABASE. */
  private async admin(names: HomeserverNames, sql: string): Promise<void> {
    const result = await this.psql(names, sql, 120_000, "postgres");
    if (result.exitCode !== 0) throw new Error(`${sql.split(" ").slice(0, 3).join(" ")} failed: ${result.stderr.trim().slice(0, 300)}`);
  }

  // ---------- destroy ----------

  /**
   * Removes everything of a server from this host: its route, containers,
   * networks, firewall rules, data directory and record. Irreversible: the
   * caller makes sure a final backup exists first. Converges like the rest
   * (a rerun after a crash finishes the removal); its uid is never reused.
   */
  destroy(serverId: string, ctx: OperationContext): Promise<{ serverId: string; state: "deleted" }> {
    return this.serialised(serverId, async () => {
      const record = this.records.read(serverId);
      const names = homeserverNames(serverId);
      const log = (ctx.log ?? this.log).child({ serverId });
      const step = stepper(ctx, log);
      step(0.05, "removing the proxy route");
      if (record && this.o.proxy) await this.o.proxy.remove(record.serverName);
      step(0.2, "removing the containers");
      // Synapse first: PostgreSQL outlives its last client and shuts down cleanly.
      for (const name of [names.synapse, names.synapsePrevious, names.postgres]) {
        await this.runtime.stopContainer(name, this.timeouts.stopSeconds);
        await this.runtime.removeContainer(name, { force: true });
      }
      step(0.5, "removing the networks and firewall rules");
      await this.runtime.removeNetwork(names.hsNetwork);
      await this.runtime.removeNetwork(names.dbNetwork);
      await this.o.firewall?.remove({ shortId: names.shortId, tag: names.firewallTag });
      step(0.7, "destroying the data");
      // Only now that both containers are gone: nothing of the tenant's runs to swap a link in while this deletes.
      rmSync(homeserverPaths(ctx.dataRoot, serverId).root, { recursive: true, force: true });
      this.records.remove(serverId);
      step(1, "deleted");
      return { serverId, state: "deleted" as const };
    });
  }

  // ---------- after an agent or host restart ----------

  /**
   * Puts back what does not survive a reboot: firewall rules (iptables is not
   * persistent) and proxy routes (container addresses may change when Docker
   * restarts containers). For every server this agent provisioned.
   */
  async restoreHostState(log: Logger = this.log): Promise<void> {
    for (const serverId of this.listRecordIds()) {
      await this.serialised(serverId, () => this.restoreOne(serverId, log));
    }
  }

  private async restoreOne(serverId: string, log: Logger): Promise<void> {
    try {
      const record = this.requireRecord(serverId);
      const names = homeserverNames(serverId);
      if (!(await this.runtime.inspectNetwork(names.hsNetwork)) || !(await this.runtime.inspectNetwork(names.dbNetwork))) return;
      await this.ensureNetworking(names, serverId);
      const info = await this.runtime.inspectContainer(names.synapse);
      if (info?.State.Running) await this.applyProxy(record, await this.synapseAddress(names), log);
      else if (record.suspended && this.o.proxy) await this.o.proxy.suspend(record.serverName);
    } catch (error) {
      log.error("cannot restore a homeserver's firewall rules or route", { serverId, error: errorMessage(error) });
    }
  }

  listRecordIds(): string[] {
    try {
      return readdirSync(join(this.o.stateDir, "homeservers"))
        .filter((n) => n.endsWith(".json") && !n.startsWith("."))
        .map((n) => n.slice(0, -".json".length));
    } catch {
      return [];
    }
  }
}

const PG_DUMP = ["pg_dump", "--format=custom", "--exclude-table-data=e2e_one_time_keys_json", "-h", "/run/postgresql", "-U", POSTGRES_USER, "-d", POSTGRES_DB];
const PG_RESTORE = ["pg_restore", "--exit-on-error", "--no-owner", "--role", POSTGRES_USER, "-h", "/run/postgresql", "-U", POSTGRES_USER];

/** A command's output; at its end, its exit status is checked (a failure errors the stream that reads it). */
async function* checkedOutput(exec: StreamingExec, what: string): AsyncGenerator<Buffer> {
  yield* exec.stdout as AsyncIterable<Buffer>;
  const { exitCode, stderr } = await exec.finished;
  if (exitCode !== 0) throw new Error(`${what} exited with ${exitCode}: ${stderr.trim().slice(-500)}`);
}

/** What a backup holds besides the dump: signing key, configuration, secrets, and the local media (not remote caches). */
async function* snapshotFiles(record: HomeserverRecord, paths: HomeserverPaths): AsyncGenerator<ArchiveFile> {
  for (const name of [signingKeyFileName(record.serverName), HOMESERVER_CONFIG_FILE, LOG_CONFIG_FILE]) {
    yield { name: `synapse/${name}`, path: join(paths.synapse, name) };
  }
  for (const name of Object.values(SECRET_FILES)) yield { name: `secrets/${name}`, path: join(paths.secrets, name) };
  yield* localMediaFiles(join(paths.synapse, MEDIA_STORE_DIR), `synapse/${MEDIA_STORE_DIR}`);
}

function stepper(ctx: OperationContext, log: Logger): (progress: number, message: string) => void {
  return (progress, message) => {
    ctx.signal.throwIfAborted();
    ctx.progress(progress, message);
    log.info(message, { progress });
  };
}
