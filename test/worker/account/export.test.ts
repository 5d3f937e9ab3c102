import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { call, expectError, PASSWORD } from "../helpers";
import { manualBackup } from "../backups/backup-helpers";
import { exportRow, exportOf as fullExportOf } from "../exports/export-helpers";
import { runningServer } from "../servers/server-helpers";
import { reportUsage, rowCount } from "./account-helpers";

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Every key and every string value anywhere in the document. */
function walk(value: Json, keys: string[] = [], strings: string[] = []) {
  if (typeof value === "string") strings.push(value);
  else if (Array.isArray(value)) for (const item of value) walk(item, keys, strings);
  else if (value && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) {
      keys.push(key);
      walk(item, keys, strings);
    }
  }
  return { keys, strings };
}

/** A paying customer with a running homeserver that reported usage and has a backup under way. */
async function customerWithData() {
  const server = await runningServer();
  reportUsage(server.agent, server.id, Date.now() - 60_000, 30);
  reportUsage(server.agent, server.id, Date.now() - 30_000, 50);
  await vi.waitFor(async () => expect(await rowCount("SELECT 1 FROM workload_usage WHERE workload_id = ?", server.id)).toBe(2));
  const backup = await manualBackup(server.owner.cookie, server.id, server.agent);
  return { ...server, backupId: backup.payload.backupId as string };
}

async function exportOf(cookie: string) {
  const response = await call("/api/me/export", { cookie });
  expect(response.status).toBe(200);
  expect(response.headers.get("content-disposition")).toMatch(/^attachment; filename="berth-export-\d{4}-\d{2}-\d{2}\.json"$/);
  expect(response.headers.get("cache-control")).toBe("no-store");
  return (await response.json()) as Record<string, any>;
}

describe("GET /api/me/export", () => {
  it("needs a session", async () => {
    await expectError(await call("/api/me/export"), 401, "unauthorized");
  });

  it("holds the four categories of the security page, each with the customer's own data", async () => {
    const { owner, id, backupId } = await customerWithData();
    const data = await exportOf(owner.cookie);
    const userId = (await env.DB.prepare("SELECT id FROM users WHERE email = ?").bind(owner.email).first<{ id: string }>())!.id;

    expect(Object.keys(data).sort()).toEqual(["account", "billing", "cannotSee", "exportedAt", "matrixMetadata", "usage"]);
    expect(data.cannotSee).toBe("We cannot see the contents of end-to-end-encrypted rooms.");

    expect(data.account).toMatchObject({ id: userId, email: owner.email, role: "customer" });
    expect(data.account.emailVerifiedAt).toEqual(expect.any(String));
    expect(data.account.sessions.length).toBe(await rowCount("SELECT 1 FROM sessions WHERE user_id = ?", userId));
    expect(data.account.emailLinks).toContainEqual(expect.objectContaining({ purpose: "verify_email", email: owner.email }));
    expect(data.account.auditLog.map((entry: any) => entry.action)).toEqual(expect.arrayContaining(["server.created", "backup.requested"]));

    expect(data.billing.stripeCustomerId).toBe(owner.customerId);
    expect(data.billing.subscriptions).toEqual([expect.objectContaining({ id: owner.subscriptionId, plan: "starter", status: "active" })]);
    expect(data.billing.invoices.length).toBe(await rowCount("SELECT 1 FROM invoices WHERE user_id = ?", userId));
    expect(data.billing.invoices.length).toBeGreaterThan(0);
    expect(data.billing.entitlement).toMatchObject({ state: "active" });
    expect(data.billing.entitlementHistory).toContainEqual(expect.objectContaining({ from: "none", to: "active" }));

    expect(data.usage).toEqual([
      {
        serverId: id,
        samples: [expect.objectContaining({ cpuPercent: 30, pids: 10 }), expect.objectContaining({ cpuPercent: 50 })],
        upkeep: [],
        storageAlerts: [],
      },
    ]);

    const [server] = data.matrixMetadata.servers;
    expect(server).toMatchObject({ id, status: "running", synapseVersion: "1.163.2", adminUserId: `@admin:${server.serverName}` });
    expect(server.settings).toEqual({
      registration: "closed",
      federation: { mode: "on" },
      messageRetentionDays: null,
      mediaRetentionDays: null,
      maxUploadMiB: 50,
    });
    expect(server.operations.map((operation: any) => operation.kind)).toEqual(["homeserver.provision", "homeserver.backup"]);
    expect(server.backups).toEqual([expect.objectContaining({ id: backupId, trigger: "manual", status: "pending" })]);
  });

  it("lists each full export of a homeserver as its owner sees it: never the passphrase or where the file is stored", async () => {
    const server = await runningServer();
    const asked = await fullExportOf(server);
    const row = (await exportRow(asked.exportId))!;
    const data = await exportOf(server.owner.cookie);
    expect(data.matrixMetadata.servers[0].exports).toEqual([
      { id: asked.exportId, status: row.status, sizeBytes: null, error: null, createdAt: expect.any(String), readyAt: null, expiresAt: null },
    ]);
    const { strings } = walk(data);
    const stored = [asked.passphrase, row.r2_key, row.upload_id, asked.job.payload.uploadBase].filter(
      (value): value is string => typeof value === "string" && value !== "",
    );
    expect(stored.length).toBeGreaterThan(1);
    for (const value of stored) {
      expect(
        strings.some((text) => text.includes(value)),
        value,
      ).toBe(false);
    }
  });

  it("holds nothing of another customer's", async () => {
    const mine = await customerWithData();
    const theirs = await customerWithData();
    const { strings } = walk(await exportOf(mine.owner.cookie));
    for (const foreign of [theirs.owner.email, theirs.owner.customerId, theirs.owner.subscriptionId, theirs.id, theirs.backupId]) {
      expect(
        strings.some((value) => value.includes(foreign)),
        foreign,
      ).toBe(false);
    }
  });

  it("holds no secret: no field named like one, and none of the secrets D1 keeps about the customer", async () => {
    const { owner, id } = await customerWithData();
    // An admin setup link leaves a hashed one-time token behind.
    expect((await call(`/api/servers/${id}/admin-password-link`, { method: "POST", cookie: owner.cookie })).status).toBe(201);
    const data = await exportOf(owner.cookie);
    expect(data.matrixMetadata.servers[0].adminSetupLinks).toHaveLength(1);

    const { keys, strings } = walk(data);
    expect(keys.filter((key) => /hash|token|secret|key|password|card/i.test(key))).toEqual([]);
    const user = (await env.DB.prepare("SELECT id, password_hash FROM users WHERE email = ?")
      .bind(owner.email)
      .first<{ id: string; password_hash: string }>())!;
    const secrets = [
      owner.cookie,
      ...owner.cookie.split("."),
      PASSWORD,
      user.password_hash,
      ...(await column("SELECT id AS v FROM sessions WHERE user_id = ?", user.id)),
      ...(await column("SELECT id AS v FROM one_time_tokens WHERE user_id = ?", user.id)),
      ...(await column("SELECT id AS v FROM admin_password_links WHERE server_id = ?", id)),
      ...(await column("SELECT wrapped_identity AS v FROM backup_keys WHERE server_id = ?", id)),
      ...(await column("SELECT r2_key AS v FROM backups WHERE server_id = ?", id)),
      ...(await column("SELECT upload_id AS v FROM backups WHERE server_id = ?", id)),
    ];
    expect(secrets.length).toBeGreaterThan(10);
    for (const secret of secrets)
      expect(
        strings.some((value) => value.includes(secret)),
        "a secret leaked",
      ).toBe(false);
  });
});

async function column(sql: string, ...bindings: unknown[]): Promise<string[]> {
  return (
    await env.DB.prepare(sql)
      .bind(...bindings)
      .all<{ v: string }>()
  ).results.map((row) => row.v);
}
