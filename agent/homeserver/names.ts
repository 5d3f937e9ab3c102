// The names of one homeserver's pieces on a host, all derived from its server id:
// Docker containers and networks, bridge interfaces, iptables tags, paths.
import { createHash } from "node:crypto";
import { join } from "node:path";
import { RESOURCE_ID } from "../../protocol/messages.ts";

export const WORKLOAD_LABEL = "berth.workload";
export const KIND_LABEL = "berth.kind";
export const ROLE_LABEL = "berth.role";
export const SERVER_NAME_LABEL = "berth.server-name";
export const SPEC_HASH_LABEL = "berth.spec-hash";
export const HOMESERVER_KIND = "homeserver";

export type Role = "synapse" | "postgres";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * 12 hex digits naming the server on the host. For the control plane's UUIDs,
 * their first 12 hex digits (random in a v4 UUID; easy to match by eye);
 * for any other id, the start of its SHA-256.
 */
export function shortIdOf(serverId: string): string {
  if (UUID.test(serverId)) return serverId.replaceAll("-", "").slice(0, 12).toLowerCase();
  return createHash("sha256").update(serverId).digest("hex").slice(0, 12);
}

export interface HomeserverNames {
  serverId: string;
  shortId: string;
  /** Internal network (no egress): PostgreSQL and Synapse. */
  dbNetwork: string;
  /** Synapse's network: egress for federation; the proxy on the host reaches Synapse here. */
  hsNetwork: string;
  /** Bridge interfaces (15 characters at most): fixed names, so firewall rules need no lookup. */
  dbBridge: string;
  hsBridge: string;
  postgres: string;
  synapse: string;
  /** The previous Synapse container while an upgrade is tried. */
  synapsePrevious: string;
  /** Tag (iptables comment) of this server's firewall rules. */
  firewallTag: string;
}

/** Interface name prefixes of every homeserver's bridges (iptables wildcards: bhs+, bdb+). */
export const HS_BRIDGE_PREFIX = "bhs";
export const DB_BRIDGE_PREFIX = "bdb";

export function homeserverNames(serverId: string): HomeserverNames {
  const shortId = shortIdOf(serverId);
  return {
    serverId,
    shortId,
    dbNetwork: `berth-${shortId}-db`,
    hsNetwork: `berth-${shortId}-hs`,
    dbBridge: `${DB_BRIDGE_PREFIX}${shortId}`,
    hsBridge: `${HS_BRIDGE_PREFIX}${shortId}`,
    postgres: `berth-${shortId}-postgres`,
    synapse: `berth-${shortId}-synapse`,
    synapsePrevious: `berth-${shortId}-synapse-previous`,
    firewallTag: `berth:${shortId}`,
  };
}

export interface HomeserverPaths {
  root: string;
  synapse: string;
  postgres: string;
  secrets: string;
  /** Berth's Synapse modules (root's; mounted read-only into Synapse: user-limit-module.ts). */
  synapseModules: string;
  /** Written once PostgreSQL's first initialisation finished (root-owned, in root). */
  postgresInitialised: string;
  /** The ext4 image holding root's filesystem, the server's storage quota (storage-quota.ts): outside root, which it is mounted at. */
  storageImage: string;
}

export function homeserversDir(dataRoot: string): string {
  return join(dataRoot, "homeservers");
}

/** An id as a path component, only when it is one (the protocol's resource ids): never "..", "/", NUL or a quote. */
function idComponent(id: string, what: string): string {
  if (!RESOURCE_ID.test(id)) throw new Error(`${JSON.stringify(id)} is not a ${what}: refusing to make a path of it`);
  return id;
}

export function homeserverPaths(dataRoot: string, serverId: string): HomeserverPaths {
  const id = idComponent(serverId, "server id");
  const root = join(homeserversDir(dataRoot), id);
  return {
    root,
    synapse: join(root, "synapse"),
    postgres: join(root, "postgres"),
    secrets: join(root, "secrets"),
    synapseModules: join(root, "synapse-modules"),
    postgresInitialised: join(root, ".postgres-initialised"),
    storageImage: join(dataRoot, "storage-images", `${id}.ext4`),
  };
}

/** Where a restore of backup `backupId` is extracted: in the server's root-owned directory, out of every container's reach. */
export function restoreStaging(paths: HomeserverPaths, backupId: string): string {
  return join(paths.root, "restore", idComponent(backupId, "backup id"));
}
