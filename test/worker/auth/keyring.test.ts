import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { SESSION_ABSOLUTE_LIFETIME_MS, SIGNING_KEY_ROTATION_INTERVAL_MS } from "../../../worker/auth/policy";
import { sha256Hex } from "../../../worker/crypto/bytes";
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

const kidOf = (cookie: string) => cookie.split(".")[0]!;

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
  const id = await sha256Hex(cookie.split(".")[1]!);
  await env.DB.prepare("UPDATE sessions SET expires_at = ?, absolute_expires_at = ?, last_seen_at = ? WHERE id = ?")
    .bind(until, until, Date.now(), id)
    .run();
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
    const reissued = response.headers.getSetCookie().join(";");
    const currentKid = (await keyRing()).find((key) => key.retired_at === null)!.kid;
    expect(reissued).toContain(`${currentKid}.${before.split(".")[1]}.`);
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

  it("refuses a cookie signed by a key that is not in the ring, even with a known key id", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    const [kid, secret] = cookie.split(".") as [string, string];
    // Same key id, signed with a key of the attacker's own.
    const foreignKey = await crypto.subtle.importKey(
      "raw",
      crypto.getRandomValues(new Uint8Array(32)),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    const signature = new Uint8Array(
      await crypto.subtle.sign("HMAC", foreignKey, new TextEncoder().encode(`berth-session-v1.${kid}.${secret}`)),
    );
    const forged = `${kid}.${secret}.${btoa(String.fromCharCode(...signature)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_")}`;
    await expectError(await me(forged), 401);
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
