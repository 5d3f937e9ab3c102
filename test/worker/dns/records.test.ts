import { env } from "cloudflare:workers";
import { and, eq } from "drizzle-orm";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { PublicAddresses } from "../../../protocol/messages";
import { workContext } from "../../../worker/context";
import { database } from "../../../worker/db/client";
import { auditLog, hosts, servers, users, type Backup, type Server } from "../../../worker/db/schema";
import { pointServerAt } from "../../../worker/dns/records";
import type { WorkerEnv } from "../../../worker/env";
import { EVERY_MINUTE, runScheduledMaintenance } from "../../../worker/scheduled";
import { deleteAfterFinalBackup } from "../../../worker/servers/deletion";
import { switchRoute } from "../../../worker/servers/routing";
import { createServer, type CustomServerName } from "../../../worker/servers/servers";
import { subscriber } from "../billing/stripe-helpers";
import { CLOUDFLARE_DNS_API_TOKEN, CLOUDFLARE_ZONE_ID } from "../constants";
import { connectedAgent, enrolledHost, FakeAgent, helloFor, hostView, operatorCookie, sign } from "../fleet/fleet-helpers";
import { call, post } from "../helpers";
import { jobOf } from "../servers/server-helpers";

// Every homeserver's name resolves to its host: an A (and AAAA) record made at placement, removed
// at destruction, kept right by the hourly cron, and a server that waits for it says why.

/** The Worker's settings with DNS kept in the local Cloudflare emulator. */
const DNS: Partial<WorkerEnv> = { CLOUDFLARE_DNS_API_TOKEN, CLOUDFLARE_ZONE_ID };
const dnsEnv = { ...env, ...DNS } as WorkerEnv;
const emulator = env.CLOUDFLARE_API_URL!;
const db = database(env.DB);
const ADDRESSES = { ipv4: "203.0.113.20", ipv6: "2001:db8::20" };

interface StoredRecord {
  id: string;
  type: string;
  name: string;
  content: string;
  comment: string | null;
}

async function control<T>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await fetch(`${emulator}${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status}`);
  return (await response.json()) as T;
}

/** The emulator's records of one name, A before AAAA. */
async function recordsOf(name: string): Promise<Pick<StoredRecord, "type" | "content" | "comment">[]> {
  const records = await control<StoredRecord[]>("GET", "/_emulator/records");
  return records
    .filter((record) => record.name === `${name}.berth.example`)
    .map(({ type, content, comment }) => ({ type, content, comment }))
    .sort((a, b) => a.type.localeCompare(b.type));
}

/** Cloudflare's API as someone with the token (the dashboard, another tool) uses it behind our back. */
async function outOfBand(method: string, path: string, body?: unknown) {
  const response = await fetch(`${emulator}/client/v4/zones/${CLOUDFLARE_ZONE_ID}/dns_records${path}`, {
    method,
    headers: { Authorization: `Bearer ${CLOUDFLARE_DNS_API_TOKEN}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  expect(response.ok).toBe(true);
}

async function idOf(name: string, type: string): Promise<string> {
  const records = await control<StoredRecord[]>("GET", "/_emulator/records");
  return records.find((record) => record.name === `${name}.berth.example` && record.type === type)!.id;
}

async function hostWithAddresses(addresses?: PublicAddresses) {
  const host = await enrolledHost(await operatorCookie());
  const agent = await connectedAgent(host, [], addresses);
  return { host, agent };
}

/** A customer's homeserver (on its owner's domain if `custom`), placed with DNS kept in the emulator, on a host reporting `addresses` (null: none). */
async function placed(addresses: PublicAddresses | null = ADDRESSES, custom: CustomServerName | null = null) {
  const { host, agent } = await hostWithAddresses(addresses ?? undefined);
  const owner = await subscriber();
  const [user] = await db.select().from(users).where(eq(users.email, owner.email));
  const name = `dns-${crypto.randomUUID().slice(0, 8)}`;
  // As a request runs it: the records are written after the answer, here awaited.
  const background: Promise<unknown>[] = [];
  const server = await createServer({ ...workContext(dnsEnv, new Date()), waitUntil: (work) => void background.push(work) }, user!, name, "us-east", custom);
  await Promise.all(background);
  return { host, agent, owner, server, name };
}

async function dnsView(cookie: string, id: string) {
  const response = await call(`/api/servers/${id}`, { cookie, env: DNS });
  expect(response.status).toBe(200);
  return ((await response.json()) as { dns: unknown }).dns;
}

const hourly = () => runScheduledMaintenance(dnsEnv, new Date(), "17 * * * *");
const minutely = () => runScheduledMaintenance(dnsEnv, new Date(), EVERY_MINUTE);

async function auditOf(serverId: string) {
  const entries = await db.select().from(auditLog).where(eq(auditLog.target, serverId));
  return entries.filter((entry) => entry.action.startsWith("dns.")).map((entry) => ({ action: entry.action, detail: entry.detail }));
}

beforeEach(async () => {
  // Placement picks this test's host: the others are offline.
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
  await control("DELETE", "/_emulator/faults");
});
afterEach(() => vi.restoreAllMocks());

describe("placement", () => {
  it("makes <name>.<domain> resolve to the host's IPv4 and IPv6, records marked as the server's", async () => {
    const { server, name, owner } = await placed();
    expect(await recordsOf(name)).toEqual([
      { type: "A", content: ADDRESSES.ipv4, comment: `berth:server:${server.id}` },
      { type: "AAAA", content: ADDRESSES.ipv6, comment: `berth:server:${server.id}` },
    ]);
    expect(await dnsView(owner.cookie, server.id)).toEqual({ state: "ready", reason: null });
  });

  it("a homeserver named after its owner's domain has its records under our domain, never the customer's", async () => {
    const serverName = `acme-${crypto.randomUUID().slice(0, 8)}.test`;
    const { server, name } = await placed(ADDRESSES, { serverName, publishLater: true });
    expect(server.serverName).toBe(serverName);
    expect((await recordsOf(name)).map((record) => record.type)).toEqual(["A", "AAAA"]);
    const records = await control<StoredRecord[]>("GET", "/_emulator/records");
    expect(records.some((record) => record.name.includes(serverName))).toBe(false);
  });

  it("a host with IPv4 only gets an A record only", async () => {
    const { name } = await placed({ ipv4: "198.51.100.30" });
    expect((await recordsOf(name)).map((record) => `${record.type} ${record.content}`)).toEqual(["A 198.51.100.30"]);
  });

  it("while Cloudflare fails, the homeserver is provisioned anyway and waits for DNS, saying why; the hourly cron makes the records", async () => {
    const warnings: string[] = [];
    vi.spyOn(console, "warn").mockImplementation((line: unknown) => void warnings.push(String(line)));
    // More failures than the adapter's retries.
    await control("POST", "/_emulator/faults", { kind: "status", status: 503, count: 3 });
    const { agent, server, name, owner } = await placed();
    expect(server.status).toBe("provisioning");
    expect((await jobOf(agent, "homeserver.provision")).job.payload).toMatchObject({ serverId: server.id });
    expect(await recordsOf(name)).toEqual([]);

    expect(await dnsView(owner.cookie, server.id)).toEqual({ state: "waiting", reason: "Cloudflare answered 503" });
    const page = await call(`/servers/${server.id}`, { cookie: owner.cookie, env: DNS, headers: { accept: "text/html" } });
    expect(await page.text()).toContain("Waiting for DNS: Cloudflare answered 503.");
    expect(warnings.map((line) => JSON.parse(line))).toContainEqual({ event: "dns_waiting", serverId: server.id, reason: "Cloudflare answered 503" });

    const report = await hourly();
    expect(report.dns).toMatchObject({ waiting: expect.any(Number) });
    expect(await recordsOf(name)).toHaveLength(2);
    expect(await dnsView(owner.cookie, server.id)).toEqual({ state: "ready", reason: null });
    expect(await auditOf(server.id)).toEqual([
      { action: "dns.record_fixed", detail: { name: `${name}.berth.example`, type: "A", fix: "created" } },
      { action: "dns.record_fixed", detail: { name: `${name}.berth.example`, type: "AAAA", fix: "created" } },
    ]);
  });

  it("the customer's POST answers while Cloudflare fails every request: the server waits for DNS saying why, and the cron makes the records once Cloudflare works", async () => {
    const warnings: string[] = [];
    vi.spyOn(console, "warn").mockImplementation((line: unknown) => void warnings.push(String(line)));
    await hostWithAddresses(ADDRESSES);
    const owner = await subscriber();
    await control("POST", "/_emulator/faults", { kind: "status", status: 503, count: 100 });
    const name = `dns-${crypto.randomUUID().slice(0, 8)}`;
    const created = await post("/api/servers", { name, region: "us-east" }, { cookie: owner.cookie, env: DNS });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    expect(await dnsView(owner.cookie, id)).toEqual({ state: "waiting", reason: "Cloudflare answered 503" });
    expect(warnings.map((line) => JSON.parse(line))).toContainEqual({ event: "dns_waiting", serverId: id, reason: "Cloudflare answered 503" });

    await control("DELETE", "/_emulator/faults");
    await hourly();
    expect((await recordsOf(name)).map((record) => `${record.type} ${record.content}`)).toEqual([`A ${ADDRESSES.ipv4}`, `AAAA ${ADDRESSES.ipv6}`]);
    expect(await dnsView(owner.cookie, id)).toEqual({ state: "ready", reason: null });
  });

  it("without background work (its request ended first), the server is pending, shown as waiting, and the minutely pass makes its records", async () => {
    await hostWithAddresses(ADDRESSES);
    const owner = await subscriber();
    const [user] = await db.select().from(users).where(eq(users.email, owner.email));
    const name = `dns-${crypto.randomUUID().slice(0, 8)}`;
    const server = await createServer(workContext(dnsEnv, new Date()), user!, name, "us-east");
    expect(await recordsOf(name)).toEqual([]);
    expect(await dnsView(owner.cookie, server.id)).toEqual({ state: "waiting", reason: "its records are being made" });

    const report = await minutely();
    expect(report.dnsPendingWritten).toBeGreaterThanOrEqual(1);
    expect(await recordsOf(name)).toHaveLength(2);
    expect(await dnsView(owner.cookie, server.id)).toEqual({ state: "ready", reason: null });
  });

  it("a host that has not reported its address: the server waits, saying so, until the agent reports one and the cron runs", async () => {
    const { host, server, name, owner } = await placed(null);
    expect(await dnsView(owner.cookie, server.id)).toEqual({ state: "waiting", reason: "its host has not reported a public address yet" });
    expect(await recordsOf(name)).toEqual([]);
    // The agent, configured, connects again (replacing its connection).
    await connectedAgent(host, [], { ipv4: "192.0.2.44" });
    await hourly();
    expect((await recordsOf(name)).map((record) => `${record.type} ${record.content}`)).toEqual(["A 192.0.2.44"]);
    expect(await dnsView(owner.cookie, server.id)).toEqual({ state: "ready", reason: null });
  });

  it("the API token appears in no answer, page, log line or audit entry", async () => {
    const lines: string[] = [];
    for (const level of ["log", "warn", "error"] as const)
      vi.spyOn(console, level).mockImplementation((...args: unknown[]) => void lines.push(args.map(String).join(" ")));
    await control("POST", "/_emulator/faults", { kind: "status", status: 500, count: 3 });
    const { server, owner } = await placed();
    const answer = await (await call(`/api/servers/${server.id}`, { cookie: owner.cookie, env: DNS })).text();
    const page = await (await call(`/servers/${server.id}`, { cookie: owner.cookie, env: DNS, headers: { accept: "text/html" } })).text();
    const report = JSON.stringify(await hourly());
    const audit = JSON.stringify(await db.select().from(auditLog));
    for (const text of [answer, page, report, audit, lines.join("\n")]) expect(text).not.toContain(CLOUDFLARE_DNS_API_TOKEN);
  });
});

describe("destruction", () => {
  it("deletes the records once the host is told to destroy the homeserver", async () => {
    const { agent, host, server, name } = await placed();
    await jobOf(agent, "homeserver.provision");
    await db.update(servers).set({ status: "deleting", previousStatus: "running" }).where(eq(servers.id, server.id));
    const backup = { id: crypto.randomUUID(), serverId: server.id, hostId: host.hostId } as Backup;
    await deleteAfterFinalBackup(workContext(dnsEnv, new Date()), backup);
    await jobOf(agent, "homeserver.delete");
    expect(await recordsOf(name)).toEqual([]);
  });
});

describe("the hourly reconciliation", () => {
  it("puts back a record deleted behind our back, corrects one changed, follows a host's new address, and audits each fix", async () => {
    const { host, server, name } = await placed();
    await outOfBand("DELETE", `/${await idOf(name, "A")}`);
    await outOfBand("PATCH", `/${await idOf(name, "AAAA")}`, { content: "2001:db8::666" });
    await hourly();
    expect((await recordsOf(name)).map((record) => `${record.type} ${record.content}`)).toEqual([`A ${ADDRESSES.ipv4}`, `AAAA ${ADDRESSES.ipv6}`]);

    await db.update(hosts).set({ publicIpv4: "203.0.113.99", publicIpv6: null }).where(eq(hosts.id, host.hostId));
    await hourly();
    expect((await recordsOf(name)).map((record) => `${record.type} ${record.content}`)).toEqual(["A 203.0.113.99"]);
    const fixes = (await auditOf(server.id)).map(({ detail }) => `${(detail as { type: string }).type} ${(detail as { fix: string }).fix}`);
    expect(fixes).toEqual(["A created", "AAAA updated", "A updated", "AAAA deleted"]);
  });

  it("deletes records left for servers that no longer exist, and leaves records it did not make alone", async () => {
    const gone = crypto.randomUUID();
    const leftover = `left-${gone.slice(0, 8)}`;
    const handMade = `www-${gone.slice(0, 8)}`;
    await outOfBand("POST", "", { type: "A", name: `${leftover}.berth.example`, content: "192.0.2.9", comment: `berth:server:${gone}` });
    await outOfBand("POST", "", { type: "A", name: `${handMade}.berth.example`, content: "192.0.2.10" });
    const report = await hourly();
    expect(await recordsOf(leftover)).toEqual([]);
    expect(await recordsOf(handMade)).toHaveLength(1);
    expect((report.dns as { removed: number }).removed).toBeGreaterThanOrEqual(1);
    expect(await auditOf(gone)).toEqual([{ action: "dns.record_removed", detail: { name: `${leftover}.berth.example`, type: "A", content: "192.0.2.9" } }]);
  });

  it("a deleted server's records go too", async () => {
    const { server, name } = await placed();
    await db.update(servers).set({ status: "deleted" }).where(eq(servers.id, server.id));
    await hourly();
    expect(await recordsOf(name)).toEqual([]);
  });

  it("when Cloudflare cannot be read, changes nothing and says so", async () => {
    await control("POST", "/_emulator/faults", { kind: "status", status: 502, count: 3 });
    vi.spyOn(console, "warn").mockImplementation(() => {});
    expect((await hourly()).dns).toEqual({ fixed: 0, removed: 0, waiting: 0, failed: "Cloudflare answered 502" });
  });
});

describe("pointServerAt (for moving a homeserver to another host)", () => {
  it("points the existing records at the other host, without leaving the old ones", async () => {
    const { server, name } = await placed();
    const { host: target } = await hostWithAddresses({ ipv4: "198.51.100.50", ipv6: "2001:db8::50" });
    const [targetRow] = await db.select().from(hosts).where(eq(hosts.id, target.hostId));
    expect(await pointServerAt(workContext(dnsEnv, new Date()), server as Server, targetRow!)).toEqual({ state: "ready", reason: null });
    expect((await recordsOf(name)).map((record) => `${record.type} ${record.content}`)).toEqual(["A 198.51.100.50", "AAAA 2001:db8::50"]);
  });
});

describe("a move's route switch", () => {
  it("points the records at the target host and records the switch", async () => {
    const { server, name } = await placed();
    const { host: target } = await hostWithAddresses({ ipv4: "198.51.100.60" });
    await switchRoute(workContext(dnsEnv, new Date()), server, target.hostId);
    expect((await recordsOf(name)).map((record) => `${record.type} ${record.content}`)).toEqual(["A 198.51.100.60"]);
    const [switched] = await db
      .select()
      .from(auditLog)
      .where(and(eq(auditLog.action, "server.route_switched"), eq(auditLog.target, server.id)));
    expect(switched!.detail).toEqual({ hostId: target.hostId });
  });

  it("throws when Cloudflare keeps failing, so the move rolls back, and records no switch", async () => {
    const { server, name } = await placed();
    const { host: target } = await hostWithAddresses({ ipv4: "198.51.100.61" });
    await control("POST", "/_emulator/faults", { kind: "status", status: 503, count: 3 });
    vi.spyOn(console, "warn").mockImplementation(() => {});
    await expect(switchRoute(workContext(dnsEnv, new Date()), server, target.hostId)).rejects.toThrow("DNS records not switched: Cloudflare answered 503");
    expect((await recordsOf(name)).map((record) => `${record.type} ${record.content}`)).toEqual(["A 203.0.113.20", "AAAA 2001:db8::20"]);
    const switched = await db
      .select()
      .from(auditLog)
      .where(and(eq(auditLog.action, "server.route_switched"), eq(auditLog.target, server.id)));
    expect(switched).toEqual([]);
  });
});

describe("hosts' addresses", () => {
  it("are what the agent's hello reports, shown to operators; an agent that reports none still connects", async () => {
    const cookie = await operatorCookie();
    const { host } = await hostWithAddresses(ADDRESSES);
    expect((await hostView(cookie, host.hostId)).publicAddresses).toEqual(ADDRESSES);
    const older = await hostWithAddresses(undefined);
    expect(await hostView(cookie, older.host.hostId)).toMatchObject({ status: "online", publicAddresses: null });
  });

  it("a change of address reported in a hello repoints the host's homeservers at the next minutely pass, not the hourly one", async () => {
    const { host, server, name, owner } = await placed();
    await connectedAgent(host, [], { ipv4: "198.51.100.70" });
    expect(await dnsView(owner.cookie, server.id)).toEqual({ state: "waiting", reason: "its host's address changed: its records are being updated" });
    await minutely();
    expect((await recordsOf(name)).map((record) => `${record.type} ${record.content}`)).toEqual(["A 198.51.100.70"]);
    expect(await dnsView(owner.cookie, server.id)).toEqual({ state: "ready", reason: null });
  });

  it("a hello with the same addresses leaves the records alone", async () => {
    const { host, server, owner } = await placed();
    await connectedAgent(host, [], ADDRESSES);
    expect(await dnsView(owner.cookie, server.id)).toEqual({ state: "ready", reason: null });
  });

  it("a compromised host's hello reaches only the records of the homeservers it runs", async () => {
    const victim = await placed();
    const attacker = await placed({ ipv4: "198.51.100.80" });
    // It claims the victim host's address, then a private one.
    for (const claimed of [ADDRESSES, { ipv4: "10.0.0.5" }]) {
      await connectedAgent(attacker.host, [], claimed);
      await minutely();
      await hourly();
      expect((await recordsOf(victim.name)).map((record) => `${record.type} ${record.content}`)).toEqual([`A ${ADDRESSES.ipv4}`, `AAAA ${ADDRESSES.ipv6}`]);
    }
  });

  it("are refused when they are not addresses: the hello is invalid", async () => {
    const host = await enrolledHost(await operatorCookie());
    for (const publicAddresses of [{ ipv4: "example.org" }, { ipv4: "203.0.113.1", ipv6: "203.0.113.1" }, { ipv4: "203.0.113.1", extra: true }]) {
      const agent = await FakeAgent.connect(host.hostId);
      const { nonce } = await agent.nextOfType<{ nonce: string }>("challenge");
      agent.send(helloFor(host, nonce, await sign(host.keys, host.hostId, nonce), { publicAddresses }));
      expect((await agent.waitClosed()).code).toBe(4005);
    }
  });
});
