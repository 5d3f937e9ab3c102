import { SELF } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { CLOSE } from "../../../protocol/messages";
import { RATE_LIMIT_RULES } from "../../../worker/auth/rate-limit";
import { DAY, HOUR, call, expectError, post, randomIp, runCron, setNow } from "../helpers";
import { connectedAgent, enrollBody, FakeAgent, helloFor, newKeys, operatorCookie, sign } from "../fleet/fleet-helpers";
import { runningServer } from "../servers/server-helpers";
import { bytes, manualBackup, pathOf, signedCall, signedJson, signedToken } from "../backups/backup-helpers";

// Callers who prove nothing are refused without writing to anyone's audit log:
// they are counted for operators per hour and reason, and limited per client.

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
  // Counts are per hour and limits per fixed window: the clock stands still, so no test straddles two.
  setNow(Date.now());
});

interface RefusalCount {
  kind: string;
  reason: string;
  hourStart: string;
  count: number;
}

async function refusalCounts(cookie: string): Promise<RefusalCount[]> {
  const response = await call("/api/admin/refusals", { cookie });
  expect(response.status).toBe(200);
  return ((await response.json()) as { refusals: RefusalCount[] }).refusals;
}

/** The number counted under kind and reason in the current hour, as operators see it. */
async function counted(cookie: string, kind: string, reason: string): Promise<number> {
  const hourStart = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000).toISOString();
  return (await refusalCounts(cookie)).find((row) => row.kind === kind && row.reason === reason && row.hourStart === hourStart)?.count ?? 0;
}

async function auditRowsAbout(...targets: string[]) {
  const placeholders = targets.map(() => "?").join(", ");
  return (
    await env.DB.prepare(`SELECT action, actor, target FROM audit_log WHERE target IN (${placeholders})`)
      .bind(...targets)
      .all()
  ).results;
}

async function exportOf(cookie: string): Promise<string> {
  const response = await call("/api/me/export", { cookie });
  expect(response.status).toBe(200);
  return response.text();
}

describe("refusals of unauthenticated callers", () => {
  it("a signed agent request naming a customer's server or account as its host writes nothing the customer sees; operators see it counted", async () => {
    const victim = await runningServer();
    const { base } = { base: pathOf((await manualBackup(victim.owner.cookie, victim.id, victim.agent)).payload.uploadBase) };
    const victimUserId = ((await (await call("/api/me", { cookie: victim.owner.cookie })).json()) as { id: string }).id;
    const operator = await operatorCookie();
    const auditBefore = await auditRowsAbout(victim.id, victimUserId);
    const before = await counted(operator, "agent.request_refused", "unknown host");

    const forger = await newKeys();
    for (const claimed of [victim.id, victimUserId]) {
      const impostor = { ...victim.host, hostId: claimed };
      await expectError(await signedJson(impostor, `${base}/abort`, { reason: "x" }, { key: forger.keys }), 401, "unauthorized");
    }

    expect(await auditRowsAbout(victim.id, victimUserId)).toEqual(auditBefore);
    const exported = await exportOf(victim.owner.cookie);
    expect(exported).not.toContain("agent.request_refused");
    expect(exported).not.toContain("anonymous");
    expect(await counted(operator, "agent.request_refused", "unknown host")).toBe(before + 2);
  });

  it("audit entries an unauthenticated caller made before this was so are not in the customer's export", async () => {
    const { id, owner } = await runningServer();
    await env.DB.prepare("INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, 'anonymous', 'agent.request_refused', ?, '{}')")
      .bind(Date.now(), id)
      .run();
    expect(await exportOf(owner.cookie)).not.toContain("agent.request_refused");
  });

  it("a request claiming a real host with a bad signature is counted, not audited against that host", async () => {
    const { host, owner, id, agent } = await runningServer();
    const base = pathOf((await manualBackup(owner.cookie, id, agent)).payload.uploadBase);
    const operator = await operatorCookie();
    const before = await counted(operator, "agent.request_refused", "bad signature");
    await expectError(await signedCall(host, "PUT", `${base}/parts/1`, bytes(100), { key: (await newKeys()).keys }), 401, "unauthorized");
    expect(await counted(operator, "agent.request_refused", "bad signature")).toBe(before + 1);
    expect((await auditRowsAbout(host.hostId)).filter((row) => row.action === "agent.request_refused")).toEqual([]);
  });

  it("operators only: a customer gets 403 and nobody logged in 401", async () => {
    const { owner } = await runningServer();
    await expectError(await call("/api/admin/refusals", { cookie: owner.cookie }), 403, "operator_only");
    await expectError(await call("/api/admin/refusals"), 401);
  });

  it("limits refusals per client: once over the limit, a 429 in the error shape with Retry-After, before any other check", async () => {
    const { host, owner, id, agent } = await runningServer();
    const base = pathOf((await manualBackup(owner.cookie, id, agent)).payload.uploadBase);
    const operator = await operatorCookie();
    const ip = randomIp();
    const forgedToken = await signedToken({ ...host, hostId: id }, "POST", `${base}/abort`, new Uint8Array(), { key: (await newKeys()).keys });
    const forged = async () => call(`${base}/abort`, { method: "POST", ip, headers: { authorization: `Bearer ${forgedToken}` } });
    for (let i = 0; i < RATE_LIMIT_RULES.agent_refusals_ip.limit; i++) await expectError(await forged(), 401, "unauthorized");
    const limited = await forged();
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0);
    await expectError(limited, 429, "rate_limited");
    const rateLimitedBefore = await counted(operator, "agent.request_refused", "rate limited");
    await expectError(await forged(), 429, "rate_limited");
    expect(await counted(operator, "agent.request_refused", "rate limited")).toBe(rateLimitedBefore + 1);

    // Another client, and the genuine agent, are not affected.
    await expectError(await call(`${base}/abort`, { method: "POST" }), 401, "unauthorized");
    expect((await signedJson(host, `${base}/abort`, { reason: "done" })).status).toBe(200);
  });

  it("a WebSocket hello that proves nothing is counted, not audited, even for a known host", async () => {
    const { host } = await runningServer();
    const operator = await operatorCookie();
    const before = await counted(operator, "agent.auth_refused", "bad signature");
    const auditBefore = await auditRowsAbout(host.hostId);

    const impostor = await FakeAgent.connect(host.hostId);
    const { nonce } = await impostor.nextOfType<{ nonce: string }>("challenge");
    impostor.send(helloFor(host, nonce, await sign((await newKeys()).keys, host.hostId, nonce)));
    expect((await impostor.waitClosed()).code).toBe(CLOSE.UNAUTHORIZED);

    const early = await FakeAgent.connect(host.hostId);
    await early.nextOfType("challenge");
    early.send({ type: "job.ack", id: "x" });
    expect((await early.waitClosed()).code).toBe(CLOSE.UNAUTHORIZED);

    await vi.waitFor(async () => expect(await counted(operator, "agent.auth_refused", "bad signature")).toBe(before + 1));
    await vi.waitFor(async () => expect(await counted(operator, "agent.auth_refused", "no hello")).toBeGreaterThan(0));
    expect(await auditRowsAbout(host.hostId)).toEqual(auditBefore);
  });

  it("limits refused connections per client: once over the limit, the upgrade itself is a 429", async () => {
    const { host } = await runningServer();
    const operator = await operatorCookie();
    const ip = randomIp();
    for (let i = 0; i < RATE_LIMIT_RULES.agent_refusals_ip.limit + 1; i++) {
      const impostor = await FakeAgent.connect(host.hostId, ip);
      await impostor.nextOfType("challenge");
      impostor.send({ type: "job.ack", id: "x" });
      expect((await impostor.waitClosed()).code).toBe(CLOSE.UNAUTHORIZED);
    }
    const before = await counted(operator, "agent.auth_refused", "rate limited");
    const limited = await SELF.fetch(`http://localhost/api/agent/connect?host=${host.hostId}`, { headers: { upgrade: "websocket", "cf-connecting-ip": ip } });
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0);
    await expectError(limited, 429, "rate_limited");
    expect(await counted(operator, "agent.auth_refused", "rate limited")).toBe(before + 1);
    // The genuine agent, elsewhere, still connects.
    await connectedAgent(host);
  });

  it("an enrollment with a bad join token naming a customer's server is counted, not audited", async () => {
    const { id, owner } = await runningServer();
    const operator = await operatorCookie();
    const before = await counted(operator, "host.enroll_refused", "invalid join token");
    const response = await post("/api/agent/enroll", enrollBody("bjt_nonsense", (await newKeys()).publicKey, id));
    await expectError(response, 400, "invalid_join_token");
    expect(await counted(operator, "host.enroll_refused", "invalid join token")).toBe(before + 1);
    expect(await auditRowsAbout(id)).not.toContainEqual(expect.objectContaining({ action: "host.enroll_refused" }));
    expect(await exportOf(owner.cookie)).not.toContain("enroll_refused");
  });

  it("keeps the counts for 90 days: the hourly cron removes older hours", async () => {
    const hour = (daysAgo: number) => Math.floor((Date.now() - daysAgo * DAY) / HOUR) * HOUR;
    for (const daysAgo of [91, 89]) {
      await env.DB.prepare("INSERT INTO refusal_counts (kind, reason, hour_start, count) VALUES ('agent.auth_refused', 'timeout', ?, 3)")
        .bind(hour(daysAgo))
        .run();
    }
    await runCron();
    const kept = await env.DB.prepare("SELECT hour_start FROM refusal_counts WHERE hour_start IN (?, ?)")
      .bind(hour(91), hour(89))
      .all<{ hour_start: number }>();
    expect(kept.results).toEqual([{ hour_start: hour(89) }]);
  });
});
