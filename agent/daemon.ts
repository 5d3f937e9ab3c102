// The daemon `berth-agent run` starts: config and credentials wired to the
// connection ⇄ job runner (journal, handlers), the homeservers, the proxy and
// the reporters. It owns every timer they run — journal pruning, storage
// measurement, usage sampling, inventory and certificate reports, proxy
// repair, and (through the connection) heartbeats and reconnects — and stop()
// ends all of them.
import type { KeyObject } from "node:crypto";
import { join } from "node:path";
import type { CertificateReport } from "../protocol/messages.ts";
import type { AgentConfig } from "./config.ts";
import { standInReach } from "./checks/delegation.ts";
import { AgentConnection } from "./connection.ts";
import { detectDiskEncryption } from "./disk-encryption.ts";
import { builtinHandlers, homeserverHandlers } from "./handlers/index.ts";
import type { LocalFederationOptions } from "./homeserver/local-federation.ts";
import { homeserversDir } from "./homeserver/names.ts";
import { WorkloadInventory } from "./inventory.ts";
import { JobRunner } from "./jobs.ts";
import { Journal } from "./journal.ts";
import type { Logger } from "./log.ts";
import { ContainerStatsCollector, UsageReporter, collectHostUsage, sampler } from "./metrics.ts";
import { IptablesFirewall } from "./network/firewall.ts";
import { CaddyProxy } from "./proxy/caddy.ts";
import { adminPortOf } from "./proxy/caddy-config.ts";
import { DockerRuntime } from "./runtime/docker.ts";
import { StorageMeter } from "./storage.ts";
import { agentVersion } from "./version.ts";

const JOURNAL_PRUNE_EVERY_MS = 6 * 60 * 60 * 1000;
/** How often the homeserver containers' states are read again (crashes between jobs). */
const INVENTORY_REFRESH_MS = 60_000;
/** How often a restarted Caddy is noticed and re-configured. */
const PROXY_REPAIR_EVERY_MS = 60_000;
/** How often served certificates are checked and reported (expiry is days away; hourly is plenty). */
const CERTIFICATE_CHECK_EVERY_MS = 60 * 60_000;
/** When served certificates are first checked after start. */
const FIRST_CERTIFICATE_CHECK_MS = 30_000;
/** How often each homeserver's data directory is measured (also whenever homeservers come or go). */
const STORAGE_MEASURE_EVERY_MS = 5 * 60_000;

export interface DaemonOptions {
  config: AgentConfig;
  privateKey: KeyObject;
  /** --allow-unencrypted-data-root: customer data on a data root that is not on dm-crypt (development only). */
  allowUnencrypted: boolean;
  /** --allow-no-storage-quota: homeservers without a storage quota where loop mounts are impossible (development only). */
  allowNoStorageQuota?: boolean;
  /** --allow-local-federation: this host's homeservers federate with each other through the proxy (development only). */
  localFederation?: LocalFederationOptions;
  /** --upkeep-image: the tool image homeserver.upkeep runs the state compressor in (default: DEFAULT_UPKEEP_IMAGE). */
  upkeepImage?: string;
  log: Logger;
}

export interface Daemon {
  /** Settles with the exit code once the daemon has stopped: by stop(), or by a close that retrying cannot fix. */
  readonly exited: Promise<number>;
  /**
   * Takes no more jobs, gives running ones `graceMs` to finish (the rest are handed back),
   * stops every timer and closes the connection. Called again, returns the first call's promise.
   */
  stop(exitCode: number, why: string, graceMs: number): Promise<number>;
  /** Aborts running jobs now (a second signal). */
  abortJobs(): void;
}

/** The timers the daemon runs and the stops of the parts that run their own: stopAll() ends every one. */
class OwnedTimers {
  private readonly stops: Array<() => void> = [];

  every(ms: number, fn: () => void): void {
    const timer = setInterval(fn, ms);
    timer.unref();
    this.stops.push(() => clearInterval(timer));
  }

  after(ms: number, fn: () => void): void {
    const timer = setTimeout(fn, ms);
    timer.unref();
    this.stops.push(() => clearTimeout(timer));
  }

  /** A part that runs its own timer, and how to stop it. */
  own(stop: () => void): void {
    this.stops.push(stop);
  }

  stopAll(): void {
    for (const stop of this.stops.splice(0)) stop();
  }
}

export async function startDaemon(options: DaemonOptions): Promise<Daemon> {
  const { config, privateKey, allowUnencrypted, log } = options;
  const timers = new OwnedTimers();
  const diskEncryption = () => detectDiskEncryption(config.dataRoot, { allowUnencrypted });
  logEncryption(diskEncryption(), options);
  if (options.allowNoStorageQuota) {
    log.warn(
      "--allow-no-storage-quota was given: homeservers provisioned now get NO storage quota and can fill the host's disk " +
        "(those that have one keep it). Development only.",
      { dataRoot: config.dataRoot },
    );
  }
  if (options.localFederation) {
    log.warn(
      "--allow-local-federation was given: homeservers resolve this host's homeserver names to the host, may connect to it, " +
        "and trust the proxy's internal CA for federation. Development only.",
      { caRootFile: options.localFederation.caRootFile },
    );
  }

  if (config.proxy?.standInDomains) {
    log.warn(
      "proxy.standInDomains is set: the proxy stands in for these customers' domains, and delegation checks reach only them, at the proxy. Development only.",
      { domains: Object.keys(config.proxy.standInDomains) },
    );
  }

  const journal = new Journal(join(config.stateDir, "jobs"), { log });
  const pruned = journal.prune();
  if (pruned) log.info("pruned old job journal entries", { count: pruned });
  timers.every(JOURNAL_PRUNE_EVERY_MS, () => journal.prune());

  // The connection is created below; the runner and handlers only send through it later.
  let connection: AgentConnection | undefined;
  const send: ConstructorParameters<typeof JobRunner>[0]["send"] = (message) => connection?.send(message);
  const docker = new DockerRuntime({ pullImages: config.pullImages, log });
  // With a host namespace (several agents on one Docker Engine), each sees and touches only its own containers.
  const { hostNamespace } = config;
  const workloads = new WorkloadInventory({ dataRoot: config.dataRoot, runtime: docker, hostNamespace, log });
  await workloads.refresh();
  const inventory = () => workloads.list();
  const proxy = config.proxy ? new CaddyProxy({ config: config.proxy, stateDir: config.stateDir, log }) : undefined;
  // Certificates ride along with the inventory, so the control plane sees expiry coming.
  let certificates: CertificateReport[] = [];
  const sendInventory = () => send({ type: "inventory", workloads: inventory(), ...(proxy ? { certificates } : {}) });
  const storage = new StorageMeter({ workloadsDir: homeserversDir(config.dataRoot), everyMs: STORAGE_MEASURE_EVERY_MS, log });
  storage.start();
  timers.own(() => storage.stop());
  const refreshInventory = () => {
    void workloads.refresh().then(sendInventory, () => sendInventory());
    void storage.measure();
  };
  if (proxy) {
    await proxy.ensureBaseConfig().catch((error: unknown) => log.warn("Caddy is not configured yet; retrying in the background", { error: String(error) }));
    timers.own(proxy.keepConfigured(PROXY_REPAIR_EVERY_MS));
  } else {
    log.warn("no proxy configured: homeservers will run but not be reachable over HTTPS");
  }
  const homeservers = homeserverHandlers({
    stateDir: config.stateDir,
    hostNamespace,
    runtime: docker,
    // Customers' containers may reach the host only on the HTTPS ports (to federate with neighbours through Caddy).
    firewall: new IptablesFirewall({ log, ...(proxy ? { hostTcpPorts: [proxy.config.httpsPort, 8448] } : {}) }),
    ...(proxy ? { proxy } : {}),
    // Development: the neighbours are the only servers to federate with, and they serve their own keys.
    ...(options.localFederation ? { localFederation: options.localFederation, trustedKeyServers: [] } : {}),
    ...(options.allowNoStorageQuota ? { allowNoStorageQuota: true } : {}),
    log,
    diskEncryption,
    onInventoryChanged: refreshInventory,
    agentIdentity: { hostId: config.hostId, privateKey },
    ...(options.upkeepImage ? { upkeepImage: options.upkeepImage } : {}),
    hostChecks: proxy
      ? {
          certificates: { proxy: { host: proxy.config.connectHost, port: proxy.config.httpsPort }, trustedRoots: () => proxy.servedCertificateRoots() },
          privatePorts: [adminPortOf(proxy.config.adminAddress)].flatMap((port) => (port ? [{ what: "the proxy's admin API", port }] : [])),
          ...(proxy.config.standInDomains ? { delegation: () => standInReach(proxy) } : {}),
        }
      : { privatePorts: [] },
  });
  void homeservers.manager.restoreHostState(config.dataRoot, log);
  timers.every(INVENTORY_REFRESH_MS, () => {
    void workloads.refresh().then((changed) => {
      if (changed) sendInventory();
    });
  });
  if (proxy) {
    const checkCertificates = async () => {
      certificates = await proxy.certificates().catch(() => certificates);
      sendInventory();
    };
    timers.every(CERTIFICATE_CHECK_EVERY_MS, () => void checkCertificates());
    timers.after(FIRST_CERTIFICATE_CHECK_MS, () => void checkCertificates());
  }

  const runner = new JobRunner({
    journal,
    handlers: builtinHandlers({ diskEncryption, onInventoryChanged: sendInventory, homeservers: homeservers.handlers }),
    send,
    dataRoot: config.dataRoot,
    log,
    maxConcurrent: config.maxConcurrentJobs,
  });

  const containers = new ContainerStatsCollector({ hostNamespace, log });
  const usage = new UsageReporter({
    collect: sampler(
      collectHostUsage,
      () => containers.collect(),
      () => storage.latest(),
    ),
    send,
    isReady: () => connection?.isReady() ?? false,
    intervalMs: config.usageIntervalMs,
    log,
  });

  let stopping: Promise<number> | undefined;
  let resolveExit: (code: number) => void = () => {};
  const exited = new Promise<number>((resolve) => (resolveExit = resolve));

  const stop = (exitCode: number, why: string, graceMs: number): Promise<number> => {
    stopping ??= (async () => {
      log.info("stopping", { reason: why, graceMs });
      timers.stopAll();
      const report = await runner.shutdown(graceMs);
      if (report.handedBack.length || report.dropped.length) {
        log.warn("unfinished jobs handed back to the control plane", { handedBack: report.handedBack, dropped: report.dropped });
      }
      // Last: results of the jobs that finished in the grace period go out first.
      await connection?.close(1001, "agent shutting down");
      log.info("stopped", { exitCode });
      resolveExit(exitCode);
      return exitCode;
    })();
    return stopping;
  };

  connection = new AgentConnection({
    url: config.connectUrl,
    hostId: config.hostId,
    privateKey,
    agentVersion: agentVersion(),
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    reconnectBaseMs: config.reconnectBaseMs,
    reconnectMaxMs: config.reconnectMaxMs,
    diskEncryption,
    publicAddresses: config.publicAddresses,
    inventory,
    onJob: (job) => runner.handle(job),
    onWelcome: (welcome) => {
      usage.setIntervalMs(welcome.usageIntervalMs);
      usage.flush();
    },
    onFatal: (exitCode, reason) => {
      runner.abortAll();
      void stop(exitCode, reason, 0);
    },
    log,
  });
  if (!/^(wss|https):/.test(config.connectUrl)) {
    log.warn("the connect URL is not TLS (ws://): use wss:// outside development", { url: config.connectUrl });
  }

  connection.start();
  usage.start();
  timers.own(() => usage.stop());
  return { exited, stop, abortJobs: () => runner.abortAll() };
}

function logEncryption(encryption: ReturnType<typeof detectDiskEncryption>, { config, allowUnencrypted, log }: DaemonOptions): void {
  if (encryption.encrypted) {
    log.info("data root is on dm-crypt", { devices: encryption.devices });
  } else if (allowUnencrypted) {
    log.warn(
      "DATA ROOT IS NOT ENCRYPTED and --allow-unencrypted-data-root was given: customer data WILL be placed on it. " +
        "Development only; the control plane is told so.",
      { dataRoot: config.dataRoot, devices: encryption.devices },
    );
  } else {
    log.warn("data root is not on dm-crypt: jobs that place customer data will be refused", {
      dataRoot: config.dataRoot,
      devices: encryption.devices,
    });
  }
}
