// The homeserver.* job kinds: the data root's encryption, then the
// HomeserverManager (agent/homeserver/manager.ts) does the work. Payloads are
// checked against the job catalogue (protocol/jobs.ts) before a handler runs.
// The lifecycle kinds are here, the administration kinds (users, registration
// tokens) in administration.ts and the promise checks in checks.ts, around the
// same manager.
import type { Readable } from "node:stream";
import type { AdministrationJobKind, HomeserverJobKind } from "../../protocol/jobs.ts";
import type { DiskEncryption } from "../../protocol/messages.ts";
import { downloadBackup, uploadBackup, type AgentIdentity } from "../backup/transfer.ts";
import { HomeserverManager, type HomeserverManagerOptions } from "../homeserver/manager.ts";
import { administrationHandlers } from "./administration.ts";
import { checksHandlers, type HostCheckSettings } from "./checks.ts";
import { assertCustomerDataAllowed } from "./workload.ts";
import type { JobHandler, JobHandlers } from "./types.ts";

export interface HomeserverHandlerOptions extends HomeserverManagerOptions {
  /** The data root's encryption, checked before every job that places or touches customer data. */
  diskEncryption: () => DiskEncryption;
  /** Called after a job changed what runs (the agent then reports its inventory). */
  onInventoryChanged?: () => void;
  /** The host's identity, which signs backup uploads and downloads. */
  agentIdentity: AgentIdentity;
  /** The proxy's listener and the host's private ports, for the certificates and isolation checks. */
  hostChecks?: HostCheckSettings;
}

type LifecycleJobKind = Exclude<HomeserverJobKind, AdministrationJobKind | "homeserver.checks" | "homeserver.delegation_check">;

/** The handlers, around one manager (exposed for tests and for the agent's start-up restore). */
export function homeserverHandlers(options: HomeserverHandlerOptions): {
  manager: HomeserverManager;
  handlers: JobHandlers<HomeserverJobKind>;
} {
  const manager = new HomeserverManager(options);
  const changed = () => options.onInventoryChanged?.();
  const guarded =
    <K extends LifecycleJobKind>(fn: JobHandler<K>): JobHandler<K> =>
    async (payload, ctx) => {
      try {
        return await fn(payload, ctx);
      } finally {
        changed();
      }
    };
  const customerData = () => assertCustomerDataAllowed(options.diskEncryption());

  const lifecycle: JobHandlers<LifecycleJobKind> = {
    "homeserver.provision": guarded(async (spec, ctx) => {
      customerData();
      return manager.provision(spec, ctx);
    }),
    // Made as provision makes a server, from the owner's archive; the passphrase lives only in this job's memory.
    "homeserver.import": guarded(async (job, ctx) => {
      customerData();
      const download = () => downloadBackup(options.agentIdentity, job.downloadUrl, ctx.signal);
      return manager.importHomeserver(job, download, ctx);
    }),
    "homeserver.stop": guarded(async ({ serverId }, ctx) => manager.stop(serverId, ctx)),
    "homeserver.start": guarded(async ({ serverId }, ctx) => {
      customerData();
      return manager.start(serverId, ctx);
    }),
    "homeserver.suspend": guarded(async ({ serverId }, ctx) => manager.suspend(serverId, ctx)),
    "homeserver.resume": guarded(async ({ serverId }, ctx) => {
      customerData();
      return manager.resume(serverId, ctx);
    }),
    "homeserver.upgrade": guarded(async ({ serverId, image }, ctx) => {
      customerData();
      return manager.upgrade(serverId, image, ctx);
    }),
    "homeserver.upkeep": async (payload, ctx) => {
      customerData();
      return manager.upkeep(payload, ctx);
    },
    // The control plane sends it only once a final backup succeeded.
    "homeserver.delete": guarded(async ({ serverId }, ctx) => manager.destroy(serverId, ctx)),
    "homeserver.backup": async (job, ctx) => {
      customerData();
      const upload = (ciphertext: Readable) =>
        uploadBackup(ciphertext, { identity: options.agentIdentity, uploadBase: job.uploadBase, partSize: job.partSize, signal: ctx.signal });
      return manager.backup(job.serverId, job, upload, ctx);
    },
    // Reads the database only: the homeserver keeps running (or stays stopped) as it was.
    "homeserver.legal_export": async (job, ctx) => {
      customerData();
      const upload = (ciphertext: Readable) =>
        uploadBackup(ciphertext, { identity: options.agentIdentity, uploadBase: job.uploadBase, partSize: job.partSize, signal: ctx.signal });
      return manager.legalExport(job.serverId, job, upload, ctx);
    },
    // Reads the database and media only, like a backup; the passphrase lives only in this job's memory.
    "homeserver.full_export": async (job, ctx) => {
      customerData();
      const upload = (ciphertext: Readable) =>
        uploadBackup(ciphertext, { identity: options.agentIdentity, uploadBase: job.uploadBase, partSize: job.partSize, signal: ctx.signal });
      return manager.fullExport(job.serverId, job, upload, ctx);
    },
    "homeserver.restore": guarded(async (job, ctx) => {
      customerData();
      const download = () => downloadBackup(options.agentIdentity, job.downloadUrl, ctx.signal);
      return manager.restore(job.serverId, job, download, ctx);
    }),
    // A sandbox beside the server, removed afterwards: nothing the server runs changes.
    "homeserver.restore_verify": async (job, ctx) => {
      customerData();
      const download = () => downloadBackup(options.agentIdentity, job.downloadUrl, ctx.signal);
      return manager.verifyRestore(job.serverId, job, download, ctx);
    },
    "homeserver.resize": async ({ serverId, resources, maxUsers }, ctx) => manager.resize(serverId, resources, maxUsers, ctx),
    "homeserver.set_admin_password": async ({ serverId, adminUserId, passwordHash }, ctx) => {
      customerData();
      return manager.setAdminPassword(serverId, adminUserId, passwordHash, ctx);
    },
  };
  const checks = checksHandlers(manager, options.diskEncryption, options.hostChecks);
  return { manager, handlers: { ...lifecycle, ...administrationHandlers(manager, customerData), ...checks } };
}
