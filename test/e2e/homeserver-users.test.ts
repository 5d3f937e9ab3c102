// A homeserver's users, administered by its owner through the API, proven where it counts: in
// what the people can do with matrix-js-sdk over HTTPS (trusting only Caddy's CA). The product
// runs as `npm run dev` with its local agent and Caddy; a paying customer creates one homeserver.
// The first admin's one-time link sets the admin's password the way any user's is set. A user
// made through the API sets a password through the link's page and logs in; the link works once.
// A reset's link sets a new password, the old one stops working and so do the sessions from
// before. Making and unmaking admin changes what the user's own token may do on Synapse's admin
// API; logging out everywhere ends every token; a deactivated user cannot log in, and no link
// brings one back. The plan's user limit refuses the user past it. Registration is closed by
// default: a registration token from the API registers no one.
//
// Each person talks to the homeserver from an address of their own (127.0.0.x): Synapse limits
// log-ins per client address (5, then one every few minutes), as it would for people on their
// own devices.
import { randomBytes, randomUUID } from "node:crypto";
import type { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Api, type DevServer, runCleanups, waitFor } from "./agent-helpers";
import {
  administer,
  administered,
  caddyDispatcher,
  createHomeserver,
  fetchThrough,
  matrixRequest,
  payingCustomer,
  registerWithToken,
  requireHomeserverHost,
  homeserverDiagnostics,
  skipAfterFirstFailure,
  Timeline,
  startDevWithAgent,
  stopDevWithAgent,
  sdkPasswordLogin,
  untilRunning,
  type FetchFn,
  type Login,
  type ServerView,
} from "./homeserver-helpers";

const password = (label: string) => `berth-e2e-${label}-${randomBytes(12).toString("hex")}`;

let dev: DevServer;
let api: Api;
let server: ServerView | undefined;
let caPem: string;
const dispatchers: Agent[] = [];
const timeline = new Timeline();
const mark = (what: string) => timeline.mark(what);

const serverPath = (rest = "") => `/api/servers/${server!.id}${rest}`;
const userPath = (userId: string, rest = "") => serverPath(`/users/${encodeURIComponent(userId)}${rest}`);

/** A person's own connection to the homeserver: HTTPS through Caddy, from 127.0.0.<n>. */
function personFetch(n: number): FetchFn {
  const dispatcher = caddyDispatcher(caPem, { localAddress: `127.0.0.${n}` });
  dispatchers.push(dispatcher);
  return fetchThrough(dispatcher);
}

interface CreatedUser {
  userId: string;
  passwordLink: { url: string; expiresAt: string };
}

/** POST /api/servers/:id/users; when the host answered after the route stopped waiting, the link is asked for next (as the API says). */
async function createUser(localpart: string, displayName?: string): Promise<CreatedUser> {
  const created = await administered<CreatedUser | { userId: string }>(api, "POST", serverPath("/users"), {
    localpart,
    ...(displayName ? { displayName } : {}),
  });
  if ("passwordLink" in created) return created;
  const { url, expiresAt } = await api.expect<{ url: string; expiresAt: string }>(201, "POST", userPath(created.userId, "/password-link"));
  return { userId: created.userId, passwordLink: { url, expiresAt } };
}

const tokenOf = (url: string) => new URL(url).searchParams.get("token")!;

/** The link's JSON endpoint, as the person's own client would call it (no session). */
function setPasswordThroughLink(userId: string, url: string, newPassword: string) {
  return api.request<{ status: string; userId: string; sessionsEnded?: number; error?: { code: string } }>("POST", userPath(userId, "/password"), {
    token: tokenOf(url),
    password: newPassword,
  });
}

/** Logs in once the password is set: at once when the Worker said "set", else when the host has written it. */
function logInOnceSet(fetchFn: FetchFn, user: string, newPassword: string, set: boolean): Promise<Login> {
  if (set) return sdkPasswordLogin(fetchFn, server!.homeserverUrl, user, newPassword);
  return waitFor(`${user} to log in with the password set through the link`, () => sdkPasswordLogin(fetchFn, server!.homeserverUrl, user, newPassword), {
    timeoutMs: 60_000,
    intervalMs: 3_000,
  });
}

/** Whom an access token logs in as: 200 and the user, or 401 and Synapse's errcode. */
async function whoami(fetchFn: FetchFn, login: Login): Promise<{ status: number; userId?: string; errcode?: string }> {
  const { status, body } = await matrixRequest<{ user_id?: string; errcode?: string }>(
    fetchFn,
    "GET",
    `${server!.homeserverUrl}/_matrix/client/v3/account/whoami`,
    {
      token: login.accessToken,
      expect: [200, 401],
    },
  );
  return { status, userId: body.user_id, errcode: body.errcode };
}

/** What Synapse's admin API answers the user's own token: 200 for an admin, 403 otherwise. */
async function adminApiStatus(fetchFn: FetchFn, login: Login): Promise<number> {
  const { status } = await matrixRequest(fetchFn, "GET", `${server!.homeserverUrl}/_synapse/admin/v2/users/${encodeURIComponent(login.userId)}`, {
    token: login.accessToken,
    expect: [200, 403],
  });
  return status;
}

describe("a homeserver's users, administered through the API, as their people see it with matrix-js-sdk", () => {
  beforeAll(async () => {
    await requireHomeserverHost();
    dev = await startDevWithAgent("berth-e2e-homeserver-users-");
    api = new Api(dev.baseUrl);
    mark("dev server (Worker, Stripe emulator, Caddy, agent) answers");
  });

  afterAll(async () => {
    await Promise.all(dispatchers.map((dispatcher) => dispatcher.close().catch(() => undefined)));
    await stopDevWithAgent(dev, "homeserver users e2e");
    await runCleanups();
    console.log(`[homeserver users e2e] timings:\n${timeline}`);
  });

  // Once a step fails, the later ones (which build on it) are skipped.
  skipAfterFirstFailure(() => homeserverDiagnostics(timeline, dev, api, server));

  it("a paying customer's homeserver runs", { timeout: 240_000 }, async () => {
    await payingCustomer(api, dev.baseUrl, `homeserver-users-${randomUUID()}@example.com`, password("account"));
    server = await createHomeserver(api, `e2e-users-${randomBytes(3).toString("hex")}`);
    server = await untilRunning(api, server.id, mark);
    caPem = await dev.caddyRoot();
    mark(`server running (Synapse ${server.synapseVersion})`);
  });

  it("the first admin's link sets the admin's password the same way; the admin logs in and may use the admin API", { timeout: 120_000 }, async () => {
    const adminFetch = personFetch(10);
    const { url, adminUserId } = await api.expect<{ url: string; adminUserId: string }>(201, "POST", serverPath("/admin-password-link"));
    const adminPassword = password("admin");
    const setting = await api.expect<{ status: string; jobId: string }>(202, "POST", serverPath("/admin-password"), {
      token: tokenOf(url),
      password: adminPassword,
    });
    expect(setting.status).toBe("setting");
    const job = await waitFor(
      "the admin password's job to finish",
      async () => {
        const { lastJob } = await api.expect<ServerView>(200, "GET", serverPath());
        return lastJob?.kind === "homeserver.set_admin_password" && (lastJob.status === "succeeded" || lastJob.status === "failed") && lastJob;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    expect(job.status).toBe("succeeded");
    const admin = await sdkPasswordLogin(adminFetch, server!.homeserverUrl, adminUserId, adminPassword);
    expect(admin.userId).toBe(adminUserId);
    expect(await adminApiStatus(adminFetch, admin)).toBe(200);
    expect(await api.request("POST", serverPath("/admin-password"), { token: tokenOf(url), password: password("admin-again") })).toMatchObject({
      status: 400,
      body: { error: { code: "invalid_token" } },
    });
    mark("the first admin's password set through its link; the admin logged in");
  });

  let carol: CreatedUser;
  let carolFetch: FetchFn;
  let carolLogin: Login;
  const carolPasswords = { first: password("carol-first"), reset: password("carol-reset") };

  it("a user made through the API sets a password through the link's page and logs in; the link works once", { timeout: 120_000 }, async () => {
    carolFetch = personFetch(11);
    carol = await createUser("carol", "Carol");
    expect(carol.userId).toBe(`@carol:${server!.serverName}`);
    const link = new URL(carol.passwordLink.url);
    expect(`${link.origin}${link.pathname}`).toBe(`${dev.baseUrl}/homeservers/${server!.id}/set-password`);
    const lifetimeMs = Date.parse(carol.passwordLink.expiresAt) - Date.now();
    expect(lifetimeMs).toBeGreaterThan(23 * 3600_000);
    expect(lifetimeMs).toBeLessThanOrEqual(24 * 3600_000);
    const { users } = await administered<{ users: Array<Record<string, unknown>> }>(api, "GET", serverPath("/users?search=carol"));
    expect(users).toEqual([expect.objectContaining({ userId: carol.userId, displayName: "Carol", admin: false, deactivated: false, devices: 0 })]);
    mark("carol created through the API");

    // Made without a password: nobody logs in as carol before the link is used.
    await expect(sdkPasswordLogin(carolFetch, server!.homeserverUrl, "carol", carolPasswords.first)).rejects.toMatchObject({
      httpStatus: 403,
      errcode: "M_FORBIDDEN",
    });

    // Carol opens the link (no session: she has no account with us) and submits its form, as a browser does.
    const page = await fetch(carol.passwordLink.url, { signal: AbortSignal.timeout(30_000) });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain(`Set the password of ${carol.userId}`);
    const submitted = await fetch(`${dev.baseUrl}/homeservers/${server!.id}/set-password`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: dev.baseUrl, "sec-fetch-site": "same-origin" },
      body: new URLSearchParams({ token: tokenOf(carol.passwordLink.url), password: carolPasswords.first }),
      signal: AbortSignal.timeout(30_000),
    });
    const answer = await submitted.text();
    expect(submitted.status, answer).toBe(200);
    expect(answer).toContain("Password set");
    carolLogin = await logInOnceSet(carolFetch, "carol", carolPasswords.first, answer.includes(`The password of ${carol.userId} is set.`));
    expect(carolLogin.userId).toBe(carol.userId);
    expect(await whoami(carolFetch, carolLogin)).toMatchObject({ status: 200, userId: carol.userId });
    mark("carol set her password through the link's page and logged in with matrix-js-sdk");

    // The same link again, through its JSON endpoint and its page: refused.
    const again = await setPasswordThroughLink(carol.userId, carol.passwordLink.url, password("carol-again"));
    expect(again).toMatchObject({ status: 400, body: { error: { code: "invalid_token" } } });
    const pageAgain = await fetch(carol.passwordLink.url, { signal: AbortSignal.timeout(30_000) });
    expect(pageAgain.status).toBe(400);
    expect(await pageAgain.text()).toContain("This link does not work");
    // Her password is still the one she set.
    expect(await whoami(carolFetch, carolLogin)).toMatchObject({ status: 200 });
  });

  it("a reset's link sets a new password: it logs in, the old one does not, and the sessions from before end", { timeout: 120_000 }, async () => {
    const superseded = await api.expect<{ userId: string; url: string }>(201, "POST", userPath(carol.userId, "/password-link"));
    const reset = await api.expect<{ userId: string; url: string; expiresAt: string }>(201, "POST", userPath(carol.userId, "/password-link"));
    expect(reset.userId).toBe(carol.userId);
    // Only the newest link of a user works.
    expect(await setPasswordThroughLink(carol.userId, superseded.url, carolPasswords.reset)).toMatchObject({
      status: 400,
      body: { error: { code: "invalid_token" } },
    });

    const set = await setPasswordThroughLink(carol.userId, reset.url, carolPasswords.reset);
    expect([200, 202], JSON.stringify(set.body)).toContain(set.status);
    if (set.status === 200) expect(set.body).toEqual({ status: "set", userId: carol.userId, sessionsEnded: 1 });
    else expect(set.body).toEqual({ status: "setting", userId: carol.userId });
    const afterReset = await logInOnceSet(carolFetch, "carol", carolPasswords.reset, set.status === 200);
    expect(afterReset.userId).toBe(carol.userId);
    mark(`carol's password reset through a new link (${set.body.status})`);

    expect(await whoami(carolFetch, carolLogin)).toMatchObject({ status: 401, errcode: "M_UNKNOWN_TOKEN" });
    expect(await whoami(carolFetch, afterReset)).toMatchObject({ status: 200, userId: carol.userId });
    await expect(sdkPasswordLogin(carolFetch, server!.homeserverUrl, "carol", carolPasswords.first)).rejects.toMatchObject({
      httpStatus: 403,
      errcode: "M_FORBIDDEN",
    });
    carolLogin = afterReset;
  });

  it("making and unmaking admin changes what the user's own token may do; logging out everywhere ends every token", { timeout: 120_000 }, async () => {
    const erinFetch = personFetch(12);
    const erin = await createUser("erin");
    const erinPassword = password("erin");
    const set = await setPasswordThroughLink(erin.userId, erin.passwordLink.url, erinPassword);
    expect([200, 202], JSON.stringify(set.body)).toContain(set.status);
    const phone = await logInOnceSet(erinFetch, "erin", erinPassword, set.status === 200);
    const laptop = await sdkPasswordLogin(erinFetch, server!.homeserverUrl, "erin", erinPassword);
    expect(laptop.deviceId).not.toBe(phone.deviceId);
    mark("erin logged in on two devices");

    expect(await adminApiStatus(erinFetch, phone)).toBe(403);
    const madeAdmin = await administered(api, "POST", userPath(erin.userId, "/admin"));
    expect(madeAdmin).toMatchObject({ user: { userId: erin.userId, admin: true, devices: 2 }, devicesLoggedOut: 0, removed: [] });
    expect(await adminApiStatus(erinFetch, phone)).toBe(200);
    expect(await adminApiStatus(erinFetch, laptop)).toBe(200);
    const unmade = await administered(api, "POST", userPath(erin.userId, "/unadmin"));
    expect(unmade).toMatchObject({ user: { userId: erin.userId, admin: false }, devicesLoggedOut: 0 });
    expect(await adminApiStatus(erinFetch, phone)).toBe(403);
    expect(await adminApiStatus(erinFetch, laptop)).toBe(403);
    mark("erin made admin and unmade");

    const loggedOut = await administered(api, "POST", userPath(erin.userId, "/log-out"));
    expect(loggedOut).toMatchObject({ user: { userId: erin.userId, devices: 0 }, devicesLoggedOut: 2 });
    for (const session of [phone, laptop]) {
      expect(await whoami(erinFetch, session)).toMatchObject({ status: 401, errcode: "M_UNKNOWN_TOKEN" });
    }
    // Carol, another user, is still logged in.
    expect(await whoami(carolFetch, carolLogin)).toMatchObject({ status: 200 });
    mark("erin logged out everywhere");
  });

  it("a deactivated user cannot log in, and no password link brings them back", { timeout: 120_000 }, async () => {
    const daveFetch = personFetch(13);
    const dave = await createUser("dave");
    const davePassword = password("dave");
    const set = await setPasswordThroughLink(dave.userId, dave.passwordLink.url, davePassword);
    expect([200, 202], JSON.stringify(set.body)).toContain(set.status);
    const session = await logInOnceSet(daveFetch, "dave", davePassword, set.status === 200);

    const deactivated = await administered(api, "POST", userPath(dave.userId, "/deactivate"), { erase: false });
    expect(deactivated).toMatchObject({ user: { userId: dave.userId, deactivated: true }, devicesLoggedOut: 1 });
    expect(deactivated.removed).toContain("the user's password, so they can no longer log in");
    mark("dave deactivated");

    // The password that worked a moment ago (deactivation removed it: Synapse answers as for a wrong one).
    await expect(sdkPasswordLogin(daveFetch, server!.homeserverUrl, "dave", davePassword)).rejects.toMatchObject({
      httpStatus: 403,
      errcode: "M_FORBIDDEN",
    });
    expect(await whoami(daveFetch, session)).toMatchObject({ status: 401, errcode: "M_UNKNOWN_TOKEN" });

    // A new link can be made, but the host refuses to give a deactivated user a password.
    const link = await api.expect<{ url: string }>(201, "POST", userPath(dave.userId, "/password-link"));
    const refused = await setPasswordThroughLink(dave.userId, link.url, password("dave-revived"));
    expect(refused).toMatchObject({ status: 502, body: { error: { code: "homeserver_error" } } });
    await expect(sdkPasswordLogin(daveFetch, server!.homeserverUrl, "dave", davePassword)).rejects.toMatchObject({
      httpStatus: 403,
      errcode: "M_FORBIDDEN",
    });
  });

  it("registration is closed by default: a registration token from the API registers no one through Synapse's token flow", { timeout: 120_000 }, async () => {
    const created = await administered<{ token: { token: string; usesLeft: number } }>(api, "POST", serverPath("/registration-tokens"), { usesAllowed: 1 });
    expect(created.token.usesLeft).toBe(1);
    await expect(
      registerWithToken(personFetch(14), server!.homeserverUrl, { username: "frank", password: password("frank"), token: created.token.token }),
    ).rejects.toMatchObject({ httpStatus: 403, errcode: "M_FORBIDDEN" });
    const { tokens } = await administered<{ tokens: Array<{ token: string; completed: number; usesLeft: number }> }>(
      api,
      "GET",
      serverPath("/registration-tokens"),
    );
    expect(tokens).toEqual([expect.objectContaining({ token: created.token.token, completed: 0, usesLeft: 1 })]);
    // Revoked, so that it reserves no place under the plan's limit below.
    expect(await administered(api, "DELETE", serverPath(`/registration-tokens/${created.token.token}`))).toEqual({ revoked: true });
    mark("registration refused with a token while closed");
  });

  it("registration by token (a setting): a token-holder registers through Synapse's token flow, and the used-up token is refused", {
    timeout: 240_000,
  }, async () => {
    const changed = await administered<{ settings: { registration: string } }>(api, "PATCH", serverPath("/settings"), { registration: "token" });
    expect(changed.settings.registration).toBe("token");
    mark("registration set to by token (Synapse restarted)");
    const created = await administered<{ token: { token: string } }>(api, "POST", serverPath("/registration-tokens"), { usesAllowed: 1 });
    const frank = await registerWithToken(personFetch(15), server!.homeserverUrl, {
      username: "frank",
      password: password("frank"),
      token: created.token.token,
    });
    expect(frank.userId).toBe(`@frank:${server!.serverName}`);
    expect(await whoami(personFetch(15), frank)).toMatchObject({ status: 200, userId: frank.userId });
    await expect(
      registerWithToken(personFetch(16), server!.homeserverUrl, { username: "grace", password: password("grace"), token: created.token.token }),
    ).rejects.toMatchObject({ httpStatus: 401 });
    const { tokens } = await administered<{ tokens: Array<{ token: string; completed: number; usesLeft: number }> }>(
      api,
      "GET",
      serverPath("/registration-tokens"),
    );
    expect(tokens).toEqual([expect.objectContaining({ token: created.token.token, completed: 1, usesLeft: 0 })]);
    const listed = await administered<{ users: Array<{ userId: string }> }>(api, "GET", serverPath("/users?search=grace"));
    expect(listed.users).toEqual([]);
    mark("a token-registered user registered; the used-up token refused");
  });

  it("the plan's user limit: the user past it is refused with user_limit, and so is a registration token", { timeout: 300_000 }, async () => {
    const { plans } = await api.expect<{ plans: Array<{ id: string; maxUsers: number }> }>(200, "GET", "/api/billing/plans");
    const maxUsers = plans.find((plan) => plan.id === server!.plan)!.maxUsers;
    // What the limit counts: users not deactivated (the first admin among them; the host's service account is no user).
    const { users } = await administered<{ users: Array<{ userId: string; deactivated: boolean }> }>(api, "GET", serverPath("/users?limit=100"));
    const active = users.filter((user) => !user.deactivated).length;
    expect(active).toBe(4); // the first admin, carol, erin, frank
    const fillingStarted = Date.now();
    for (let n = active; n < maxUsers; n++) {
      const created = await administer(api, "POST", serverPath("/users"), { localpart: `member-${n}` });
      expect(created.error, `user ${n + 1} of ${maxUsers}`).toBeUndefined();
    }
    const fillingSeconds = (Date.now() - fillingStarted) / 1000;
    mark(`${maxUsers - active} users created up to the ${server!.plan} plan's ${maxUsers} in ${fillingSeconds.toFixed(1)} s`);

    const refused = await administer(api, "POST", serverPath("/users"), { localpart: "one-too-many" });
    expect(refused.error).toMatchObject({ code: "user_limit" });
    expect(refused.error!.message).toContain(`allows ${maxUsers} users on a homeserver; this one has ${maxUsers}`);
    const token = await administer(api, "POST", serverPath("/registration-tokens"), { usesAllowed: 1 });
    expect(token.error).toMatchObject({ code: "user_limit" });
    const listed = await administered<{ users: Array<{ userId: string }>; total: number }>(api, "GET", serverPath("/users?search=one-too-many"));
    expect(listed.users).toEqual([]);

    // A deactivated user frees a place.
    await administered(api, "POST", userPath(`@member-${active}:${server!.serverName}`, "/deactivate"), { erase: true });
    expect(await createUser("one-too-many")).toMatchObject({ userId: `@one-too-many:${server!.serverName}` });
    mark("the user past the limit refused; a deactivation made room");
  });
});
