import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { MINUTE, call, expectError, post } from "../helpers";
import { enrolledHost, newKeys, operatorCookie, refusalsSince } from "../fleet/fleet-helpers";
import { runningServer } from "../servers/server-helpers";
import { backupRow, bytes, manualBackup, pathOf, sha256, signedCall, signedHeaders, signedJson } from "./backup-helpers";

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

async function backupUnderWay() {
  const server = await runningServer();
  const job = await manualBackup(server.owner.cookie, server.id, server.agent);
  return { ...server, base: pathOf(job.payload.uploadBase), backupId: job.payload.backupId };
}

const refusalsFrom = () => refusalsSince("agent.request_refused");

describe("signed agent requests", () => {
  it("a request signed by its host's key, now, over this method, path and body is let through", async () => {
    const { host, base, backupId } = await backupUnderWay();
    const response = await signedCall(host, "PUT", `${base}/parts/1`, bytes(100));
    expect(response.status).toBe(200);
    expect(await backupRow(backupId)).toMatchObject({ status: "running", progress_bytes: 100 });
  });

  it("refuses a signature by any other key", async () => {
    const { host, base } = await backupUnderWay();
    const refusals = await refusalsFrom();
    const forger = await newKeys();
    await expectError(await signedCall(host, "PUT", `${base}/parts/1`, bytes(100), { key: forger.keys }), 401, "unauthorized");
    // Even another enrolled host's own key does not make it this host.
    const neighbour = await enrolledHost(await operatorCookie());
    await expectError(await signedJson(host, `${base}/abort`, { reason: "x" }, { key: neighbour.keys }), 401, "unauthorized");
    expect(await refusals()).toEqual({ "bad signature": 2 });
  });

  it("refuses unknown and revoked hosts", async () => {
    const { host, base } = await backupUnderWay();
    const refusals = await refusalsFrom();
    const stranger = { ...host, hostId: crypto.randomUUID() };
    await expectError(await signedJson(stranger, `${base}/abort`, { reason: "x" }), 401);
    expect(await refusals()).toEqual({ "unknown host": 1 });

    expect((await post(`/api/admin/hosts/${host.hostId}/revoke`, undefined, { cookie: await operatorCookie() })).status).toBe(200);
    await expectError(await signedJson(host, `${base}/abort`, { reason: "x" }), 401);
    expect(await refusals()).toEqual({ "unknown host": 1, "revoked host": 1 });
  });

  it("refuses a timestamp more than five minutes from the Worker's clock, either way", async () => {
    const { host, base } = await backupUnderWay();
    const refusals = await refusalsFrom();
    const abort = (timestamp: number) => signedJson(host, `${base}/abort`, { reason: "x" }, { timestamp });
    await expectError(await abort(Date.now() - 6 * MINUTE), 401);
    await expectError(await abort(Date.now() + 6 * MINUTE), 401);
    expect(await refusals()).toEqual({ "timestamp outside the window": 2 });
    expect((await abort(Date.now() - 4 * MINUTE)).status).toBe(200);
  });

  it("refuses a body that is not the one signed, buffered or streamed; a refused part must be sent again", async () => {
    const { host, base, backupId, id: serverId } = await backupUnderWay();
    const refusals = await refusalsFrom();
    const signedFor = await sha256(new TextEncoder().encode(JSON.stringify({ reason: "the signed one" })));
    await expectError(await signedJson(host, `${base}/abort`, { reason: "another one" }, { contentSha256: signedFor }), 401);

    expect((await signedCall(host, "PUT", `${base}/parts/1`, bytes(100, 1))).status).toBe(200);
    await expectError(await signedCall(host, "PUT", `${base}/parts/1`, bytes(100, 2), { contentSha256: await sha256(bytes(100, 3)) }), 401);
    const parts = await env.DB.prepare("SELECT count(*) AS n FROM backup_parts WHERE backup_id = ?").bind(backupId).first();
    expect(parts).toEqual({ n: 0 });
    expect(await backupRow(backupId)).toMatchObject({ status: "running" });
    expect(await refusals()).toEqual({ "body does not match its signed digest": 2 });
    // Nothing about it in the customer's audit log: the body proves nothing.
    const audited = await env.DB.prepare("SELECT action FROM audit_log WHERE target = ?").bind(serverId).all<{ action: string }>();
    expect(audited.results.map((row) => row.action)).not.toContain("backup.part_refused");
  });

  it("a signature holds only for its own method and path", async () => {
    const { host, base } = await backupUnderWay();
    const body = new TextEncoder().encode(JSON.stringify({ reason: "x" }));
    const replay = async (method: string, path: string) =>
      call(path, { method, rawBody: body, headers: { "content-type": "application/json", ...(await signedHeaders(host, "POST", `${base}/abort`, body)) } });
    await expectError(await replay("POST", `${base}/complete`), 401);
    await expectError(await replay("PUT", `${base}/parts/1`), 401);
    expect((await replay("POST", `${base}/abort`)).status).toBe(200);
  });

  it("refuses a request without the signature headers", async () => {
    const { base } = await backupUnderWay();
    const refusals = await refusalsFrom();
    await expectError(await call(`${base}/object`), 401, "unauthorized");
    await expectError(await call(`${base}/parts/1`, { method: "PUT", rawBody: bytes(10) }), 401, "unauthorized");
    expect(await refusals()).toEqual({ "missing or malformed signature headers": 2 });
  });
});
