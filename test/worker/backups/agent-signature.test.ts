import { env } from "cloudflare:workers";
import { SignJWT } from "jose";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { AGENT_REQUEST_TOKEN } from "../../../protocol/agent-requests";
import { call, expectError, post, setNow } from "../helpers";
import { enrolledHost, hostStub, newKeys, operatorCookie, refusalsSince, type HostIdentity } from "../fleet/fleet-helpers";
import { runningServer } from "../servers/server-helpers";
import { backupRow, bytes, manualBackup, pathOf, sha256, signedCall, signedHeaders, signedJson, signedToken } from "./backup-helpers";

afterEach(() => vi.useRealTimers());
beforeEach(async () => {
  await env.DB.prepare("UPDATE hosts SET status = 'offline' WHERE status = 'online'").run();
});

const SECOND = 1000;
const ABORT_BODY = { reason: "x" };

async function backupUnderWay() {
  const server = await runningServer();
  const job = await manualBackup(server.owner.cookie, server.id, server.agent);
  return { ...server, base: pathOf(job.payload.uploadBase), backupId: job.payload.backupId };
}

const refusalsFrom = () => refusalsSince("agent.request_refused");

/** Refusals are counted, never audited: the audit log (and so the customer's export) has nothing about them. */
async function expectNothingAudited(...targets: string[]) {
  const placeholders = targets.map(() => "?").join(", ");
  const rows = await env.DB.prepare(`SELECT action FROM audit_log WHERE target IN (${placeholders})`)
    .bind(...targets)
    .all<{ action: string }>();
  expect(rows.results.map((row) => row.action).filter((action) => /refus/.test(action))).toEqual([]);
}

/** A token made with jose by hand: for claims the agent never makes. */
function handMadeToken(host: HostIdentity, claims: Record<string, unknown>, header: { typ?: string } = {}) {
  const iat = Math.floor(Date.now() / 1000);
  return new SignJWT({ jti: crypto.randomUUID(), iat, exp: iat + AGENT_REQUEST_TOKEN.lifetimeSeconds, iss: host.hostId, ...claims })
    .setProtectedHeader({ alg: "EdDSA", typ: header.typ ?? AGENT_REQUEST_TOKEN.type })
    .sign(host.keys.privateKey);
}

describe("agent requests carry a JWS signed by their host", () => {
  it("a token by its host's key, now, for this method, path and body is let through", async () => {
    const { host, base, backupId } = await backupUnderWay();
    const response = await signedCall(host, "PUT", `${base}/parts/1`, bytes(100));
    expect(response.status).toBe(200);
    expect(await backupRow(backupId)).toMatchObject({ status: "running", progress_bytes: 100 });
  });

  it("refuses a token used a second time, even for the very same request", async () => {
    const { host, base, id } = await backupUnderWay();
    const refusals = await refusalsFrom();
    const body = bytes(100);
    const token = await signedToken(host, "PUT", `${base}/parts/1`, body);
    expect((await signedCall(host, "PUT", `${base}/parts/1`, body, { token })).status).toBe(200);
    await expectError(await signedCall(host, "PUT", `${base}/parts/1`, body, { token }), 401, "unauthorized");
    expect(await refusals()).toEqual({ "replayed token": 1 });
    await expectNothingAudited(host.hostId, id);
    // The agent's next request, with a token of its own, goes through.
    expect((await signedCall(host, "PUT", `${base}/parts/1`, body)).status).toBe(200);
  });

  it("the host's Durable Object admits each token id once, and forgets it once the token has expired", async () => {
    const { host } = await backupUnderWay();
    const stub = hostStub(host.hostId);
    const now = Date.now();
    expect(await stub.admitRequestToken("jti-0123456789abcdef", now + 90 * SECOND, now)).toBe(true);
    expect(await stub.admitRequestToken("jti-0123456789abcdef", now + 90 * SECOND, now + 89 * SECOND)).toBe(false);
    expect(await stub.admitRequestToken("jti-0123456789abcdef", now + 90 * SECOND, now + 90 * SECOND)).toBe(true);
  });

  it("refuses a token past its 60 seconds (and 30 of clock tolerance), or from further in the future", async () => {
    const { host, base, id } = await backupUnderWay();
    const refusals = await refusalsFrom();
    const abort = (issuedAt: Date) => signedJson(host, `${base}/abort`, ABORT_BODY, { issuedAt });
    // The clock stands still: a token issued 31 s ahead must still be 31 s ahead when the Worker checks it.
    setNow(Date.now());
    await expectError(await abort(new Date(Date.now() - 91 * SECOND)), 401, "unauthorized");
    await expectError(await abort(new Date(Date.now() + 31 * SECOND)), 401, "unauthorized");
    // Signed now, sent once its time is up.
    const token = await signedToken(host, "POST", `${base}/abort`, new TextEncoder().encode(JSON.stringify(ABORT_BODY)));
    setNow(Date.now() + 91 * SECOND);
    await expectError(await signedJson(host, `${base}/abort`, ABORT_BODY, { token }), 401, "unauthorized");
    expect(await refusals()).toEqual({ "expired or not yet valid": 3 });
    await expectNothingAudited(host.hostId, id);
    expect((await abort(new Date(Date.now() + 29 * SECOND))).status).toBe(200);
  });

  it("refuses a token that claims a longer life, another type, or lacks a claim", async () => {
    const { host, base, id } = await backupUnderWay();
    const refusals = await refusalsFrom();
    const path = `${base}/abort`;
    const body = new TextEncoder().encode(JSON.stringify(ABORT_BODY));
    const bound = { method: "POST", path, body_sha256: await sha256(body) };
    const iat = Math.floor(Date.now() / 1000);
    const send = (token: string) => signedJson(host, path, ABORT_BODY, { token });
    await expectError(await send(await handMadeToken(host, { ...bound, exp: iat + 3600 })), 401, "unauthorized");
    await expectError(await send(await handMadeToken(host, bound, { typ: "JWT" })), 401, "unauthorized");
    await expectError(await send(await handMadeToken(host, { method: "POST", path })), 401, "unauthorized");
    expect(await refusals()).toEqual({ "missing or malformed token": 3 });
    await expectNothingAudited(host.hostId, id);
    expect((await send(await handMadeToken(host, bound))).status).toBe(200);
  });

  it("refuses a token by any key but the named host's: a forger's, or another enrolled host's", async () => {
    const { host, base, id } = await backupUnderWay();
    const refusals = await refusalsFrom();
    const forger = await newKeys();
    await expectError(await signedCall(host, "PUT", `${base}/parts/1`, bytes(100), { key: forger.keys }), 401, "unauthorized");
    // A token naming this host, signed by another enrolled host's own key, does not make it this host.
    const neighbour = await enrolledHost(await operatorCookie());
    await expectError(await signedJson(host, `${base}/abort`, ABORT_BODY, { key: neighbour.keys }), 401, "unauthorized");
    expect(await refusals()).toEqual({ "bad signature": 2 });
    await expectNothingAudited(host.hostId, neighbour.hostId, id);
  });

  it("another host's genuine token is that host's: it finds no backup of this host's", async () => {
    const { base, backupId } = await backupUnderWay();
    const neighbour = await enrolledHost(await operatorCookie());
    await expectError(await signedJson(neighbour, `${base}/abort`, ABORT_BODY), 404, "not_found");
    await expectError(await signedCall(neighbour, "PUT", `${base}/parts/1`, bytes(100)), 404, "not_found");
    expect(await backupRow(backupId)).toMatchObject({ status: "pending", progress_bytes: 0 });
  });

  it("refuses unknown and revoked hosts", async () => {
    const { host, base } = await backupUnderWay();
    const refusals = await refusalsFrom();
    const stranger = { ...host, hostId: crypto.randomUUID() };
    await expectError(await signedJson(stranger, `${base}/abort`, ABORT_BODY), 401);
    expect(await refusals()).toEqual({ "unknown host": 1 });

    expect((await post(`/api/admin/hosts/${host.hostId}/revoke`, undefined, { cookie: await operatorCookie() })).status).toBe(200);
    await expectError(await signedJson(host, `${base}/abort`, ABORT_BODY), 401);
    expect(await refusals()).toEqual({ "unknown host": 1, "revoked host": 1 });
  });

  it("refuses a body that is not the one signed, buffered or streamed; a refused part must be sent again", async () => {
    const { host, base, backupId, id: serverId } = await backupUnderWay();
    const refusals = await refusalsFrom();
    const signedFor = await sha256(new TextEncoder().encode(JSON.stringify({ reason: "the signed one" })));
    await expectError(await signedJson(host, `${base}/abort`, { reason: "another one" }, { contentSha256: signedFor }), 401, "unauthorized");

    expect((await signedCall(host, "PUT", `${base}/parts/1`, bytes(100, 1))).status).toBe(200);
    await expectError(await signedCall(host, "PUT", `${base}/parts/1`, bytes(100, 2), { contentSha256: await sha256(bytes(100, 3)) }), 401, "unauthorized");
    const parts = await env.DB.prepare("SELECT count(*) AS n FROM backup_parts WHERE backup_id = ?").bind(backupId).first();
    expect(parts).toEqual({ n: 0 });
    expect(await backupRow(backupId)).toMatchObject({ status: "running" });
    expect(await refusals()).toEqual({ "body does not match its signed digest": 2 });
    await expectNothingAudited(host.hostId, serverId);
  });

  it("a token holds only for its own method and path", async () => {
    const { host, base, id } = await backupUnderWay();
    const refusals = await refusalsFrom();
    const body = new TextEncoder().encode(JSON.stringify(ABORT_BODY));
    const send = async (signedFor: { method: string; path: string }, method: string, path: string) =>
      call(path, {
        method,
        rawBody: body,
        headers: { "content-type": "application/json", ...(await signedHeaders(host, signedFor.method, signedFor.path, body)) },
      });
    const abort = { method: "POST", path: `${base}/abort` };
    await expectError(await send(abort, "POST", `${base}/complete`), 401, "unauthorized");
    await expectError(await send(abort, "PUT", `${base}/parts/1`), 401, "unauthorized");
    await expectError(await send({ method: "POST", path: `${base}/parts/1` }, "PUT", `${base}/parts/1`), 401, "unauthorized");
    expect(await refusals()).toEqual({ "token for another request": 3 });
    await expectNothingAudited(host.hostId, id);
    expect((await send(abort, "POST", `${base}/abort`)).status).toBe(200);
  });

  it("refuses a request without a token, or with something else in its place", async () => {
    const { base, host } = await backupUnderWay();
    const refusals = await refusalsFrom();
    await expectError(await call(`${base}/object`), 401, "unauthorized");
    await expectError(await call(`${base}/parts/1`, { method: "PUT", rawBody: bytes(10) }), 401, "unauthorized");
    const { authorization } = await signedHeaders(host, "GET", `${base}/object`, new Uint8Array());
    for (const junk of [authorization.replace("Bearer ", "Basic "), authorization.slice(0, -10), `Bearer ${"a".repeat(5000)}.b.c`]) {
      await expectError(await call(`${base}/object`, { headers: { authorization: junk } }), 401, "unauthorized");
    }
    expect(await refusals()).toEqual({ "missing or malformed token": 4, "bad signature": 1 });
  });
});
