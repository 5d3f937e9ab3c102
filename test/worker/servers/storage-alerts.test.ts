import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { CLOSE } from "../../../protocol/messages";
import { EVERY_MINUTE } from "../../../worker/scheduled";
import { connectedAgent } from "../fleet/fleet-helpers";
import { DAY, call, expectError, logIn, mailbox, runCron, setNow, verifiedUser } from "../helpers";
import { onlineHost, runningServer } from "./server-helpers";
import { QUOTA, quotaReporter, quotaSample } from "./storage-helpers";

// A homeserver's storage quota at 80 % and 95 %: its owner and the operators are mailed once per
// threshold, from the figures its host reports, and nobody else hears of it.

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  // Each test brings its own host: an earlier test's idle one would take the next server.
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

async function verifiedOperator() {
  const operator = await verifiedUser();
  await env.DB.prepare("UPDATE users SET role = 'operator' WHERE email = ?").bind(operator.email).run();
  return { ...operator, cookie: await logIn(operator.email) };
}

const subjects = async (email: string) => (await mailbox(email)).map((mail) => mail.subject).reverse();

async function auditOf(serverId: string) {
  const rows = await env.DB.prepare("SELECT actor, action, detail FROM audit_log WHERE target = ? AND action LIKE 'storage.%' ORDER BY id")
    .bind(serverId)
    .all<{ actor: string; action: string; detail: string }>();
  return rows.results.map((row) => ({ actor: row.actor, action: row.action, detail: JSON.parse(row.detail) }));
}

interface AlertList {
  alerts: { serverId: string; threshold: number; notifiedAt: string | null; current: { usedBytes: number; quotaBytes: number } | null }[];
}

describe("storage quota alerts", () => {
  it("mail the owner and the operators once per threshold crossed, and again after usage fell well below and rose again", async () => {
    const operator = await verifiedOperator();
    const { agent, owner, id } = await runningServer();
    const serverName = ((await (await call(`/api/servers/${id}`, { cookie: owner.cookie })).json()) as { serverName: string }).serverName;
    const report = quotaReporter(agent, id);

    await report(0.5);
    expect(await subjects(owner.email)).not.toContainEqual(expect.stringContaining("storage"));

    await report(0.82);
    expect(await subjects(owner.email)).toContain(`${serverName} has used 80 % of its storage`);
    const [ownerMail] = await mailbox(owner.email);
    expect(ownerMail!.text).toContain(`${serverName} uses 880 MB of its 1.1 GB of storage (82 %).`);
    expect(ownerMail!.text).toContain("uploads (images, files) are refused; messages keep working for a while");
    expect(ownerMail!.text).toContain("delete media you no longer need, or move to a plan with more storage");
    expect(ownerMail!.links.map((link) => new URL(link).pathname)).toEqual([`/servers/${id}`]);
    const [operatorMail] = await mailbox(operator.email);
    expect(operatorMail!.subject).toBe(`[Berth operators] ${serverName} at 80 % of its storage quota`);
    expect(operatorMail!.text).toContain(`Server: ${id}`);

    // Still past 80 %: nothing new.
    await report(0.86);
    await report(0.79);
    const storageMails = async (email: string) => (await subjects(email)).filter((subject) => subject.includes("storage"));
    expect(await storageMails(owner.email)).toHaveLength(1);
    expect(await storageMails(operator.email)).toHaveLength(1);

    await report(0.96);
    expect(await storageMails(owner.email)).toEqual([`${serverName} has used 80 % of its storage`, `${serverName} has used 95 % of its storage`]);
    expect(await storageMails(operator.email)).toHaveLength(2);
    await report(0.97);
    expect(await storageMails(owner.email)).toHaveLength(2);

    const list = await call("/api/admin/storage-alerts", { cookie: operator.cookie });
    expect(list.status).toBe(200);
    const mine = ((await list.json()) as AlertList).alerts.filter((alert) => alert.serverId === id);
    expect(mine.map((alert) => alert.threshold)).toEqual([0.95, 0.8]);
    expect(mine.every((alert) => alert.notifiedAt !== null)).toBe(true);
    expect(mine[0]!.current).toMatchObject({ usedBytes: Math.ceil(QUOTA * 0.97), quotaBytes: QUOTA });

    // Media deleted: below 75 % both alerts clear (below 90 % only the 95 % one would); crossing 80 % again mails again.
    await report(0.7);
    expect(((await (await call("/api/admin/storage-alerts", { cookie: operator.cookie })).json()) as AlertList).alerts.some((a) => a.serverId === id)).toBe(
      false,
    );
    await report(0.82);
    expect(await storageMails(owner.email)).toEqual([
      `${serverName} has used 80 % of its storage`,
      `${serverName} has used 95 % of its storage`,
      `${serverName} has used 80 % of its storage`,
    ]);
    expect(await storageMails(operator.email)).toHaveLength(3);

    // Audited by the system: which server, which threshold, nothing else.
    expect(await auditOf(id)).toEqual([
      { actor: "system", action: "storage.threshold_crossed", detail: { threshold: 0.8 } },
      { actor: "system", action: "storage.threshold_crossed", detail: { threshold: 0.95 } },
      { actor: "system", action: "storage.alert_cleared", detail: { threshold: 0.8 } },
      { actor: "system", action: "storage.alert_cleared", detail: { threshold: 0.95 } },
      { actor: "system", action: "storage.threshold_crossed", detail: { threshold: 0.8 } },
    ]);
  });

  it("a sample past both thresholds at once sends one mail, naming 95 %", async () => {
    const { agent, owner, id } = await runningServer();
    const report = quotaReporter(agent, id);
    await report(0.99);
    await report(0.99);
    const storage = (await mailbox(owner.email)).filter((mail) => mail.subject.includes("storage"));
    expect(storage.map((mail) => mail.subject)).toEqual([expect.stringMatching(/has used 95 % of its storage$/)]);
    expect((await auditOf(id)).map((entry) => entry.detail.threshold)).toEqual([0.8, 0.95]);
  });

  it("another customer never sees them: no mail, no page, no list, not in their export", async () => {
    const { agent, owner, id } = await runningServer();
    const other = await verifiedUser();
    const otherCookie = await logIn(other.email);
    await quotaReporter(agent, id)(0.96);
    expect((await mailbox(other.email)).filter((mail) => mail.subject.includes("storage"))).toEqual([]);
    await expectError(await call(`/api/servers/${id}`, { cookie: otherCookie }), 404, "not_found");
    expect((await call(`/servers/${id}`, { cookie: otherCookie, headers: { accept: "text/html" } })).status).toBe(404);
    await expectError(await call("/api/admin/storage-alerts", { cookie: otherCookie }), 403, "operator_only");
    const exported = (await (await call("/api/me/export", { cookie: otherCookie })).json()) as { usage: unknown[] };
    expect(exported.usage).toEqual([]);
    // Its owner's export holds them.
    const ownExport = (await (await call("/api/me/export", { cookie: owner.cookie })).json()) as { usage: { storageAlerts: { threshold: number }[] }[] };
    expect(ownExport.usage[0]!.storageAlerts.map((alert) => alert.threshold)).toEqual([0.8, 0.95]);
    await expectError(await call("/api/admin/storage-alerts"), 401);
  });

  it("figures no filesystem reports are refused with the message: nothing stored, nothing mailed, the roll-up unharmed", async () => {
    const { agent, host, owner, id } = await runningServer();
    const absurd = [
      { usedBytes: 0, quotaBytes: 0 },
      { usedBytes: 2 * QUOTA, quotaBytes: QUOTA },
      { usedBytes: -1, quotaBytes: QUOTA },
      { usedBytes: 1, quotaBytes: -QUOTA },
      { usedBytes: 1e300, quotaBytes: 1e300 },
      { usedBytes: 0.5, quotaBytes: QUOTA },
      { usedBytes: QUOTA },
    ];
    let connection = agent;
    for (const quota of absurd) {
      connection.send({ type: "usage", samples: [quotaSample(Date.now(), id, quota)] });
      await vi.waitFor(() => expect(connection.closed?.code).toBe(CLOSE.INVALID_MESSAGE));
      connection = await connectedAgent(host);
    }
    const stored = await env.DB.prepare("SELECT count(*) AS n FROM workload_usage WHERE workload_id = ? AND quota_bytes IS NOT NULL")
      .bind(id)
      .first<{ n: number }>();
    expect(stored!.n).toBe(0);
    await runCron(new Date(), EVERY_MINUTE);
    await runCron();
    expect((await mailbox(owner.email)).filter((mail) => mail.subject.includes("storage"))).toEqual([]);
    expect(await auditOf(id)).toEqual([]);

    // The same host's genuine figures still count.
    await quotaReporter(connection, id)(0.9);
    expect((await mailbox(owner.email)).filter((mail) => mail.subject.includes("storage"))).toHaveLength(1);
  });

  it("another host cannot raise them: figures for a homeserver it does not run are dropped", async () => {
    const { owner, id } = await runningServer();
    const other = await onlineHost();
    other.agent.send({ type: "usage", samples: [quotaSample(Date.now(), id, { usedBytes: QUOTA, quotaBytes: QUOTA })] });
    // Its own host sample is stored: the message was taken, and the forged figures left out.
    await vi.waitFor(async () => {
      const hostRows = await env.DB.prepare("SELECT count(*) AS n FROM host_usage WHERE host_id = ?").bind(other.host.hostId).first<{ n: number }>();
      expect(hostRows!.n).toBe(1);
    });
    await runCron(new Date(), EVERY_MINUTE);
    const stored = await env.DB.prepare("SELECT count(*) AS n FROM workload_usage WHERE workload_id = ?").bind(id).first<{ n: number }>();
    expect(stored!.n).toBe(0);
    expect((await mailbox(owner.email)).filter((mail) => mail.subject.includes("storage"))).toEqual([]);
    expect(await auditOf(id)).toEqual([]);
  });

  it("a host whose figures swing back and forth mails at most 4 times a day per homeserver", async () => {
    // One day's window (from 00:00 UTC) throughout: a window that turned mid-test would let the refused request through.
    setNow(Date.now());
    const { agent, owner, id } = await runningServer();
    const report = quotaReporter(agent, id);
    for (let i = 0; i < 5; i++) {
      await report(1);
      await report(0);
    }
    const storageMails = async () => (await mailbox(owner.email)).filter((mail) => mail.subject.includes("storage"));
    expect(await storageMails()).toHaveLength(4);
    // Every crossing is still recorded for operators.
    expect((await auditOf(id)).filter((entry) => entry.action === "storage.threshold_crossed")).toHaveLength(10);

    // A day later, a crossing that stands is mailed again.
    setNow(Date.now() + DAY);
    await quotaReporter(agent, id)(0.85);
    expect(await storageMails()).toHaveLength(5);
  });
});
