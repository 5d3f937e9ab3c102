// A paying customer, made the way a real one is: sign up, verify the email from
// the dev mailbox, log in, check out the starter plan and pay at the local
// Stripe emulator, wait for the webhooks to make the subscription active. And an
// operator: a verified account granted the role.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { root } from "./lib.mjs";
import { SESSION_COOKIE } from "./session-check.mjs";

const PASSWORD = "bench password 12345";
const TEST_CARD = "4242424242424242";

/** fetch that throws unless the status is `expected`; the JSON body (or null). */
export async function call(url, init = {}, expected = 200) {
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(15_000) });
  const text = await response.text();
  if (response.status !== expected) throw new Error(`${init.method ?? "GET"} ${url} answered ${response.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

export const postJson = (body, headers = {}) => ({ method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });

/** The session cookie a log-in as `email` sets. */
async function logIn(base, email) {
  const login = await fetch(`${base}/api/auth/login`, postJson({ email, password: PASSWORD }));
  if (login.status !== 200) throw new Error(`login answered ${login.status}: ${await login.text()}`);
  const cookie = login.headers
    .getSetCookie()
    .find((c) => c.startsWith(`${SESSION_COOKIE}=`))
    ?.split(";")[0];
  if (!cookie) throw new Error("login set no session cookie");
  return cookie;
}

/** Signs up as `email` and verifies the address from the dev mailbox. */
async function verifiedAccount(base, email) {
  await call(`${base}/api/auth/signup`, postJson({ email, password: PASSWORD }), 202);
  let token;
  for (let i = 0; i < 50 && !token; i++) {
    const messages = await call(`${base}/dev/mailbox.json?to=${encodeURIComponent(email)}`);
    const link = messages.flatMap((message) => message.links ?? []).find((href) => new URL(href, base).pathname === "/verify-email");
    token = link && new URL(link, base).searchParams.get("token");
    if (!token) await sleep(100);
  }
  if (!token) throw new Error(`no verification link reached the dev mailbox for ${email}`);
  await call(`${base}/api/auth/verify-email`, postJson({ token }));
}

/**
 * An operator of the dev `server` ({ base, persistTo }): a verified account granted the role with
 * scripts/operator.mjs on the server's state (only a verified account can be one), logged in.
 * Returns its session cookie.
 */
export async function operatorSession(server, tag) {
  const email = `bench-${tag}-${Date.now()}@example.com`;
  await verifiedAccount(server.base, email);
  const grant = spawnSync(process.execPath, [join(root, "scripts", "operator.mjs"), "grant", email, "--persist-to", server.persistTo], {
    cwd: root,
    encoding: "utf8",
    timeout: 60_000,
  });
  if (grant.status !== 0) throw new Error(`scripts/operator.mjs grant failed (${grant.status ?? grant.signal}): ${grant.stderr || grant.stdout}`);
  const cookie = await logIn(server.base, email);
  const hosts = await fetch(`${server.base}/api/admin/hosts`, { headers: { cookie } });
  if (hosts.status !== 200) throw new Error(`GET /api/admin/hosts as the new operator answered ${hosts.status}: ${await hosts.text()}`);
  return cookie;
}

/** Returns { email, cookie, sessionId } (the Checkout session paid). */
export async function subscribedCustomer(base, stripeUrl, tag) {
  const email = `bench-${tag}-${Date.now()}@example.com`;
  await verifiedAccount(base, email);
  const cookie = await logIn(base, email);

  const { url } = await call(`${base}/api/billing/checkout`, postJson({ plan: "starter" }, { cookie }));
  const sessionId = new URL(url).pathname.split("/").pop();
  await call(`${stripeUrl}/_emulator/checkout/sessions/${sessionId}/complete`, postJson({ card: TEST_CARD }));

  let status;
  for (let deadline = Date.now() + 20_000; Date.now() < deadline; await sleep(100)) {
    ({ status } = await call(`${base}/api/billing/subscription`, { headers: { cookie } }));
    if (status === "active") break;
  }
  if (status !== "active") throw new Error(`the subscription is ${status}, not active, 20 s after paying`);
  return { email, cookie, sessionId };
}
