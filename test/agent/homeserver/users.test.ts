// A homeserver's users and registration tokens, run by the agent against a real
// Synapse with the host's service account: the account itself (hidden, its
// token only on the host, taken back when the server's own admin breaks it),
// users listed, created, given a password and changed, registration tokens,
// the plan's bound on users, and the jobs refusing users they may not touch.
// One homeserver goes through all of it, in order.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import bcrypt from "bcryptjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { credentialsPath } from "../../../agent/homeserver/service-account.ts";
import { registerWithSharedSecret, requestJson } from "../../../agent/homeserver/synapse-api.ts";
import { DEFAULT_HOMESERVER_SETTINGS } from "../../../protocol/homeserver-settings.ts";
import { TestRun, dockerUsable, ensureImages, registerClientWithToken } from "./helpers.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`homeserver users tests skipped: ${unusable}`);

interface ListedUser {
  userId: string;
  displayName: string | null;
  admin: boolean;
  deactivated: boolean;
  createdAt: number | null;
  lastSeenAt: number | null;
  devices: number;
  mediaBytes: number;
}
interface UserPage {
  users: ListedUser[];
  total: number;
  nextFrom: number | null;
}

describe.skipIf(unusable)("a homeserver's users and registration tokens (real Synapse)", () => {
  let run: TestRun;
  let spec: ReturnType<TestRun["spec"]>;
  let provisioned: unknown;
  const results: unknown[] = [];

  const serviceId = () => `@berth-service:${spec.serverName}`;
  const userId = (localpart: string) => `@${localpart}:${spec.serverName}`;
  const serviceToken = () => (JSON.parse(readFileSync(credentialsPath(run.paths(spec.serverId)), "utf8")) as { accessToken: string }).accessToken;
  const job = async <T>(kind: keyof TestRun["handlers"], payload: Record<string, unknown>): Promise<T> => {
    const result = (await run.run(kind, { serverId: spec.serverId, ...payload })) as T;
    results.push(result);
    return result;
  };
  const list = (query: { from?: number; limit?: number; search?: string } = {}) => job<UserPage>("homeserver.users.list", { from: 0, limit: 100, ...query });
  const listed = async (localpart: string) => (await list()).users.find((u) => u.userId === userId(localpart));
  const adminApi = async (path: string, token = serviceToken(), method = "GET", body?: unknown) =>
    requestJson(`${await run.synapseBase(spec.serverId)}/_synapse/admin${path}`, { method, token, ...(body === undefined ? {} : { body }) });
  const whoami = async (token: string) => (await requestJson(`${await run.synapseBase(spec.serverId)}/_matrix/client/v3/account/whoami`, { token })).status;
  let aliceSession: { status: number; token?: string } = { status: 0 };
  let clients = 0;
  /**
   * A password log-in, each from its own client address (X-Forwarded-For, which Synapse's
   * listener trusts behind our proxy): Synapse lets one address log in 5 times in a burst, then
   * once in 5 minutes, and these tests log in more often than that.
   */
  const login = async (localpart: string, password: string): Promise<{ status: number; token?: string }> => {
    clients++;
    const response = await fetch(`${await run.synapseBase(spec.serverId)}/_matrix/client/v3/login`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-forwarded-for": `198.51.100.${clients}` },
      body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: localpart }, password }),
    });
    const body = (await response.json()) as { access_token?: string };
    return { status: response.status, ...(body.access_token ? { token: body.access_token } : {}) };
  };
  /** A user made through the job, with a password set through the job, logged in once. */
  const userWithSession = async (localpart: string) => {
    expect(await job("homeserver.users.create", { localpart, maxUsers: 100 })).toEqual({ outcome: "created", userId: userId(localpart) });
    const password = `pw-${localpart}-1`;
    await job("homeserver.users.set_password", { userId: userId(localpart), passwordHash: bcrypt.hashSync(password, 4) });
    const session = await login(localpart, password);
    expect(session.status).toBe(200);
    return { password, token: session.token! };
  };

  beforeAll(async () => {
    await ensureImages();
    run = new TestRun();
    // A plan of one user: the first admin takes the place, the service account is exempt.
    spec = run.spec("people", { maxUsers: 1 });
    provisioned = await run.run("homeserver.provision", spec);
  }, 600_000);

  afterAll(async () => {
    await run?.cleanup();
  }, 180_000);

  it("provisioning makes the service account: a hidden Synapse admin whose token is only in a root-only file on the host", async () => {
    // Synapse's own check had the plan's bound before it started: the admin filled it, the service account passed.
    expect(readFileSync(join(run.paths(spec.serverId).synapse, "user-limit"), "utf8")).toBe("1\n");
    const file = statSync(credentialsPath(run.paths(spec.serverId)));
    expect([file.mode & 0o777, file.uid, file.gid]).toEqual([0o600, 0, 0]);
    const self = await adminApi(`/v2/users/${encodeURIComponent(serviceId())}`);
    expect(self.status).toBe(200);
    expect(self.body).toMatchObject({ name: serviceId(), admin: true, deactivated: false, user_type: "support" });

    const page = await list();
    expect(page).toEqual({ users: [expect.objectContaining({ userId: userId("admin"), admin: true })], total: 1, nextFrom: null });

    const token = serviceToken();
    expect(await run.everythingSaid(spec.serverId, [provisioned, results])).not.toContain(token);
    for (const path of readdirSync(run.stateDir, { recursive: true }) as string[]) {
      const full = join(run.stateDir, path);
      if (statSync(full).isFile()) expect(readFileSync(full, "utf8")).not.toContain(token);
    }
    // Not among the files a backup takes: the server's uid owns secrets/, root owns the file's directory.
    expect(readdirSync(run.paths(spec.serverId).secrets).join(" ")).not.toMatch(/service/);
  });

  it("users.create makes a user without a password, listed with its display name; an existing id or the service account's is taken", async () => {
    expect(await job("homeserver.users.create", { localpart: "alice", displayName: "Alice Liddell", maxUsers: 10 })).toEqual({
      outcome: "created",
      userId: userId("alice"),
    });
    const alice = await listed("alice");
    expect(alice).toEqual({
      userId: userId("alice"),
      displayName: "Alice Liddell",
      admin: false,
      deactivated: false,
      createdAt: expect.any(Number),
      lastSeenAt: null,
      devices: 0,
      mediaBytes: 0,
    });
    // milliseconds, like every timestamp of the catalogue
    expect(alice!.createdAt).toBeGreaterThan(Date.now() - 24 * 3600_000);
    expect(alice!.createdAt).toBeLessThanOrEqual(Date.now());
    expect((await login("alice", "anything")).status).toBe(403);

    for (const localpart of ["alice", "admin", "berth-service"]) {
      expect(await job("homeserver.users.create", { localpart, maxUsers: 10 })).toEqual({ outcome: "taken", userId: userId(localpart) });
    }
    expect((await adminApi(`/v2/users/${encodeURIComponent(serviceId())}`)).body).toMatchObject({ admin: true, deactivated: false });
  });

  it("users.set_password writes the hash from the control plane and ends every session of the user", async () => {
    const one = bcrypt.hashSync("alice password one", 4);
    const two = bcrypt.hashSync("alice password two", 4);
    expect(await job("homeserver.users.set_password", { userId: userId("alice"), passwordHash: one })).toEqual({
      serverId: spec.serverId,
      userId: userId("alice"),
      sessionsEnded: 0,
    });
    const first = await login("alice", "alice password one");
    const second = await login("alice", "alice password one");
    expect([first.status, second.status]).toEqual([200, 200]);
    const media = Buffer.alloc(12_345, 7);
    const upload = await fetch(`${await run.synapseBase(spec.serverId)}/_matrix/media/v3/upload?filename=a.bin`, {
      method: "POST",
      headers: { authorization: `Bearer ${first.token}`, "content-type": "application/octet-stream" },
      body: media,
    });
    expect(upload.status).toBe(200);
    expect(await listed("alice")).toMatchObject({ devices: 2, mediaBytes: 12_345 });

    expect(await job("homeserver.users.set_password", { userId: userId("alice"), passwordHash: two })).toMatchObject({ sessionsEnded: 2 });
    expect([await whoami(first.token!), await whoami(second.token!)]).toEqual([401, 401]);
    expect((await login("alice", "alice password one")).status).toBe(403);
    aliceSession = await login("alice", "alice password two");
    expect(aliceSession.status).toBe(200);
    // the hash went to psql on stdin: in no log, progress message or exec's command line
    expect(await run.everythingSaid(spec.serverId)).not.toContain(two);
    for (const id of (await run.runtime.inspectContainer(run.names(spec.serverId).postgres))?.ExecIDs ?? []) {
      const exec = await run.docker
        .getExec(id)
        .inspect()
        .catch(() => undefined);
      expect(JSON.stringify(exec ?? {})).not.toContain(two);
    }
  });

  it("users.update makes and unmakes an admin, logs out of every device, deactivates, and deactivates erasing", async () => {
    const session = aliceSession;
    const made = await job<{ user: ListedUser; devicesLoggedOut: number }>("homeserver.users.update", { userId: userId("alice"), action: "make_admin" });
    expect(made).toMatchObject({ serverId: spec.serverId, user: { userId: userId("alice"), admin: true, displayName: "Alice Liddell" }, devicesLoggedOut: 0 });
    expect(made.user.createdAt).toBe((await listed("alice"))!.createdAt);
    expect((await adminApi("/v2/users?limit=1", session.token!)).status).toBe(200);
    expect(await job("homeserver.users.update", { userId: userId("alice"), action: "unmake_admin" })).toMatchObject({ user: { admin: false } });
    expect((await adminApi("/v2/users?limit=1", session.token!)).status).toBe(403);

    const devices = (await listed("alice"))!.devices;
    expect(devices).toBeGreaterThanOrEqual(1);
    const loggedOut = await job("homeserver.users.update", { userId: userId("alice"), action: "log_out" });
    expect(loggedOut).toMatchObject({ user: { devices: 0, deactivated: false }, devicesLoggedOut: devices });
    expect(await whoami(session.token!)).toBe(401);

    const bob = await userWithSession("bob");
    expect(await job("homeserver.users.update", { userId: userId("bob"), action: "deactivate" })).toMatchObject({
      user: { userId: userId("bob"), deactivated: true, devices: 0 },
      devicesLoggedOut: 1,
    });
    expect(await whoami(bob.token)).toBe(401);
    expect((await login("bob", bob.password)).status).toBe(403);
    expect((await adminApi(`/v2/users/${encodeURIComponent(userId("bob"))}`)).body).toMatchObject({ deactivated: true, erased: false });

    const carol = await userWithSession("carol");
    expect(await job("homeserver.users.update", { userId: userId("carol"), action: "deactivate_and_erase" })).toMatchObject({
      user: { deactivated: true },
      devicesLoggedOut: 1,
    });
    expect((await login("carol", carol.password)).status).toBe(403);
    expect((await adminApi(`/v2/users/${encodeURIComponent(userId("carol"))}`)).body).toMatchObject({ deactivated: true, erased: true });
    // Deactivated users stay listed (their ids are never given out again).
    expect((await list()).users.map((u) => [u.userId, u.deactivated])).toEqual(
      expect.arrayContaining([
        [userId("bob"), true],
        [userId("carol"), true],
      ]),
    );
    await expect(job("homeserver.users.set_password", { userId: userId("bob"), passwordHash: bcrypt.hashSync("x", 4) })).rejects.toThrow(/is deactivated/);
    await expect(job("homeserver.users.update", { userId: userId("nobody"), action: "log_out" })).rejects.toThrow(/does not exist/);
  });

  it("refuses a user of another server, and the service account, before changing anything", async () => {
    const hash = bcrypt.hashSync("taken over", 4);
    const before = await list();
    for (const target of [`@alice:other.example`, `@alice:${spec.serverName}.evil.example`, serviceId()]) {
      const why = target === serviceId() ? /is the host's service account/ : /is not a user of/;
      await expect(job("homeserver.users.set_password", { userId: target, passwordHash: hash })).rejects.toThrow(why);
      for (const action of ["make_admin", "unmake_admin", "deactivate", "deactivate_and_erase", "log_out"]) {
        await expect(job("homeserver.users.update", { userId: target, action })).rejects.toThrow(why);
      }
    }
    expect((await adminApi(`/v2/users/${encodeURIComponent(serviceId())}`)).body).toMatchObject({ admin: true, deactivated: false });
    expect((await login("berth-service", "taken over")).status).toBe(403);
    // (last seen left out: Synapse writes it from its own batches, whenever they come)
    const unchanged = (page: UserPage) => page.users.map(({ lastSeenAt: _, ...rest }) => rest);
    expect(unchanged(await list())).toEqual(unchanged(before));
  });

  it("the plan's bound counts usable users and the registrations tokens still allow, for users and tokens alike", async () => {
    // admin and alice can use the server; bob and carol are deactivated; the service account is not counted.
    expect(await job("homeserver.users.create", { localpart: "dave", maxUsers: 2 })).toEqual({ outcome: "user_limit", users: 2, reserved: 0, maxUsers: 2 });
    expect(await job("homeserver.registration_tokens.create", { usesAllowed: 1, maxUsers: 2 })).toEqual({
      outcome: "user_limit",
      users: 2,
      reserved: 0,
      maxUsers: 2,
    });
    const expiresAt = Date.now() + 24 * 3600_000;
    const created = await job<{ outcome: string; token: { token: string } }>("homeserver.registration_tokens.create", {
      usesAllowed: 2,
      expiresAt,
      maxUsers: 4,
    });
    expect(created).toEqual({
      outcome: "created",
      token: { token: expect.stringMatching(/^[A-Za-z0-9._~-]{16,}$/), usesAllowed: 2, pending: 0, completed: 0, expiresAt },
    });
    const token = created.token.token;
    expect(await job("homeserver.users.create", { localpart: "dave", maxUsers: 4 })).toEqual({ outcome: "user_limit", users: 2, reserved: 2, maxUsers: 4 });
    expect(await job("homeserver.registration_tokens.create", { usesAllowed: 1, maxUsers: 4 })).toEqual({
      outcome: "user_limit",
      users: 2,
      reserved: 2,
      maxUsers: 4,
    });
    expect(await job("homeserver.registration_tokens.list", {})).toEqual({ tokens: [{ token, usesAllowed: 2, pending: 0, completed: 0, expiresAt }] });
    expect(await run.everythingSaid(spec.serverId)).not.toContain(token);

    expect(await job("homeserver.registration_tokens.revoke", { token })).toEqual({ serverId: spec.serverId, token, revoked: true });
    expect(await job("homeserver.registration_tokens.revoke", { token })).toEqual({ serverId: spec.serverId, token, revoked: false });
    expect(await job("homeserver.registration_tokens.list", {})).toEqual({ tokens: [] });
    expect(await job("homeserver.users.create", { localpart: "dave", maxUsers: 3 })).toEqual({ outcome: "created", userId: userId("dave") });
    expect(await job("homeserver.users.create", { localpart: "erin", maxUsers: 3 })).toEqual({ outcome: "user_limit", users: 3, reserved: 0, maxUsers: 3 });
  });

  it("Synapse itself refuses accounts past the plan's bound, however made (its admin API, its own tokens, the shared secret); never the service account", async () => {
    // The bound of the last job, 3, beside Synapse's config; admin, alice and dave can use the server.
    const limitFile = join(run.paths(spec.serverId).synapse, "user-limit");
    expect(readFileSync(limitFile, "utf8")).toBe("3\n");
    expect([statSync(limitFile).mode & 0o777, statSync(limitFile).uid]).toEqual([0o600, run.manager.records.read(spec.serverId)!.uid]);
    await run.run("homeserver.set_admin_password", { serverId: spec.serverId, adminUserId: userId("admin"), passwordHash: bcrypt.hashSync("owner", 4) });
    const owner = (await login("admin", "owner")).token!;
    const refused = (limit: number) => ({
      status: 403,
      body: { errcode: "M_FORBIDDEN", error: `This homeserver has reached its plan's limit of ${limit} users` },
    });
    const put = (localpart: string, token: string) =>
      adminApi(`/v2/users/${encodeURIComponent(userId(localpart))}`, token, "PUT", { password: `pw-${localpart}-1` });

    expect(await put("erin", owner)).toMatchObject(refused(3));
    expect(await put("erin", serviceToken())).toMatchObject(refused(3));
    expect((await adminApi(`/v2/users/${encodeURIComponent(userId("erin"))}`)).status).toBe(404);
    // A token without a bound, made by the owner through Synapse's own API, which no job would make.
    const made = await adminApi("/v1/registration_tokens/new", owner, "POST", {});
    expect(made).toMatchObject({ status: 200, body: { uses_allowed: null } });
    const token = (made.body as { token: string }).token;
    await run.run("homeserver.settings.apply", { serverId: spec.serverId, settings: { ...DEFAULT_HOMESERVER_SETTINGS, registration: "token" } });
    const base = await run.synapseBase(spec.serverId);
    expect(await registerClientWithToken(base, "frank", token)).toMatchObject(refused(3));
    const secret = run.registrationSecret(spec.serverId);
    const shared = (localpart: string) =>
      registerWithSharedSecret(base, secret, { localpart, password: `pw-${localpart}-1`, admin: true, serverName: spec.serverName, userType: "support" });
    await expect(shared("frank")).rejects.toThrow(/failed: 403 M_FORBIDDEN This homeserver has reached its plan's limit of 3 users/);
    // An account that exists is no new one: Synapse answers that it is taken, as provisioning again finds them.
    expect(await shared("berth-service")).toEqual({ created: false, userId: serviceId() });
    expect(await shared("admin")).toEqual({ created: false, userId: userId("admin") });

    // A larger bound, from the next job carrying one, applies without a restart (the agent's own
    // check still refuses here: the owner's unbounded token reserves the whole plan).
    const startedAt = (await run.runtime.inspectContainer(run.names(spec.serverId).synapse))?.State.StartedAt;
    expect(await job("homeserver.users.create", { localpart: "erin", maxUsers: 6 })).toEqual({ outcome: "user_limit", users: 3, reserved: 6, maxUsers: 6 });
    expect(await registerClientWithToken(base, "frank", token)).toMatchObject({ status: 200, body: { user_id: userId("frank") } });
    expect(await put("grace", owner)).toMatchObject({ status: 201 });
    expect(await put("heidi", serviceToken())).toMatchObject({ status: 201 });
    expect(await put("ivan", owner)).toMatchObject(refused(6));
    expect(await registerClientWithToken(base, "ivan", token)).toMatchObject(refused(6));
    expect((await run.runtime.inspectContainer(run.names(spec.serverId).synapse))?.State.StartedAt).toBe(startedAt);
    // The service account still works, and is still neither listed nor counted.
    expect((await list()).users.map((u) => u.userId)).toEqual(["admin", "alice", "bob", "carol", "dave", "frank", "grace", "heidi"].map(userId));
    expect(await adminApi(`/v1/registration_tokens/${token}`, owner, "DELETE")).toMatchObject({ status: 200 });
  });

  it("users.list pages through every user in order and searches ids and display names, never showing the service account", async () => {
    const made = 30;
    let started = Date.now();
    for (let i = 0; i < made; i++) {
      await job("homeserver.users.create", { localpart: `member${String(i).padStart(2, "0")}`, displayName: `Member ${i}`, maxUsers: 1000 });
    }
    console.info(`users.create: ${made} users in ${Date.now() - started} ms`);
    started = Date.now();
    const all = await list();
    console.info(`users.list: ${all.users.length} users in one page in ${Date.now() - started} ms`);
    expect(all.total).toBe(made + 8); // admin, alice, bob, carol, dave, frank, grace, heidi
    expect(all.users.map((u) => u.userId)).toEqual(all.users.map((u) => u.userId).sort());

    const paged: string[] = [];
    let from: number | null = 0;
    while (from !== null) {
      const page: UserPage = await list({ from, limit: 7 });
      expect(page.users.length).toBeLessThanOrEqual(7);
      expect(page.total).toBe(all.total);
      paged.push(...page.users.map((u) => u.userId));
      from = page.nextFrom;
    }
    expect(paged).toEqual(all.users.map((u) => u.userId));
    expect(paged).not.toContain(serviceId());

    expect((await list({ search: "liddell" })).users.map((u) => u.userId)).toEqual([userId("alice")]);
    expect(await list({ search: "member2" })).toMatchObject({ total: 10, nextFrom: null });
    expect(await list({ search: "berth" })).toEqual({ users: [], total: 0, nextFrom: null });
  });

  it("needs Synapse running: a stopped server's users job fails saying so", async () => {
    await run.run("homeserver.stop", { serverId: spec.serverId });
    await expect(list()).rejects.toThrow(/is not running: start it first/);
    await run.run("homeserver.start", { serverId: spec.serverId });
    expect((await list({ search: "alice" })).total).toBe(1);
  });

  it("takes the service account back when the server's own admin deactivated it: a new token, the old one dead", async () => {
    await run.run("homeserver.set_admin_password", { serverId: spec.serverId, adminUserId: userId("admin"), passwordHash: bcrypt.hashSync("owner", 4) });
    const owner = await login("admin", "owner");
    const old = serviceToken();
    expect(run.captured.has("taking it back")).toBe(false);
    const deactivated = await adminApi(`/v1/deactivate/${encodeURIComponent(serviceId())}`, owner.token!, "POST", { erase: false });
    expect(deactivated.status).toBe(200);
    expect(await whoami(old)).toBe(401);

    const started = Date.now();
    expect((await list({ search: "alice" })).users.map((u) => u.userId)).toEqual([userId("alice")]);
    console.info(`service account taken back (Synapse stopped and started) in ${Date.now() - started} ms`);
    const renewed = serviceToken();
    expect(renewed).not.toBe(old);
    expect(await whoami(old)).toBe(401);
    expect((await adminApi(`/v2/users/${encodeURIComponent(serviceId())}`, renewed)).body).toMatchObject({
      admin: true,
      deactivated: false,
      user_type: "support",
    });
    expect(run.captured.has("taking it back")).toBe(true);
    expect(run.proxy.state.get(spec.serverName)).toEqual({ host: expect.any(String), port: 8008 });
    expect(await run.everythingSaid(spec.serverId, [results])).not.toContain(renewed);
  });
});
