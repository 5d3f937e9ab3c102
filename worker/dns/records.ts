import { and, eq, inArray, isNotNull, isNull, ne, not } from "drizzle-orm";
import { audit } from "../audit/audit";
import type { WorkerConfig } from "../config";
import type { WorkContext } from "../context";
import type { Database } from "../db/client";
import { hosts, serverDns, servers, type Host, type Server, type ServerDns } from "../db/schema";
import { servedHostOf } from "../servers/servers";
import { cloudflareDns } from "./cloudflare";
import { DnsError, type DnsProvider, type DnsRecord, type RecordType } from "./provider";

/** Cloudflare when configured; null in development without it (*.localhost needs no records). */
export function dnsProvider(config: WorkerConfig): DnsProvider | null {
  return config.dns.provider === "cloudflare" ? cloudflareDns(config.dns) : null;
}

const NO_ADDRESS = "its host has not reported a public address yet";
const BEING_MADE = "its records are being made";
const ADDRESS_CHANGED = "its host's address changed: its records are being updated";
/** How many pending servers one minutely pass writes: each takes a few of the provider's calls. */
const PENDING_PER_PASS = 25;
const RECORD_TYPES: RecordType[] = ["A", "AAAA"];

type Addresses = Record<RecordType, string | null>;
type RecordIds = Record<RecordType, string | null>;

export interface DnsFix {
  type: RecordType;
  fix: "created" | "updated" | "deleted";
}

function addressesOf(host: Pick<Host, "publicIpv4" | "publicIpv6">): Addresses | null {
  return host.publicIpv4 ? { A: host.publicIpv4, AAAA: host.publicIpv6 } : null;
}

/**
 * Makes one server's records (`actual`: those of its name, as the provider holds them) what
 * `wanted` says: one A (and one AAAA when its host has IPv6), at its host's address. Only records
 * made for this server are touched; one too many is deleted.
 */
async function converge(provider: DnsProvider, serverId: string, name: string, wanted: Addresses, actual: DnsRecord[]) {
  const ids: RecordIds = { A: null, AAAA: null };
  const fixes: DnsFix[] = [];
  for (const type of RECORD_TYPES) {
    const ours = actual.filter((record) => record.type === type && record.serverId === serverId);
    const content = wanted[type];
    let kept: DnsRecord | undefined;
    if (content !== null) {
      const desired = { type, name, content, serverId };
      kept = ours.find((record) => record.name === name && record.content === content);
      if (!kept && ours[0]) {
        try {
          kept = await provider.update(ours[0].id, desired);
          fixes.push({ type, fix: "updated" });
        } catch (error) {
          if (!(error instanceof DnsError && error.missing)) throw error;
        }
      }
      if (!kept) {
        kept = await provider.create(desired);
        fixes.push({ type, fix: "created" });
      }
      ids[type] = kept.id;
    }
    for (const extra of ours.filter((record) => record.id !== kept?.id)) {
      await provider.delete(extra.id);
      fixes.push({ type, fix: "deleted" });
    }
  }
  return { ids, fixes };
}

type Belief = Pick<ServerDns, "hostId" | "state" | "reason"> & Partial<Pick<ServerDns, "aRecordId" | "ipv4" | "aaaaRecordId" | "ipv6">>;

/** Records what we now believe about a server's records. */
async function believe(ctx: WorkContext, server: Pick<Server, "id" | "name">, belief: Belief) {
  const values = { ...belief, updatedAt: ctx.now };
  await ctx.db
    .insert(serverDns)
    .values({ serverId: server.id, name: servedHostOf(ctx.config, server.name), ...values })
    .onConflictDoUpdate({ target: serverDns.serverId, set: values });
}

async function waitFor(ctx: WorkContext, server: Pick<Server, "id" | "name">, hostId: string, reason: string) {
  console.warn(JSON.stringify({ event: "dns_waiting", serverId: server.id, reason }));
  await believe(ctx, server, { hostId, state: "waiting", reason });
}

function ready(hostId: string, wanted: Addresses, ids: RecordIds): Belief {
  return { hostId, state: "ready", reason: null, aRecordId: ids.A, ipv4: wanted.A, aaaaRecordId: ids.AAAA, ipv6: wanted.AAAA };
}

/**
 * Points <name>.<HOMESERVER_DOMAIN> at `host`: its A record at the host's IPv4, its AAAA at its
 * IPv6 (or none). Called at placement, and by whatever moves a server to another host once it
 * serves there. Never throws for the provider's failures (after the SDK's bounded retries): the
 * server then waits for DNS, with the reason its owner sees, and the hourly cron tries again.
 * Returns what we believe now; null when no provider is configured.
 */
export async function pointServerAt(
  ctx: WorkContext,
  server: Pick<Server, "id" | "name">,
  host: Pick<Host, "id" | "publicIpv4" | "publicIpv6">,
): Promise<ServerDnsStatus | null> {
  const provider = dnsProvider(ctx.config);
  if (!provider) return null;
  const wanted = addressesOf(host);
  if (!wanted) {
    await waitFor(ctx, server, host.id, NO_ADDRESS);
    return { state: "waiting", reason: NO_ADDRESS };
  }
  const name = servedHostOf(ctx.config, server.name);
  try {
    const { ids } = await converge(provider, server.id, name, wanted, await provider.recordsNamed(name));
    await believe(ctx, server, ready(host.id, wanted, ids));
    return { state: "ready", reason: null };
  } catch (error) {
    if (!(error instanceof DnsError)) throw error;
    await waitFor(ctx, server, host.id, error.reason);
    return { state: "waiting", reason: error.reason };
  }
}

/** Servers whose name must resolve: every one not deleted, nor being destroyed (`deleting` past its final backup). */
const SERVES = and(ne(servers.status, "deleted"), isNotNull(servers.hostId), not(and(eq(servers.status, "deleting"), isNull(servers.previousStatus))!));

/**
 * Points a server's name at `host` without making the caller wait on the provider (whose retries
 * can take half a minute): the server is recorded as pending, and the write runs after the answer
 * (ctx.waitUntil) or, without one, at the minutely pass (writePendingDns).
 */
export async function pointServerAtLater(ctx: WorkContext, server: Pick<Server, "id" | "name">, host: Pick<Host, "id" | "publicIpv4" | "publicIpv6">) {
  if (!dnsProvider(ctx.config)) return;
  await believe(ctx, server, { hostId: host.id, state: "pending", reason: BEING_MADE });
  ctx.waitUntil?.(
    pointServerAt(ctx, server, host).catch((error: unknown) => {
      // Still pending: the minutely pass writes it.
      console.error(JSON.stringify({ event: "dns_background_write_failed", serverId: server.id, error: String(error) }));
    }),
  );
}

/**
 * A host reported new public addresses: its homeservers' records are marked pending, so the next
 * minutely pass points them at the new ones (rather than the hourly reconciliation).
 */
export async function repointHostLater(db: Database, hostId: string, now: Date): Promise<void> {
  const onHost = db.select({ id: servers.id }).from(servers).where(eq(servers.hostId, hostId));
  await db.update(serverDns).set({ state: "pending", reason: ADDRESS_CHANGED, updatedAt: now }).where(inArray(serverDns.serverId, onHost));
}

/**
 * The minutely pass: writes the records of servers pending (placed by a request whose background
 * write did not finish, or on a host whose address changed), a bounded number at a time. Null
 * when no provider is configured.
 */
export async function writePendingDns(ctx: WorkContext): Promise<number | null> {
  if (!dnsProvider(ctx.config)) return null;
  const pending = await ctx.db
    .select({ server: { id: servers.id, name: servers.name }, host: { id: hosts.id, publicIpv4: hosts.publicIpv4, publicIpv6: hosts.publicIpv6 } })
    .from(serverDns)
    .innerJoin(servers, eq(servers.id, serverDns.serverId))
    .innerJoin(hosts, eq(hosts.id, servers.hostId))
    .where(and(eq(serverDns.state, "pending"), SERVES))
    .limit(PENDING_PER_PASS);
  for (const { server, host } of pending) await pointServerAt(ctx, server, host);
  return pending.length;
}

/**
 * Deletes a server's records (when its host is told to destroy it). What cannot be deleted now
 * stays for the hourly cron, which deletes records of servers that no longer run.
 */
export async function removeServerDns(ctx: WorkContext, server: Pick<Server, "id" | "name">): Promise<void> {
  const provider = dnsProvider(ctx.config);
  const [belief] = await ctx.db.select().from(serverDns).where(eq(serverDns.serverId, server.id));
  try {
    if (provider) {
      const known = [belief?.aRecordId, belief?.aaaaRecordId].filter((id): id is string => Boolean(id));
      const ids = known.length
        ? known
        : (await provider.recordsNamed(servedHostOf(ctx.config, server.name))).filter((record) => record.serverId === server.id).map((record) => record.id);
      for (const id of ids) await provider.delete(id);
    }
    await ctx.db.delete(serverDns).where(eq(serverDns.serverId, server.id));
  } catch (error) {
    if (!(error instanceof DnsError)) throw error;
    console.warn(JSON.stringify({ event: "dns_removal_deferred", serverId: server.id, reason: error.reason }));
  }
}

export interface DnsReconciliation {
  fixed: number;
  removed: number;
  waiting: number;
  /** Why the zone could not be read: nothing was checked this time. */
  failed?: string;
}

/**
 * The hourly cron: one listing of the records Berth made, compared with what every serving
 * homeserver's host says they should be. Missing records are created, wrong ones corrected,
 * those of servers that no longer exist deleted, each fix audited; servers still waiting are
 * tried again. The table of what we believe spares writes where nothing changed.
 */
export async function reconcileDns(ctx: WorkContext): Promise<DnsReconciliation | null> {
  const provider = dnsProvider(ctx.config);
  if (!provider) return null;
  const result: DnsReconciliation = { fixed: 0, removed: 0, waiting: 0 };
  let managed: DnsRecord[];
  try {
    managed = await provider.listManaged();
  } catch (error) {
    if (!(error instanceof DnsError)) throw error;
    console.warn(JSON.stringify({ event: "dns_reconcile_failed", reason: error.reason }));
    return { ...result, failed: error.reason };
  }
  const byServer = new Map<string, DnsRecord[]>();
  for (const record of managed) byServer.set(record.serverId!, [...(byServer.get(record.serverId!) ?? []), record]);
  const serving = await ctx.db
    .select({ server: { id: servers.id, name: servers.name }, host: { id: hosts.id, publicIpv4: hosts.publicIpv4, publicIpv6: hosts.publicIpv6 } })
    .from(servers)
    .innerJoin(hosts, eq(hosts.id, servers.hostId))
    .where(SERVES);
  const beliefs = new Map((await ctx.db.select().from(serverDns)).map((belief) => [belief.serverId, belief]));

  for (const { server, host } of serving) {
    const wanted = addressesOf(host);
    const belief = beliefs.get(server.id);
    if (!wanted) {
      if (belief?.state !== "waiting" || belief.reason !== NO_ADDRESS) await waitFor(ctx, server, host.id, NO_ADDRESS);
      result.waiting++;
      continue;
    }
    const name = servedHostOf(ctx.config, server.name);
    try {
      const { ids, fixes } = await converge(provider, server.id, name, wanted, byServer.get(server.id) ?? []);
      for (const fix of fixes) await audit(ctx.db, ctx.now, "system", "dns.record_fixed", server.id, { name, ...fix });
      result.fixed += fixes.length;
      const now = ready(host.id, wanted, ids);
      const unchanged = belief && (Object.keys(now) as (keyof Belief)[]).every((key) => belief[key] === now[key]);
      if (!unchanged) await believe(ctx, server, now);
    } catch (error) {
      if (!(error instanceof DnsError)) throw error;
      await waitFor(ctx, server, host.id, error.reason);
      result.waiting++;
    }
  }

  const live = new Set(serving.map(({ server }) => server.id));
  for (const [serverId, records] of byServer) {
    if (live.has(serverId)) continue;
    try {
      for (const record of records) {
        await provider.delete(record.id);
        await audit(ctx.db, ctx.now, "system", "dns.record_removed", serverId, { name: record.name, type: record.type, content: record.content });
        result.removed++;
      }
    } catch (error) {
      if (!(error instanceof DnsError)) throw error;
      console.warn(JSON.stringify({ event: "dns_removal_deferred", serverId, reason: error.reason }));
    }
  }
  for (const serverId of beliefs.keys()) {
    if (!live.has(serverId) && !byServer.has(serverId)) await ctx.db.delete(serverDns).where(eq(serverDns.serverId, serverId));
  }
  return result;
}

/** What a server's owner sees of its DNS: null when no provider keeps records (development). */
export interface ServerDnsStatus {
  state: Exclude<ServerDns["state"], "pending">;
  /** Why it waits, after "waiting for DNS: ". */
  reason: string | null;
}

export async function serverDnsStatus(ctx: WorkContext, serverId: string): Promise<ServerDnsStatus | null> {
  if (!dnsProvider(ctx.config)) return null;
  const [belief] = await ctx.db.select({ state: serverDns.state, reason: serverDns.reason }).from(serverDns).where(eq(serverDns.serverId, serverId));
  if (!belief) return { state: "waiting", reason: "its records have not been made yet" };
  // Its owner waits either way; pending says only that no attempt has failed yet.
  return { state: belief.state === "pending" ? "waiting" : belief.state, reason: belief.reason };
}
