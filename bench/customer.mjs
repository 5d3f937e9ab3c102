// A paying customer, made the way a real one is: sign up, verify the email from
// the dev mailbox, log in, check out the starter plan and pay at the local
// Stripe emulator, wait for the webhooks to make the subscription active.
import { setTimeout as sleep } from "node:timers/promises";
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

/** Returns { email, cookie, sessionId } (the Checkout session paid). */
export async function subscribedCustomer(base, stripeUrl, tag) {
  const email = `bench-${tag}-${Date.now()}@example.com`;
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

  const login = await fetch(`${base}/api/auth/login`, postJson({ email, password: PASSWORD }));
  if (login.status !== 200) throw new Error(`login answered ${login.status}: ${await login.text()}`);
  const cookie = login.headers
    .getSetCookie()
    .find((c) => c.startsWith(`${SESSION_COOKIE}=`))
    ?.split(";")[0];
  if (!cookie) throw new Error("login set no session cookie");

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
