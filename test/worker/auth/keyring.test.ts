import { env } from "cloudflare:workers";
import { CompactSign, compactVerify, decodeProtectedHeader } from "jose";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { currentSigningKey } from "../../../worker/auth/keyring";
import { SESSION_ABSOLUTE_LIFETIME_MS, SIGNING_KEY_ROTATION_INTERVAL_MS } from "../../../worker/auth/policy";
import { base64UrlDecode, base64UrlEncode, sha256Hex } from "../../../worker/crypto/bytes";
import { workerConfig } from "../../../worker/config";
import { database } from "../../../worker/db/client";
import { DAY, advance, call, expectError, logIn, me, runCron, sessionCookie, signUp } from "../helpers";

// Each test starts from an empty ring at the real time; the clock only moves forward within a test.
beforeEach(async () => {
  await env.DB.prepare("DELETE FROM session_keys").run();
});
afterEach(() => vi.useRealTimers());

interface KeyRow {
  kid: string;
  wrapped_secret: string;
  retired_at: number | null;
  delete_after: number | null;
}

async function keyRing(): Promise<KeyRow[]> {
  return (await env.DB.prepare("SELECT * FROM session_keys ORDER BY created_at").all<KeyRow>()).results;
}

const kidOf = (cookie: string) => decodeProtectedHeader(cookie).kid;
const secretOf = (cookie: string) => cookie.split(".")[1]!;

/** The ring's current key, as the Worker holds it. */
const ringKey = () => currentSigningKey(database(env.DB), workerConfig(env).sessionKeyringSecret, new Date());

/** The cookie the Worker issued before its cookies were JWS: `<kid>.<secret>.<HMAC over "berth-session-v1.<kid>.<secret>">`. */
async function legacyCookie(kid: string, key: CryptoKey, secret: string): Promise<string> {
  const signature = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`berth-session-v1.${kid}.${secret}`));
  return `${kid}.${secret}.${base64UrlEncode(new Uint8Array(signature))}`;
}

/** Lets `ms` pass while the session is used every few days, so only the key ring, not idleness, matters. */
async function passTimeUsing(cookie: string, ms: number): Promise<string> {
  const step = 3 * DAY;
  for (let left = ms; left > 0; left -= step) {
    advance(Math.min(step, left));
    const response = await me(cookie);
    expect(response.status).toBe(200);
    cookie = sessionCookie(response) ?? cookie;
  }
  return cookie;
}

/** Keeps a session row alive past its natural expiry, to see the key check on its own. */
async function extendSession(cookie: string, until: number) {
  const id = await sha256Hex(secretOf(cookie));
  await env.DB.prepare("UPDATE sessions SET expires_at = ?, absolute_expires_at = ?, last_seen_at = ? WHERE id = ?").bind(until, until, Date.now(), id).run();
}

describe("the session signing key ring", () => {
  it("rotates on schedule; sessions signed by the previous key stay valid; new cookies use the new key", async () => {
    await runCron();
    const { email } = await signUp();
    const before = await passTimeUsing(await logIn(email), SIGNING_KEY_ROTATION_INTERVAL_MS + 1000);
    await runCron();
    const current = (await keyRing()).filter((key) => key.retired_at === null);
    expect(current).toHaveLength(1);
    expect(kidOf(before)).not.toBe(current[0]!.kid);

    expect((await me(before)).status).toBe(200);
    const after = await logIn(email);
    expect(kidOf(after)).toBe(current[0]!.kid);
  });

  it("re-signs a refreshed cookie with the current key", async () => {
    await runCron();
    const { email } = await signUp();
    const before = await passTimeUsing(await logIn(email), SIGNING_KEY_ROTATION_INTERVAL_MS + 1000);
    await runCron();
    advance(2 * 60 * 60 * 1000);
    const response = await me(before);
    expect(response.status).toBe(200);
    const reissued = sessionCookie(response)!;
    const currentKid = (await keyRing()).find((key) => key.retired_at === null)!.kid;
    expect(kidOf(reissued)).toBe(currentKid);
    expect(secretOf(reissued)).toBe(secretOf(before));
  });

  it("deletes a retired key once no session it signed can be alive; its cookies stop verifying", async () => {
    await runCron();
    const { email } = await signUp();
    const cookie = await logIn(email);
    const oldKid = kidOf(cookie);

    advance(SIGNING_KEY_ROTATION_INTERVAL_MS + 1000);
    await runCron();
    const retired = (await keyRing()).find((key) => key.kid === oldKid)!;
    expect(retired.retired_at).not.toBeNull();
    expect(retired.delete_after! - retired.retired_at!).toBe(SESSION_ABSOLUTE_LIFETIME_MS);

    advance(SESSION_ABSOLUTE_LIFETIME_MS + 1000);
    await runCron();
    expect((await keyRing()).some((key) => key.kid === oldKid)).toBe(false);

    await extendSession(cookie, Date.now() + DAY);
    await expectError(await me(cookie), 401);
  });

  it("refuses a cookie signed by a key that is not in the ring, even with a known key id, in either format", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    const kid = kidOf(cookie)!;
    // Same key id, signed with a key of the attacker's own.
    const foreignKey = await crypto.subtle.importKey("raw", crypto.getRandomValues(new Uint8Array(32)), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const forged = await new CompactSign(base64UrlDecode(secretOf(cookie))!).setProtectedHeader({ alg: "HS256", kid, typ: "berth-session" }).sign(foreignKey);
    await expectError(await me(forged), 401);
    await expectError(await me(await legacyCookie(kid, foreignKey, secretOf(cookie))), 401);
  });

  it("keeps key secrets wrapped: with another wrapping secret nothing verifies", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    for (const key of await keyRing()) {
      expect(key.wrapped_secret).toMatch(/^[A-Za-z0-9+/=]+\.[A-Za-z0-9+/=]+$/);
    }
    const elsewhere = await call("/api/me", { cookie, env: { SESSION_KEYRING_SECRET: "a-different-wrapping-secret-0123456789" } });
    await expectError(elsewhere, 401);
    expect((await me(cookie)).status).toBe(200);
  });
});

describe("session cookies are JWS", () => {
  it("a new session's cookie is a compact JWS: HS256 by the ring's current key, named by kid, over the session's secret", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    const { kid, key } = await ringKey();
    expect(decodeProtectedHeader(cookie)).toEqual({ alg: "HS256", kid, typ: "berth-session" });
    const { payload } = await compactVerify(cookie, key, { algorithms: ["HS256"] });
    expect(base64UrlEncode(payload)).toBe(secretOf(cookie));
    expect(
      await env.DB.prepare("SELECT id FROM sessions WHERE id = ?")
        .bind(await sha256Hex(secretOf(cookie)))
        .first(),
    ).not.toBeNull();
  });

  it("a cookie of the format before keeps its session, and is re-issued as a JWS on its first use", async () => {
    const { email } = await signUp();
    const secret = secretOf(await logIn(email));
    const { kid, key } = await ringKey();
    const legacy = await legacyCookie(kid, key, secret);
    const response = await me(legacy);
    expect(response.status).toBe(200);
    expect(((await response.json()) as { email: string }).email).toBe(email);
    const reissued = sessionCookie(response)!;
    expect(decodeProtectedHeader(reissued)).toMatchObject({ alg: "HS256", kid });
    expect(secretOf(reissued)).toBe(secret);
    const again = await me(reissued);
    expect(again.status).toBe(200);
    expect(sessionCookie(again)).toBeNull();
  });

  it("refuses what is not a session cookie, even signed by the ring's key: another type, another algorithm, none", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    const { kid, key } = await ringKey();
    const secretBytes = base64UrlDecode(secretOf(cookie))!;
    const untyped = await new CompactSign(secretBytes).setProtectedHeader({ alg: "HS256", kid, typ: "JWT" }).sign(key);
    const header = (fields: object) => base64UrlEncode(new TextEncoder().encode(JSON.stringify(fields)));
    const unsigned = `${header({ alg: "none", kid, typ: "berth-session" })}.${secretOf(cookie)}.`;
    const otherAlgorithm = `${header({ alg: "HS512", kid, typ: "berth-session" })}.${cookie.split(".").slice(1).join(".")}`;
    for (const forged of [untyped, unsigned, otherAlgorithm]) await expectError(await me(forged), 401);
    expect((await me(cookie)).status).toBe(200);
  });
});
