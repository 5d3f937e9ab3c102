import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { DAY, advance, call, expectError, mailbox, post, PASSWORD, runCron, sessionCookie, setNow, signUp } from "../helpers";
import { bytes, uploadBackup } from "../backups/backup-helpers";
import { deliverAll, stripeGet, takeDeliveries } from "../billing/stripe-helpers";
import { jobOf, runningServer, serverView } from "../servers/server-helpers";
import { rowCount } from "./account-helpers";
import { succeeded } from "../fleet/fleet-helpers";
import { exportUnderWay, reportExport, uploadExportFile } from "../legal/legal-helpers";
import { exportOf, reportExported, uploadExport, waitForExport } from "../exports/export-helpers";

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const deleteAccount = (cookie: string, password = PASSWORD, options = {}) => call("/api/me", { method: "DELETE", cookie, body: { password }, ...options });
const userIdOf = async (email: string) => (await env.DB.prepare("SELECT id FROM users WHERE email = ?").bind(email).first<{ id: string }>())!.id;
const stripeStatus = async (subscriptionId: string) => (await stripeGet<{ status: string }>(`/v1/subscriptions/${subscriptionId}`)).status;
const logInStatus = async (email: string) => (await post("/api/auth/login", { email, password: PASSWORD })).status;

/** Nothing was deleted: the customer still logs in, pays and runs their homeserver, and no final backup was asked for. */
async function expectUntouched({ owner, id, agent }: Awaited<ReturnType<typeof runningServer>>) {
  expect((await call("/api/me", { cookie: owner.cookie })).status).toBe(200);
  expect(await stripeStatus(owner.subscriptionId)).toBe("active");
  expect((await serverView(owner.cookie, id)).status).toBe("running");
  expect(agent.messages.some((message: any) => message?.job?.kind === "homeserver.backup")).toBe(false);
}

describe("DELETE /api/me", () => {
  it("says beforehand what will happen (GET /api/me/deletion)", async () => {
    const { owner, id } = await runningServer();
    const response = await call("/api/me/deletion", { cookie: owner.cookie });
    expect(response.status).toBe(200);
    const terms = (await response.json()) as Record<string, any>;
    expect(terms.servers).toEqual([{ id, name: (await serverView(owner.cookie, id)).name }]);
    expect(terms.kept.join(" ")).toMatch(/invoices/);
    expect(Date.parse(terms.destroyedBy) - Date.now()).toBeGreaterThan(29 * DAY);
  });

  it("refuses a wrong password with 403 and deletes nothing", async () => {
    const server = await runningServer();
    await expectError(await deleteAccount(server.owner.cookie, "not my password"), 403, "invalid_password");
    await expectError(await call("/api/me", { method: "DELETE", body: { password: PASSWORD } }), 401, "unauthorized");
    await expectUntouched(server);
  });

  it("is rate-limited per session: 10 wrong passwords, then 429 whatever the client", async () => {
    // One rate-limit window throughout: a window that turned mid-test would let the refused request through.
    setNow(Date.now());
    const { email } = await signUp();
    const cookie = sessionCookie(await post("/api/auth/login", { email, password: PASSWORD }))!;
    for (let i = 0; i < 10; i++) await expectError(await deleteAccount(cookie, "wrong"), 403, "invalid_password");
    await expectError(await deleteAccount(cookie), 429, "rate_limited");
  });

  it("deletes nothing when Stripe cannot cancel the subscription (502)", async () => {
    const server = await runningServer();
    const response = await deleteAccount(server.owner.cookie, PASSWORD, { env: { STRIPE_API_URL: "http://127.0.0.1:9" } });
    await expectError(response, 502, "billing_unavailable");
    await expectUntouched(server);
  });

  it("deletes nothing while a homeserver cannot take its final backup (409)", async () => {
    const server = await runningServer();
    await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE id = ?").bind(server.host.hostId).run();
    await expectError(await deleteAccount(server.owner.cookie), 409, "host_offline");
    await env.DB.prepare("UPDATE hosts SET status = 'online' WHERE id = ?").bind(server.host.hostId).run();
    await expectUntouched(server);
  });

  it("cancels at Stripe, deletes the homeservers after their final backup, keeps the invoices detached, and mails what it did", async () => {
    const server = await runningServer();
    const { agent, host, owner, id } = server;
    const userId = await userIdOf(owner.email);
    // A legal export of the homeserver: its files and row go with the account, once retention deleted the files.
    const legalExport = await exportUnderWay({ server });
    reportExport(legalExport, await uploadExportFile(legalExport));
    await vi.waitFor(async () => expect(await rowCount("SELECT 1 FROM legal_exports WHERE id = ? AND status = 'ready'", legalExport.exportId)).toBe(1));
    // A full export, ready: its file goes when its week is over, its row with the account.
    const fullExport = await exportOf(server);
    await uploadExport(fullExport, [bytes(700, 1)]);
    await reportExported(fullExport, bytes(700, 1));
    await waitForExport(fullExport.exportId, { status: "ready" });
    const invoices = await rowCount("SELECT 1 FROM invoices WHERE user_id = ?", userId);
    expect(invoices).toBeGreaterThan(0);
    const serverName = (await serverView(owner.cookie, id)).name;
    // A day's upkeep, as its outcome records it.
    await env.DB.prepare("INSERT INTO upkeep_runs VALUES (?, ?, 3, 2, 3, 2, 1, 1, 0, 5, ?)").bind(crypto.randomUUID(), id, Date.now()).run();

    const response = await deleteAccount(owner.cookie);
    expect(response.status).toBe(202);
    expect(sessionCookie(response)).toBe("");
    const terms = (await response.json()) as Record<string, any>;
    expect(terms.servers).toEqual([{ id, name: serverName }]);

    // The subscription is cancelled now, and Stripe's own notice of it changes nothing here any more.
    expect(await stripeStatus(owner.subscriptionId)).toBe("canceled");
    await deliverAll(await takeDeliveries(owner.customerId));
    expect(await rowCount("SELECT 1 FROM subscriptions WHERE user_id = ?", userId)).toBe(0);
    expect(await rowCount("SELECT 1 FROM billing_customers WHERE user_id = ?", userId)).toBe(0);

    // Logged out everywhere, and the password no longer opens anything.
    await expectError(await call("/api/me", { cookie: owner.cookie }), 401);
    expect(await rowCount("SELECT 1 FROM sessions WHERE user_id = ?", userId)).toBe(0);
    expect(await logInStatus(owner.email)).toBe(401);
    const row = await env.DB.prepare("SELECT email, password_hash, deleted_at FROM users WHERE id = ?").bind(userId).first<Record<string, any>>();
    expect(row).toEqual({ email: `deleted-${userId}@deleted.invalid`, password_hash: "deleted", deleted_at: expect.any(Number) });
    expect(await rowCount("SELECT 1 FROM one_time_tokens WHERE user_id = ?", userId)).toBe(0);

    // Invoices are kept for bookkeeping, no longer attached to anyone.
    expect(await rowCount("SELECT 1 FROM invoices WHERE user_id = ?", userId)).toBe(0);
    expect(await rowCount("SELECT 1 FROM invoices WHERE stripe_customer_id = ? AND user_id IS NULL", owner.customerId)).toBe(invoices);

    const [mail] = (await mailbox(owner.email)).filter((sent) => sent.subject === "Your Berth account was deleted");
    expect(mail!.text).toContain(serverName);
    expect(mail!.text).toMatch(/Kept:[\s\S]*invoices/);
    expect(mail!.text).toContain(terms.destroyedBy);

    // The normal delete path: a final backup, then destruction on the host.
    const backup = await jobOf(agent, "homeserver.backup");
    const backupId = backup.job.payload.backupId as string;
    expect(await rowCount("SELECT 1 FROM backups WHERE id = ? AND trigger = 'final'", backupId)).toBe(1);
    expect((await uploadBackup(host, backup.job.payload.uploadBase, [bytes(1000)])).status).toBe(200);
    agent.send(succeeded(backup.job));
    const destroy = await jobOf(agent, "homeserver.delete");
    agent.send(succeeded(destroy.job));
    await vi.waitFor(async () => expect(await rowCount("SELECT 1 FROM servers WHERE id = ? AND status = 'deleted'", id)).toBe(1));

    // The scrubbed row waits for the final backup's retention; then the account is gone, the invoices stay.
    await runCron();
    expect(await rowCount("SELECT 1 FROM users WHERE id = ?", userId)).toBe(1);
    advance(31 * DAY);
    await runCron();
    expect(await rowCount("SELECT 1 FROM backups WHERE id = ?", backupId)).toBe(0);
    expect(await rowCount("SELECT 1 FROM users WHERE id = ?", userId)).toBe(0);
    expect(await rowCount("SELECT 1 FROM servers WHERE id = ?", id)).toBe(0);
    expect(await rowCount("SELECT 1 FROM workloads WHERE id = ?", id)).toBe(0);
    expect(await rowCount("SELECT 1 FROM upkeep_runs WHERE server_id = ?", id)).toBe(0);
    expect(await rowCount("SELECT 1 FROM jobs WHERE payload LIKE ?", `%${id}%`)).toBe(0);
    expect(await rowCount("SELECT 1 FROM legal_exports WHERE server_id = ?", id)).toBe(0);
    expect(await rowCount("SELECT 1 FROM audit_log WHERE action = 'legal_export.files_deleted' AND target = ?", id)).toBe(1);
    expect(await rowCount("SELECT 1 FROM server_exports WHERE server_id = ?", id)).toBe(0);
    expect(await rowCount("SELECT 1 FROM audit_log WHERE action = 'export.expired' AND target = ?", id)).toBe(1);
    expect(await rowCount("SELECT 1 FROM invoices WHERE stripe_customer_id = ?", owner.customerId)).toBe(invoices);
  });

  it("frees the address: the same email can sign up again", async () => {
    const { email } = await signUp();
    const cookie = sessionCookie(await post("/api/auth/login", { email, password: PASSWORD }))!;
    expect((await deleteAccount(cookie)).status).toBe(202);
    await signUp(email);
    expect(await rowCount("SELECT 1 FROM users WHERE email = ? AND deleted_at IS NULL", email)).toBe(1);
  });
});
