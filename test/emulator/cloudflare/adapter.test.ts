// Berth's Cloudflare DNS adapter (the official SDK) against the local emulator: the records it
// makes, the token it sends and nobody sees, and what it does when Cloudflare fails.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { DnsError, type DesiredRecord } from "../../../worker/dns/provider.ts";
import { startCloudflareHarness, TOKEN, ZONE, ZONE_ID, type CloudflareHarness } from "./helpers.ts";

let harness: CloudflareHarness;
beforeAll(async () => {
  harness = await startCloudflareHarness();
});
afterAll(() => harness.close());
beforeEach(async () => {
  await fetch(`${harness.emulator.url}/_emulator/faults`, { method: "DELETE" });
});

const unique = () => `hs-${crypto.randomUUID().slice(0, 8)}.${ZONE}`;
const a = (name: string, content = "203.0.113.10", serverId = "server-1"): DesiredRecord => ({ type: "A", name, content, serverId });

/** The error `work` fails with. */
async function failure(work: Promise<unknown>): Promise<DnsError> {
  const error = await work.then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(DnsError);
  return error as DnsError;
}

const attempts = (path: string) => harness.logs.filter((line) => line.includes(path));

describe("records", () => {
  it("creates A and AAAA records marked as Berth's, finds them by name, changes and deletes them", async () => {
    const dns = harness.dns();
    const name = unique();
    const created = await dns.create(a(name));
    const ipv6 = await dns.create({ type: "AAAA", name, content: "2001:db8::10", serverId: "server-1" });
    expect(created).toEqual({ id: expect.stringMatching(/^[0-9a-f]{32}$/), type: "A", name, content: "203.0.113.10", serverId: "server-1" });
    expect(await dns.recordsNamed(name)).toEqual([created, ipv6]);

    const moved = await dns.update(created.id, a(name, "198.51.100.7"));
    expect(moved).toEqual({ ...created, content: "198.51.100.7" });
    const stored = (await harness.records()).find((record) => record.id === created.id);
    // Not proxied (Matrix federation on 8448 and our own certificates), a short TTL for moves.
    expect(stored).toMatchObject({ content: "198.51.100.7", proxied: false, ttl: 60, comment: "berth:server:server-1" });

    await dns.delete(created.id);
    expect(await dns.recordsNamed(name)).toEqual([ipv6]);
    // Gone already: deleting it again is no error.
    await dns.delete(created.id);
    expect((await failure(dns.update(created.id, a(name)))).missing).toBe(true);
  });

  it("lists only the records Berth made, across the zone", async () => {
    const dns = harness.dns();
    const name = unique();
    const ours = await dns.create(a(name, "203.0.113.11", "server-2"));
    // A record someone made by hand, under the same name.
    const response = await fetch(`${harness.emulator.url}/client/v4/zones/${ZONE_ID}/dns_records`, {
      method: "POST",
      headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
      body: JSON.stringify({ type: "A", name, content: "192.0.2.1", ttl: 1 }),
    });
    expect(response.status).toBe(200);
    expect((await dns.recordsNamed(name)).map((record) => record.serverId)).toEqual(["server-2", null]);
    const managed = await dns.listManaged();
    expect(managed).toContainEqual(ours);
    expect(managed.every((record) => record.serverId !== null)).toBe(true);
  });

  it("refuses what Cloudflare refuses: an address that is not one, a name outside the zone", async () => {
    const dns = harness.dns();
    expect((await failure(dns.create(a(unique(), "not-an-address")))).reason).toBe("Cloudflare answered 400");
    expect((await failure(dns.create(a("elsewhere.example.org")))).reason).toBe("Cloudflare answered 400");
  });
});

describe("the API token", () => {
  it("is sent as a bearer token: without it, or with another, nothing is read or changed", async () => {
    const name = unique();
    const before = await harness.records();
    expect((await failure(harness.dns({ apiToken: "another-token-0123456789abcdefghijklmnopqrs" }).create(a(name)))).reason).toBe(
      "Cloudflare refused our API token (401)",
    );
    const unauthenticated = await fetch(`${harness.emulator.url}/client/v4/zones/${ZONE_ID}/dns_records`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ type: "A", name, content: "192.0.2.1" }),
    });
    expect(unauthenticated.status).toBe(401);
    for (const record of before) {
      const deleted = await fetch(`${harness.emulator.url}/client/v4/zones/${ZONE_ID}/dns_records/${record.id}`, { method: "DELETE" });
      expect(deleted.status).toBe(401);
    }
    expect(await harness.records()).toEqual(before);
  });

  it("is scoped to its zone: another zone's records are refused", async () => {
    const error = await failure(harness.dns({ zoneId: "ffffffffffffffffffffffffffffffff" }).listManaged());
    expect(error.reason).toBe("Cloudflare refused our API token (403)");
  });

  it("never appears in an error, its stack or the emulator's log, however the request fails", async () => {
    const dns = harness.dns({ maxRetries: 0, timeoutMs: 300 });
    await harness.fault({ kind: "status", status: 500 });
    await harness.fault({ kind: "timeout" });
    const errors = [
      await failure(dns.create(a(unique()))),
      await failure(dns.create(a(unique()))),
      await failure(harness.dns({ zoneId: "ffffffffffffffffffffffffffffffff" }).listManaged()),
      await failure(dns.update("0".repeat(32), a(unique()))),
    ];
    for (const error of errors) {
      for (const text of [error.message, error.reason, String(error), error.stack ?? "", JSON.stringify(error)]) expect(text).not.toContain(TOKEN);
    }
    expect(harness.logs.join("\n")).not.toContain(TOKEN);
  });
});

describe("failures", () => {
  it("a 5xx is retried with backoff, a bounded number of times: two failures then success makes the record", async () => {
    const name = unique();
    await harness.fault({ kind: "status", status: 503, count: 2 });
    const before = attempts(`/zones/${ZONE_ID}/dns_records`).length;
    const record = await harness.dns().create(a(name));
    expect(record.name).toBe(name);
    expect(attempts(`/zones/${ZONE_ID}/dns_records`).length - before).toBe(3);
  });

  it("gives up after its retries, with the reason, and nothing made", async () => {
    const name = unique();
    await harness.fault({ kind: "status", status: 502, count: 5 });
    const before = attempts(`/zones/${ZONE_ID}/dns_records`).length;
    expect((await failure(harness.dns().create(a(name)))).reason).toBe("Cloudflare answered 502");
    expect(attempts(`/zones/${ZONE_ID}/dns_records`).length - before).toBe(3);
    await fetch(`${harness.emulator.url}/_emulator/faults`, { method: "DELETE" });
    expect(await harness.dns().recordsNamed(name)).toEqual([]);
  });

  it("a 429 waits as Retry-After says, then goes on; one that lasts is named as such", async () => {
    await harness.fault({ kind: "status", status: 429, retryAfterSeconds: 0, count: 1 });
    expect((await harness.dns().create(a(unique()))).type).toBe("A");
    await harness.fault({ kind: "status", status: 429, retryAfterSeconds: 0, count: 3 });
    expect((await failure(harness.dns().create(a(unique())))).reason).toBe("Cloudflare is limiting our requests (429)");
  });

  it("a request left unanswered times out, is retried, and is named as such when it never answers", async () => {
    await harness.fault({ kind: "timeout", count: 1 });
    expect((await harness.dns({ timeoutMs: 300 }).create(a(unique()))).type).toBe("A");
    await harness.fault({ kind: "timeout", count: 3 });
    expect((await failure(harness.dns({ timeoutMs: 300 }).create(a(unique())))).reason).toBe("Cloudflare did not answer in time");
  });

  it("an emulator that is not there is named as unreachable", async () => {
    const dns = harness.dns({ apiUrl: "http://127.0.0.1:9", maxRetries: 0 });
    expect((await failure(dns.listManaged())).reason).toBe("Cloudflare could not be reached");
  });
});
