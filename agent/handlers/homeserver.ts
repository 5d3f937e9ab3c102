// The homeserver.* job kinds: payload checks, the data root's encryption, then
// the HomeserverManager (agent/homeserver/manager.ts) does the work.
import type { Readable } from "node:stream";
import { z } from "zod";
import { backupJobPayload, homeserverResizePayload, restoreJobPayload, type DiskEncryption, type HomeserverJobKind } from "../../protocol/messages.ts";
import { downloadBackup, uploadBackup, type AgentIdentity } from "../backup/transfer.ts";
import { HomeserverManager, type HomeserverManagerOptions } from "../homeserver/manager.ts";
import { workloadIdSchema } from "../inventory.ts";
import { assertCustomerDataAllowed } from "./workload.ts";
import { JobInputError, type JobHandler, type Json } from "./types.ts";


export interface HomeserverHandlerOptions extends HomeserverManagerOptions {
  /** The data root's encryption, checked before every job that places or touches customer data. */
  diskEncryption: () => DiskEncryption;
  /** Called after a job changed what runs (the agent then reports its inventory). */
  onInventoryChanged?: () => void;
  /** The host's identity, which signs backup uploads and downloads. */
  agentIdentity: AgentIdentity;
}

// DNS names only (the control plane makes them from DNS labels); no port, no path.
const serverName = z
  .string()
  .min(1)
  .max(253)
  .regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/i, "a DNS name");
const image = z.string().min(1).max(512).regex(/^[A-Za-z0-9][A-Za-z0-9._\-/:@]*$/, "an image reference");

const provisionPayload = z.object({
  serverId: workloadIdSchema,
  name: z.string().max(64).optional(),
  serverName,
  publicBaseUrl: z.url({ protocol: /^https?$/ }),
  resources: z.object({
    memoryMiB: z.number().int().min(384).max(1024 * 1024),
    cpus: z.number().min(0.1).max(512),
    storageGiB: z.number().min(0).max(1_000_000),
  }),
  images: z.object({ synapse: image, postgres: image }),
});
const serverPayload = z.object({ serverId: workloadIdSchema });
const upgradePayload = z.object({ serverId: workloadIdSchema, image });
const adminPasswordPayload = z.object({
  serverId: workloadIdSchema,
  adminUserId: z.string().min(3).max(255),
  passwordHash: z.string().min(1).max(200),
});

function parse<T>(schema: z.ZodType<T>, kind: string, payload: Json): T {
  const parsed = schema.safeParse(payload);
  if (!parsed.success) {
    throw new JobInputError(`${kind}: invalid payload: ${parsed.error.issues.map((i) => `${i.path.join(".") || "payload"}: ${i.message}`).join("; ")}`);
  }
  return parsed.data;
}

/** The handlers, around one manager (exposed for tests and for the agent's start-up restore). */
export function homeserverHandlers(options: HomeserverHandlerOptions): {
  manager: HomeserverManager;
  handlers: Record<HomeserverJobKind, JobHandler>;
} {
  const manager = new HomeserverManager(options);
  const changed = () => options.onInventoryChanged?.();
  const guarded =
    (fn: JobHandler): JobHandler =>
    async (payload, ctx) => {
      try {
        return await fn(payload, ctx);
      } finally {
        changed();
      }
    };
  const customerData = () => assertCustomerDataAllowed(options.diskEncryption());

  const handlers: Record<HomeserverJobKind, JobHandler> = {
    "homeserver.provision": guarded(async (payload, ctx) => {
      const spec = parse(provisionPayload, "homeserver.provision", payload);
      customerData();
      return (await manager.provision(spec, ctx)) as unknown as Json;
    }),
    "homeserver.stop": guarded(async (payload, ctx) => {
      const { serverId } = parse(serverPayload, "homeserver.stop", payload);
      return manager.stop(serverId, ctx);
    }),
    "homeserver.start": guarded(async (payload, ctx) => {
      const { serverId } = parse(serverPayload, "homeserver.start", payload);
      customerData();
      return (await manager.start(serverId, ctx)) as unknown as Json;
    }),
    "homeserver.suspend": guarded(async (payload, ctx) => {
      const { serverId } = parse(serverPayload, "homeserver.suspend", payload);
      return manager.suspend(serverId, ctx);
    }),
    "homeserver.resume": guarded(async (payload, ctx) => {
      const { serverId } = parse(serverPayload, "homeserver.resume", payload);
      customerData();
      return (await manager.resume(serverId, ctx)) as unknown as Json;
    }),
    "homeserver.upgrade": guarded(async (payload, ctx) => {
      const { serverId, image: target } = parse(upgradePayload, "homeserver.upgrade", payload);
      customerData();
      return (await manager.upgrade(serverId, target, ctx)) as unknown as Json;
    }),
    // The control plane sends it only once a final backup succeeded.
    "homeserver.delete": guarded(async (payload, ctx) => {
      const { serverId } = parse(serverPayload, "homeserver.delete", payload);
      return manager.destroy(serverId, ctx);
    }),
    "homeserver.backup": async (payload, ctx) => {
      const job = parse(backupJobPayload, "homeserver.backup", payload);
      customerData();
      const upload = (ciphertext: Readable) =>
        uploadBackup(ciphertext, { identity: options.agentIdentity, uploadBase: job.uploadBase, partSize: job.partSize, signal: ctx.signal });
      return (await manager.backup(job.serverId, job, upload, ctx)) as unknown as Json;
    },
    "homeserver.restore": guarded(async (payload, ctx) => {
      const job = parse(restoreJobPayload, "homeserver.restore", payload);
      customerData();
      const download = () => downloadBackup(options.agentIdentity, job.downloadUrl, ctx.signal);
      return (await manager.restore(job.serverId, job, download, ctx)) as unknown as Json;
    }),
    "homeserver.resize": async (payload, ctx) => {
      const { serverId, resources } = parse(homeserverResizePayload, "homeserver.resize", payload);
      return (await manager.resize(serverId, resources, ctx)) as unknown as Json;
    },
    "homeserver.set_admin_password": async (payload, ctx) => {
      const { serverId, adminUserId, passwordHash } = parse(adminPasswordPayload, "homeserver.set_admin_password", payload);
      customerData();
      return manager.setAdminPassword(serverId, adminUserId, passwordHash, ctx);
    },
  };
  return { manager, handlers };
}
