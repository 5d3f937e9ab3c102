// The names of one homeserver's pieces on a host, all derived from its server id:
// Docker containers and networks, bridge interfaces, iptables chains and tags, paths.
// An agent with a host namespace (agent.json's hostNamespace: several agents sharing
// one Docker Engine, as `npm run dev -- --hosts N` runs them) puts it in every name
// and labels what it makes with it, so the same server on two such agents (a
// migration) has two disjoint sets of names, and each agent sees only its own.
import { createHash } from "node:crypto";
import { join } from "node:path";
import { RESOURCE_ID } from "../../protocol/messages.ts";

export const WORKLOAD_LABEL = "berth.workload";
export const KIND_LABEL = "berth.kind";
export const ROLE_LABEL = "berth.role";
export const SERVER_NAME_LABEL = "berth.server-name";
export const SPEC_HASH_LABEL = "berth.spec-hash";
export const HOMESERVER_KIND = "homeserver";
/** On every container and network of a namespaced agent: its namespace. The default agent's carry none. */
export const HOST_NAMESPACE_LABEL = "berth.host-namespace";

/**
 * A host namespace: two characters, a letter from g to z then a letter or digit. The first is
 * never a hex digit, so a namespaced bridge name (bhs<ns><10 hex>) never equals a default one
 * (bhs<12 hex>).
 */
export const HOST_NAMESPACE = /^[g-z][a-z0-9]$/;

/** The labels that mark a container or network as the agent's of `hostNamespace` (none for the default agent). */
export function hostNamespaceLabels(hostNamespace: string | undefined): Record<string, string> {
  return hostNamespace === undefined ? {} : { [HOST_NAMESPACE_LABEL]: assertHostNamespace(hostNamespace) };
}

/** Whether a container or network with these labels is the agent's of `hostNamespace`: the default agent's carry no namespace label. */
export function inHostNamespace(labels: Record<string, string> | undefined, hostNamespace: string | undefined): boolean {
  return labels?.[HOST_NAMESPACE_LABEL] === hostNamespace;
}

function assertHostNamespace(hostNamespace: string): string {
  if (!HOST_NAMESPACE.test(hostNamespace)) throw new Error(`${JSON.stringify(hostNamespace)} is not a host namespace (${HOST_NAMESPACE.source})`);
  return hostNamespace;
}

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
  /** What its two iptables chains are named after (BERTH-F-<chainId>, BERTH-I-<chainId>). */
  chainId: string;
  /** Tag (iptables comment) of this server's firewall rules. */
  firewallTag: string;
}

/** Interface name prefixes of every homeserver's bridges (iptables wildcards: bhs+, bdb+). */
export const HS_BRIDGE_PREFIX = "bhs";
export const DB_BRIDGE_PREFIX = "bdb";

/** The server's names on the default agent, or on the agent of `hostNamespace`. */
export function homeserverNames(serverId: string, hostNamespace?: string): HomeserverNames {
  const shortId = shortIdOf(serverId);
  const ns = hostNamespace === undefined ? "" : assertHostNamespace(hostNamespace);
  const prefix = ns ? `berth-${ns}-${shortId}` : `berth-${shortId}`;
  // Bridges keep their prefixes (the firewall's wildcards bhs+ and bdb+ must cover every agent's) within 15 characters.
  const bridgeId = ns ? `${ns}${shortId.slice(0, 10)}` : shortId;
  return {
    serverId,
    shortId,
    dbNetwork: `${prefix}-db`,
    hsNetwork: `${prefix}-hs`,
    dbBridge: `${DB_BRIDGE_PREFIX}${bridgeId}`,
    hsBridge: `${HS_BRIDGE_PREFIX}${bridgeId}`,
    postgres: `${prefix}-postgres`,
    synapse: `${prefix}-synapse`,
    synapsePrevious: `${prefix}-synapse-previous`,
    chainId: `${ns}${shortId}`,
    firewallTag: ns ? `berth:${ns}:${shortId}` : `berth:${shortId}`,
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
  /** Its imports' staging directories (import.ts), one per import: outside root, so outside its quota and every container. */
  imports: string;
}

export function homeserversDir(dataRoot: string): string {
  return join(dataRoot, "homeservers");
}

/** An id as a path component, only when it is one (the protocol's resource ids): never "..", "/", NUL or a quote. */
function idComponent(id: string, what: string): string {
  if (!RESOURCE_ID.test(id)) throw new Error(`${JSON.stringify(id)} is not ${what}: refusing to make a path of it`);
  return id;
}

export function homeserverPaths(dataRoot: string, serverId: string): HomeserverPaths {
  const id = idComponent(serverId, "a server id");
  return pathsUnder(join(homeserversDir(dataRoot), id), {
    storageImage: join(dataRoot, "storage-images", `${id}.ext4`),
    imports: join(dataRoot, "imports", id),
  });
}

function pathsUnder(root: string, outside: Pick<HomeserverPaths, "storageImage" | "imports">): HomeserverPaths {
  return {
    root,
    synapse: join(root, "synapse"),
    postgres: join(root, "postgres"),
    secrets: join(root, "secrets"),
    synapseModules: join(root, "synapse-modules"),
    postgresInitialised: join(root, ".postgres-initialised"),
    ...outside,
  };
}

/**
 * The names of the sandbox a restore verification (restore-verify.ts) brings a server's backup up
 * in: those of a server whose id is derived from this one's (so within the firewall's bridge
 * wildcards and never a live server's), with one internal network serving as both of its networks.
 */
export function restoreSandboxNames(serverId: string, hostNamespace?: string): HomeserverNames {
  const names = homeserverNames(`restore-verify/${serverId}`, hostNamespace);
  return { ...names, serverId, hsNetwork: names.dbNetwork, hsBridge: names.dbBridge };
}

/** The sandbox's files: under the agent's data root, outside the server's storage quota (it has none), and no imports. */
export function restoreSandboxPaths(dataRoot: string, serverId: string): HomeserverPaths {
  const root = join(dataRoot, "restore-verify", idComponent(serverId, "a server id"));
  return pathsUnder(root, { storageImage: join(root, "no-storage-image"), imports: join(root, "no-imports") });
}

/** Where a restore of backup `backupId` is extracted: in the server's root-owned directory, out of every container's reach. */
export function restoreStaging(paths: HomeserverPaths, backupId: string): string {
  return join(paths.root, "restore", idComponent(backupId, "a backup id"));
}

/**
 * Where import `importId` of a server unpacks its archive: in the server's imports directory, where
 * the next import of the server finds what an interrupted one left, and its deletion removes it.
 */
export function importStaging(paths: HomeserverPaths, importId: string): string {
  return join(paths.imports, idComponent(importId, "an import id"));
}
