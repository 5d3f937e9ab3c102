// What the agent remembers about each homeserver it runs, beside the containers:
// <stateDir>/homeservers/<serverId>.json. Lifecycle jobs after provisioning
// carry only {serverId}; the rest (name, images, plan, settings, suspension) is here.
import { mkdirSync, readdirSync, readFileSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { homeserverSettingsSchema } from "../../protocol/homeserver-settings.ts";
import { writeFileAtomic } from "../atomic-file.ts";

export const homeserverRecordSchema = z.object({
  version: z.literal(1),
  serverId: z.string().min(1),
  serverName: z.string().min(1),
  publicBaseUrl: z.string().min(1),
  uid: z.number().int().positive(),
  images: z.object({ synapse: z.string().min(1), postgres: z.string().min(1) }),
  resources: z.object({ memoryMiB: z.number().positive(), cpus: z.number().positive(), storageGiB: z.number().nonnegative() }),
  suspended: z.boolean(),
  /** Stopped by homeserver.stop (not by a crash or a reboot): restoreHostState leaves it stopped. */
  stopped: z.boolean().optional(),
  /** Whether its directory is its storage quota's filesystem (false: provisioned with --allow-no-storage-quota). */
  storageQuota: z.boolean().optional(),
  adminUserId: z.string().optional(),
  /** What its owner set (absent in records written before settings existed: the defaults). */
  settings: homeserverSettingsSchema.optional(),
  /** Set while an upgrade tries a new Synapse image (for recovery after a crash). */
  upgrade: z.object({ from: z.string(), to: z.string() }).optional(),
  updatedAt: z.number().int(),
});
export type HomeserverRecord = z.infer<typeof homeserverRecordSchema>;

/**
 * The host name the homeserver is served at (its proxy route, certificate and DNS record): its
 * public base URL's, which differs from its Matrix server name when that is a customer's own domain.
 */
export function servedHostOf(record: Pick<HomeserverRecord, "publicBaseUrl">): string {
  return new URL(record.publicBaseUrl).hostname;
}

export class HomeserverRecords {
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, "homeservers");
  }

  /** The ids of every server with a record. */
  ids(): string[] {
    try {
      return readdirSync(this.dir)
        .filter((n) => n.endsWith(".json") && !n.startsWith("."))
        .map((n) => n.slice(0, -".json".length));
    } catch {
      return [];
    }
  }

  path(serverId: string): string {
    return join(this.dir, `${serverId}.json`);
  }

  read(serverId: string): HomeserverRecord | undefined {
    let text: string;
    try {
      text = readFileSync(this.path(serverId), "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw error;
    }
    const parsed = homeserverRecordSchema.safeParse(JSON.parse(text));
    if (!parsed.success) throw new Error(`${this.path(serverId)} is invalid: ${parsed.error.issues[0]?.message ?? "unknown problem"}`);
    return parsed.data;
  }

  write(record: Omit<HomeserverRecord, "updatedAt" | "version">): HomeserverRecord {
    const full: HomeserverRecord = { ...record, version: 1, updatedAt: Date.now() };
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    writeFileAtomic(this.path(record.serverId), `${JSON.stringify(full, null, 2)}\n`, 0o600);
    return full;
  }

  remove(serverId: string): void {
    try {
      unlinkSync(this.path(serverId));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
  }
}
