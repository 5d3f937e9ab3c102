import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { CLOSE, PING, PONG } from "../../../protocol/messages";
import { advance, call, post, runCron } from "../helpers";
import {
  FakeAgent,
  auditActions,
  connectedAgent,
  enrolledHost,
  helloFor,
  hostStub,
  hostView,
  newKeys,
  operatorCookie,
  refusalsSince,
  sign,
} from "./fleet-helpers";

afterEach(() => vi.useRealTimers());

describe("an agent's connection", () => {
  it("authenticates by signing a fresh challenge; the host is then online with what it reported", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const agent = await FakeAgent.connect(host.hostId);
    const challenge = await agent.nextOfType<{ nonce: string; protocol: number }>("challenge");
    expect(challenge.nonce).toMatch(/^[A-Za-z0-9_-]{43}$/);
    agent.send(helloFor(host, challenge.nonce, await sign(host.keys, host.hostId, challenge.nonce)));
    const welcome = await agent.nextOfType<{ hostId: string; protocol: number; heartbeatIntervalMs: number }>("welcome");
    expect(welcome).toMatchObject({ hostId: host.hostId, protocol: 1 });
    const view = await hostView(cookie, host.hostId);
    expect(view).toMatchObject({ status: "online", agentVersion: "0.1.0", connection: { connected: true } });
    expect(view.diskEncryption).toMatchObject({ encrypted: false, allowUnencrypted: true });
    expect(await auditActions(host.hostId)).toContain("agent.connected");
  });

  it("answers heartbeats without a message round trip", async () => {
    const host = await enrolledHost(await operatorCookie());
    const agent = await connectedAgent(host);
    agent.send(PING);
    expect(await agent.next((message) => message === PONG)).toBe(PONG);
  });

  it.each([
    [
      "a wrong signature",
      async (host: Awaited<ReturnType<typeof enrolledHost>>, nonce: string) => helloFor(host, nonce, await sign((await newKeys()).keys, host.hostId, nonce)),
      "bad signature",
    ],
    [
      "another host's identity",
      async (_host: Awaited<ReturnType<typeof enrolledHost>>, nonce: string) => {
        const other = await enrolledHost(await operatorCookie());
        return { ...helloFor(other, nonce, await sign(other.keys, other.hostId, nonce)) };
      },
      "hello names another host",
    ],
    [
      "a signature over another challenge",
      async (host: Awaited<ReturnType<typeof enrolledHost>>, nonce: string) => helloFor(host, nonce, await sign(host.keys, host.hostId, "some-other-nonce")),
      "bad signature",
    ],
  ])("refuses %s, and counts it", async (_label, forge, reason) => {
    const host = await enrolledHost(await operatorCookie());
    const refusals = await refusalsSince("agent.auth_refused");
    const agent = await FakeAgent.connect(host.hostId);
    const { nonce } = await agent.nextOfType<{ nonce: string }>("challenge");
    agent.send(await forge(host, nonce));
    expect((await agent.waitClosed()).code).toBe(CLOSE.UNAUTHORIZED);
    expect(await refusals()).toEqual({ [reason]: 1 });
  });

  it("refuses a replayed hello: a valid hello from an earlier connection does not fit a new challenge", async () => {
    const host = await enrolledHost(await operatorCookie());
    const first = await FakeAgent.connect(host.hostId);
    const { nonce } = await first.nextOfType<{ nonce: string }>("challenge");
    const recorded = helloFor(host, nonce, await sign(host.keys, host.hostId, nonce));
    first.send(recorded);
    await first.nextOfType("welcome");

    const refusals = await refusalsSince("agent.auth_refused");
    const replay = await FakeAgent.connect(host.hostId);
    await replay.nextOfType("challenge");
    replay.send(recorded);
    expect((await replay.waitClosed()).code).toBe(CLOSE.UNAUTHORIZED);
    expect(await refusals()).toEqual({ "replayed or stale challenge": 1 });
  });

  it("closes a connection that never says hello", async () => {
    const host = await enrolledHost(await operatorCookie());
    const agent = await FakeAgent.connect(host.hostId);
    await agent.nextOfType("challenge");
    advance(11_000);
    expect(await runDurableObjectAlarm(hostStub(host.hostId))).toBe(true);
    expect((await agent.waitClosed()).code).toBe(CLOSE.AUTH_TIMEOUT);
  });

  it("refuses anything but hello before authentication, and invalid messages after", async () => {
    const host = await enrolledHost(await operatorCookie());
    const early = await FakeAgent.connect(host.hostId);
    await early.nextOfType("challenge");
    early.send({ type: "job.ack", id: "x" });
    expect((await early.waitClosed()).code).toBe(CLOSE.UNAUTHORIZED);

    const agent = await connectedAgent(host);
    agent.send({ type: "job.result", id: "x", ok: "yes" });
    expect((await agent.waitClosed()).code).toBe(CLOSE.INVALID_MESSAGE);
  });

  it("tells an agent that is too old to upgrade", async () => {
    const host = await enrolledHost(await operatorCookie());
    const agent = await FakeAgent.connect(host.hostId);
    const { nonce } = await agent.nextOfType<{ nonce: string }>("challenge");
    agent.send(helloFor(host, nonce, await sign(host.keys, host.hostId, nonce), { protocols: [0] }));
    const closed = await agent.waitClosed();
    expect(closed.code).toBe(CLOSE.PROTOCOL_TOO_OLD);
    expect(closed.reason).toMatch(/upgrade berth-agent/);
  });

  it("keeps one live connection per host: a newer one replaces the older", async () => {
    const host = await enrolledHost(await operatorCookie());
    const older = await connectedAgent(host);
    const newer = await connectedAgent(host);
    expect((await older.waitClosed()).code).toBe(CLOSE.REPLACED);
    newer.send(PING);
    expect(await newer.next((message) => message === PONG)).toBe(PONG);
  });

  it("a revoked host is cut off at once and can never connect again", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const agent = await connectedAgent(host);
    expect((await post(`/api/admin/hosts/${host.hostId}/revoke`, undefined, { cookie })).status).toBe(200);
    expect((await agent.waitClosed()).code).toBe(CLOSE.REVOKED);
    expect((await hostView(cookie, host.hostId)).status).toBe("revoked");

    const refusals = await refusalsSince("agent.auth_refused");
    const again = await FakeAgent.connect(host.hostId);
    const { nonce } = await again.nextOfType<{ nonce: string }>("challenge");
    again.send(helloFor(host, nonce, await sign(host.keys, host.hostId, nonce)));
    expect((await again.waitClosed()).code).toBe(CLOSE.REVOKED);
    expect(await auditActions(host.hostId)).toContain("host.revoked");
    expect(await refusals()).toEqual({ "revoked host": 1 });
  });

  it("marks the host offline once two watch rounds in a row find 90 s of silence", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const agent = await connectedAgent(host);
    advance(60_000);
    await runDurableObjectAlarm(hostStub(host.hostId));
    expect((await hostView(cookie, host.hostId)).status).toBe("online");
    advance(31_000);
    await runDurableObjectAlarm(hostStub(host.hostId));
    advance(30_000);
    await runDurableObjectAlarm(hostStub(host.hostId));
    expect((await agent.waitClosed()).code).toBe(CLOSE.HEARTBEAT_TIMEOUT);
    expect((await hostView(cookie, host.hostId)).status).toBe("offline");
  });

  it("a connection that vanished without a close (a restart) does not leave the host online", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    await connectedAgent(host);
    await evictDurableObject(hostStub(host.hostId), { webSockets: "close" });
    await runDurableObjectAlarm(hostStub(host.hostId));
    expect((await hostView(cookie, host.hostId)).status).toBe("offline");
    expect(await auditActions(host.hostId)).toContain("agent.disconnected:no live connection");
  });

  it("the minutely cron marks a host offline that nobody has heard from", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    await connectedAgent(host);
    advance(4 * 60_000);
    await runCron(new Date(), "* * * * *");
    expect((await hostView(cookie, host.hostId)).status).toBe("offline");
    expect(await auditActions(host.hostId)).toContain("agent.disconnected:not seen (cron)");
  });

  it("counts an auto-answered heartbeat as hearing from the agent", async () => {
    // The runtime stamps auto-responses with the real clock, so this reads the stamp
    // the alarm's silence check uses instead of moving fake time past it.
    const host = await enrolledHost(await operatorCookie());
    const agent = await connectedAgent(host);
    const before = Date.now();
    agent.send(PING);
    await agent.next((message) => message === PONG);
    const heard = await runInDurableObject(hostStub(host.hostId), (_instance, state) =>
      state.getWebSockets().map((ws) => state.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0),
    );
    expect(Math.max(...heard)).toBeGreaterThanOrEqual(before - 1000);
  });

  it("refuses unknown hosts before any Durable Object exists, and plain HTTP", async () => {
    const { SELF } = await import("cloudflare:test");
    expect((await SELF.fetch("http://localhost/api/agent/connect?host=nope", { headers: { upgrade: "websocket" } })).status).toBe(404);
    const host = await enrolledHost(await operatorCookie());
    expect((await SELF.fetch(`http://localhost/api/agent/connect?host=${host.hostId}`)).status).toBe(426);
  });

  it("records the certificates the host serves and alerts operators to one near expiry", async () => {
    const cookie = await operatorCookie();
    const host = await enrolledHost(cookie);
    const agent = await connectedAgent(host);
    const soon = Date.now() + 5 * 24 * 3600_000;
    const later = Date.now() + 80 * 24 * 3600_000;
    agent.send({
      type: "inventory",
      workloads: [],
      certificates: [
        { serverName: "fresh.berth.example", notAfter: later, issuer: "CN=R11" },
        { serverName: "stale.berth.example", notAfter: soon, issuer: "CN=R11" },
      ],
    });
    await vi.waitFor(async () => {
      const listed = (await (await call("/api/admin/certificates", { cookie })).json()) as {
        certificates: { serverName: string; expiringSoon: boolean }[];
      };
      expect(listed.certificates.filter((c) => c.serverName.endsWith(".berth.example")).map((c) => [c.serverName, c.expiringSoon])).toEqual([
        ["stale.berth.example", true],
        ["fresh.berth.example", false],
      ]);
    });
    const alerts = await env.DB.prepare("SELECT target FROM audit_log WHERE action = 'certificate.expiring'").all<{ target: string }>();
    expect(alerts.results.map((row) => row.target)).toEqual(["stale.berth.example"]);
    // Reported again: no second alert the same day.
    agent.send({ type: "inventory", workloads: [], certificates: [{ serverName: "stale.berth.example", notAfter: soon, issuer: "CN=R11" }] });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const again = await env.DB.prepare("SELECT count(*) AS n FROM audit_log WHERE action = 'certificate.expiring'").first<{ n: number }>();
    expect(again!.n).toBe(1);
  });

  it("judges nearness to expiry by the certificate's lifetime: a 12-hour local-CA certificate is not an alarm at 10 hours", async () => {
    const { alertWindowMs } = await import("../../../worker/fleet/certificates");
    const now = Date.now();
    const local = { notBefore: now - 2 * 3600_000, notAfter: now + 10 * 3600_000 };
    expect(local.notAfter - now < alertWindowMs(local)).toBe(false);
    const failing = { notBefore: now - 9 * 3600_000, notAfter: now + 3 * 3600_000 };
    expect(failing.notAfter - now < alertWindowMs(failing)).toBe(true);
    expect(alertWindowMs({ notBefore: now, notAfter: now + 90 * 24 * 3600_000 })).toBe(14 * 24 * 3600_000);
  });
});
