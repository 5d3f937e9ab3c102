import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { runningServer } from "../servers/server-helpers";
import { decrypt, exportRow, exportUnderWay, type RunningServer } from "./legal-helpers";

// The Worker's file of a legal export: what D1 holds about the homeserver (the owner's account,
// billing, the server's usage and audit entries), as JSON lines encrypted to the operator's age
// recipient and stored in R2 beside the host's file. Nothing else: no secrets, no other customer.

beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const HOUR = 60 * 60 * 1000;

async function usageSample(server: RunningServer, at: number, cpuPercent: number) {
  await env.DB.prepare(
    `INSERT INTO workload_usage (workload_id, host_id, resolution, at, cpu_percent, memory_bytes, memory_limit_bytes, network_rx_bytes,
       network_tx_bytes, block_read_bytes, block_write_bytes, pids, storage_bytes) VALUES (?, ?, 'raw', ?, ?, 1, 2, 3, 4, 5, 6, 7, 8)`,
  )
    .bind(server.id, server.host.hostId, at, cpuPercent)
    .run();
}

type Line = Record<string, any> & { record: string };

describe("the Worker's file of a legal export", () => {
  it("holds the owner's account, billing, usage and audit entries in the scope's time range, and nothing else", async () => {
    const server = await runningServer();
    const other = await runningServer();
    const now = Date.now();
    await usageSample(server, now - 10 * 60_000, 41.5);
    await usageSample(server, now - 3 * 24 * HOUR, 99.25);
    await usageSample(other, now - 10 * 60_000, 12.75);
    const scope = { users: [], rooms: [], from: now - HOUR, until: now + HOUR, content: false };
    const underWay = await exportUnderWay({ server, scope });
    const row = (await exportRow(underWay.exportId))!;
    expect(row.worker_r2_key).toBe(`legal-exports/${server.id}/${underWay.exportId}-worker.age`);

    const ciphertext = new Uint8Array(await (await env.BACKUPS.get(row.worker_r2_key))!.arrayBuffer());
    expect(ciphertext.length).toBe(row.worker_size_bytes);
    const text = await decrypt(underWay.identity, ciphertext);
    const lines = text
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line) as Line);
    const of = (kind: string) => lines.filter((line) => line.record === kind);

    expect(lines[0]).toMatchObject({ record: "export", part: "worker", exportId: underWay.exportId, server: { id: server.id }, scope });
    const owner = (await env.DB.prepare("SELECT * FROM users WHERE email = ?").bind(server.owner.email).first<Record<string, any>>())!;
    expect(of("account")).toEqual([
      {
        record: "account",
        userId: owner.id,
        email: server.owner.email,
        emailVerifiedAt: new Date(owner.email_verified_at).toISOString(),
        createdAt: new Date(owner.created_at).toISOString(),
        deletedAt: null,
      },
    ]);
    const subscriptions = await env.DB.prepare("SELECT id FROM subscriptions WHERE user_id = ?").bind(owner.id).all<{ id: string }>();
    expect(of("subscription").map((line) => line.id)).toEqual(subscriptions.results.map((sub) => sub.id));
    expect(of("subscription").length).toBeGreaterThan(0);
    const invoices = await env.DB.prepare("SELECT id FROM invoices WHERE user_id = ?").bind(owner.id).all<{ id: string }>();
    expect(
      of("invoice")
        .map((line) => line.id)
        .sort(),
    ).toEqual(invoices.results.map((invoice) => invoice.id).sort());
    expect(of("invoice").length).toBeGreaterThan(0);
    // Usage within the range only (the sample three days back is out of it), and only this server's.
    expect(of("usage").map((line) => line.cpuPercent)).toEqual([41.5]);
    const auditActions = of("audit").map((line) => line.action);
    expect(auditActions).toContain("legal_export.requested");
    const auditAbout = await env.DB.prepare("SELECT count(*) AS n FROM audit_log WHERE target = ? AND at < ?")
      .bind(server.id, row.created_at + 1)
      .first<{ n: number }>();
    expect(of("audit").length).toBe(auditAbout!.n);
    const counts = { accounts: 1, subscriptions: of("subscription").length, invoices: of("invoice").length, usageSamples: 1, auditEntries: of("audit").length };
    expect(lines.at(-1)).toEqual({ record: "end", records: counts });
    expect(JSON.parse(row.worker_records_json)).toEqual(counts);

    // No secret: no password hash, session ids or tokens of the owner; nothing of the other customer.
    const sessions = await env.DB.prepare("SELECT id FROM sessions WHERE user_id = ?").bind(owner.id).all<{ id: string }>();
    const tokens = await env.DB.prepare("SELECT id FROM one_time_tokens WHERE user_id = ?").bind(owner.id).all<{ id: string }>();
    const secrets = [owner.password_hash, ...sessions.results.map((s) => s.id), ...tokens.results.map((t) => t.id), server.owner.cookie.split("=")[1]!];
    expect(secrets.length).toBeGreaterThan(2);
    for (const secret of secrets) expect(text).not.toContain(secret);
    for (const key of ["passwordHash", "password_hash", "session", "wrappedSecret", "stripeCustomerId"]) expect(text).not.toContain(key);
    for (const trace of [other.id, other.owner.email, other.owner.subscriptionId]) expect(text).not.toContain(trace);
  });
});
