import { env } from "cloudflare:workers";
import bcrypt from "bcryptjs";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { sha256Hex } from "../../../worker/crypto/bytes";
import { subscriber } from "../billing/stripe-helpers";
import { advance, call, DAY, expectError, post, type CallOptions } from "../helpers";
import { administeredServer, answered, auditEntries, auditText, jobCount, nextJob, userIdOf, type AdministeredServer } from "./administration-helpers";

const ERROR_SHAPE_WITHOUT_AGENT_TEXT = /^[^/]*$/;
const PASSWORD = "a long new matrix passphrase";

const usersOf = (server: { id: string }) => `/api/servers/${server.id}/users`;
const userPath = (server: { id: string }, userId: string, action: string) => `${usersOf(server)}/${encodeURIComponent(userId)}/${action}`;

/** A new user, created through the API with its one-time link: `{userId, passwordLink: {url, expiresAt}}`. */
async function createdUser(server: AdministeredServer, localpart = `u${crypto.randomUUID().slice(0, 8)}`) {
  const userId = `@${localpart}:${server.serverName}`;
  const { response } = await answered(server, post(usersOf(server), { localpart }, { cookie: server.owner.cookie }), "homeserver.users.create", {
    fields: { userId },
  });
  expect(response.status).toBe(201);
  return (await response.json()) as { userId: string; passwordLink: { url: string; expiresAt: string } };
}

const tokenOf = (url: string) => new URL(url).searchParams.get("token")!;

describe("a homeserver's users: who may reach them", () => {
  let server: AdministeredServer;
  let stranger: string;

  beforeAll(async () => {
    server = await administeredServer();
    stranger = (await subscriber()).cookie;
  });

  /** Every owner-only route, as [method, path, body]. */
  const routes = (id: string, userId: string): [string, string, unknown][] => [
    ["GET", `/api/servers/${id}/users`, undefined],
    ["POST", `/api/servers/${id}/users`, { localpart: "mallory" }],
    ["POST", `/api/servers/${id}/users/${encodeURIComponent(userId)}/password-link`, undefined],
    ["POST", `/api/servers/${id}/users/${encodeURIComponent(userId)}/admin`, undefined],
    ["POST", `/api/servers/${id}/users/${encodeURIComponent(userId)}/unadmin`, undefined],
    ["POST", `/api/servers/${id}/users/${encodeURIComponent(userId)}/log-out`, undefined],
    ["POST", `/api/servers/${id}/users/${encodeURIComponent(userId)}/deactivate`, { erase: true }],
    ["GET", `/api/servers/${id}/registration-tokens`, undefined],
    ["POST", `/api/servers/${id}/registration-tokens`, { usesAllowed: 5 }],
    ["DELETE", `/api/servers/${id}/registration-tokens/Tk3nAbCdEfGhIjKl`, undefined],
    ["GET", `/api/servers/${id}/jobs/${crypto.randomUUID()}`, undefined],
  ];
  const send = (method: string, path: string, body: unknown, cookie: string | null) =>
    call(path, { method, cookie, ...(body === undefined ? {} : { body }) } satisfies CallOptions);

  it("are the owner's only: another customer gets the same 404 as an id of nothing, and no job is sent", async () => {
    const missing = crypto.randomUUID();
    for (const [method, path, body] of routes(server.id, `@alice:${server.serverName}`)) {
      const theirs = await send(method, path, body, stranger);
      const nothing = await send(method, path.replace(server.id, missing), body, stranger);
      expect([method, path, theirs.status]).toEqual([method, path, 404]);
      expect(await theirs.json()).toEqual(await nothing.json());
    }
    const sent = await env.DB.prepare(
      "SELECT count(*) AS n FROM jobs WHERE server_id = ? AND (kind LIKE 'homeserver.users.%' OR kind LIKE 'homeserver.registration_tokens.%')",
    )
      .bind(server.id)
      .first<{ n: number }>();
    expect(sent!.n).toBe(0);
  });

  it("need a session: an unauthenticated caller gets 401", async () => {
    for (const [method, path, body] of routes(server.id, `@alice:${server.serverName}`)) {
      await expectError(await send(method, path, body, null), 401, "unauthorized");
    }
  });

  it("refuse a user of another homeserver (404) and what is no user id (400), without sending a job", async () => {
    for (const action of ["password-link", "admin", "unadmin", "log-out"]) {
      await expectError(await post(userPath(server, "@x:other.example", action), undefined, { cookie: server.owner.cookie }), 404, "not_found");
      await expectError(
        await post(userPath(server, `@x:${server.serverName}.evil.example`, action), undefined, { cookie: server.owner.cookie }),
        404,
        "not_found",
      );
      for (const junk of ["alice", `@Alice:${server.serverName}`, `@:${server.serverName}`, "@alice", `@al ice:${server.serverName}`]) {
        await expectError(await post(userPath(server, junk, action), undefined, { cookie: server.owner.cookie }), 400, "validation_failed");
      }
    }
    await expectError(await post(userPath(server, "@x:other.example", "deactivate"), { erase: false }, { cookie: server.owner.cookie }), 404, "not_found");
    expect(await jobCount(server.id, "homeserver.users.update")).toBe(0);
    expect(await env.DB.prepare("SELECT count(*) AS n FROM admin_password_links WHERE server_id = ?").bind(server.id).first("n")).toBe(0);
  });

  it("refuse invalid localparts with 400 in the error shape, without sending a job", async () => {
    for (const localpart of ["Alice", "@alice", `alice:${server.serverName}`, "a".repeat(65), "", "al ice", "ålice", 42]) {
      await expectError(await post(usersOf(server), { localpart }, { cookie: server.owner.cookie }), 400, "validation_failed");
    }
    await expectError(await post(usersOf(server), { localpart: "alice", password: "x" }, { cookie: server.owner.cookie }), 400, "validation_failed");
    expect(await jobCount(server.id, "homeserver.users.create")).toBe(0);
  });

  it("refuse bad list queries with 400", async () => {
    for (const query of ["limit=0", "limit=101", "from=-1", "limit=1e3", "from=x", `search=${"s".repeat(256)}`, "other=1"]) {
      await expectError(await call(`${usersOf(server)}?${query}`, { cookie: server.owner.cookie }), 400, "validation_failed");
    }
    expect(await jobCount(server.id, "homeserver.users.list")).toBe(0);
  });

  it("need an account that billing lets run homeservers (403 not_entitled)", async () => {
    const unpaid = await administeredServer();
    await env.DB.prepare("UPDATE entitlements SET state = 'suspended' WHERE user_id = ?")
      .bind(await userIdOf(unpaid.owner.email))
      .run();
    await expectError(await call(usersOf(unpaid), { cookie: unpaid.owner.cookie }), 403, "not_entitled");
    await expectError(await post(usersOf(unpaid), { localpart: "alice" }, { cookie: unpaid.owner.cookie }), 403, "not_entitled");
    await expectError(await post(`/api/servers/${unpaid.id}/registration-tokens`, { usesAllowed: 1 }, { cookie: unpaid.owner.cookie }), 403, "not_entitled");
    expect(await jobCount(unpaid.id, "homeserver.users.list")).toBe(0);
    expect(await jobCount(unpaid.id, "homeserver.users.create")).toBe(0);
  });

  it("need a running homeserver (409 invalid_state)", async () => {
    const stopped = await administeredServer();
    await env.DB.prepare("UPDATE servers SET status = 'stopped' WHERE id = ?").bind(stopped.id).run();
    await expectError(await call(usersOf(stopped), { cookie: stopped.owner.cookie }), 409, "invalid_state");
    await expectError(await post(usersOf(stopped), { localpart: "alice" }, { cookie: stopped.owner.cookie }), 409, "invalid_state");
    await expectError(
      await post(userPath(stopped, `@alice:${stopped.serverName}`, "password-link"), undefined, { cookie: stopped.owner.cookie }),
      409,
      "invalid_state",
    );
    expect(await jobCount(stopped.id, "homeserver.users.list")).toBe(0);
  });
});

describe("a homeserver's users: what the owner does", () => {
  let server: AdministeredServer;

  beforeAll(async () => {
    server = await administeredServer();
  });

  it("lists them, searched and paged, as the host reports them", async () => {
    const alice = {
      userId: `@alice:${server.serverName}`,
      displayName: "Alice",
      admin: false,
      deactivated: false,
      createdAt: Date.UTC(2026, 0, 2),
      lastSeenAt: null,
      devices: 2,
      mediaBytes: 1234,
    };
    const { response, job } = await answered(
      server,
      call(`${usersOf(server)}?search=ali&from=10&limit=5`, { cookie: server.owner.cookie }),
      "homeserver.users.list",
      {
        fields: { users: [alice], total: 11, nextFrom: null },
      },
    );
    expect(job.payload).toEqual({ serverId: server.id, search: "ali", from: 10, limit: 5 });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ users: [{ ...alice, createdAt: "2026-01-02T00:00:00.000Z" }], total: 11, nextFrom: null });
  });

  it("creates a user with the plan's bound on users, and answers a one-time link to set its password", async () => {
    const { response, job } = await answered(
      server,
      post(usersOf(server), { localpart: "bob.b-1", displayName: "Bob" }, { cookie: server.owner.cookie }),
      "homeserver.users.create",
      { fields: { userId: `@bob.b-1:${server.serverName}` } },
    );
    expect(job.payload).toEqual({ serverId: server.id, localpart: "bob.b-1", displayName: "Bob", maxUsers: 25 });
    expect(response.status).toBe(201);
    const body = (await response.json()) as { userId: string; passwordLink: { url: string; expiresAt: string } };
    expect(body.userId).toBe(`@bob.b-1:${server.serverName}`);
    const url = new URL(body.passwordLink.url);
    expect(url.pathname).toBe(`/homeservers/${server.id}/set-password`);
    expect(Date.parse(body.passwordLink.expiresAt) - Date.now()).toBeLessThanOrEqual(DAY);
    // Only the token's hash is stored.
    const links = await env.DB.prepare("SELECT * FROM admin_password_links WHERE server_id = ?").bind(server.id).all();
    expect(links.results).toEqual([expect.objectContaining({ id: await sha256Hex(tokenOf(body.passwordLink.url)), user_id: body.userId })]);
    expect(JSON.stringify(links.results)).not.toContain(tokenOf(body.passwordLink.url));
  });

  it("sends the Team plan's bound for a homeserver on Team", async () => {
    const team = await administeredServer();
    await env.DB.prepare("UPDATE servers SET plan_id = 'team' WHERE id = ?").bind(team.id).run();
    const { job } = await answered(team, post(usersOf(team), { localpart: "carol" }, { cookie: team.owner.cookie }), "homeserver.users.create", {
      fields: { userId: `@carol:${team.serverName}` },
    });
    expect(job.payload.maxUsers).toBe(250);
  });

  it("answers a name that is taken with 409 user_exists, and the plan's limit with 409 user_limit naming it", async () => {
    const taken = await answered(server, post(usersOf(server), { localpart: "dave" }, { cookie: server.owner.cookie }), "homeserver.users.create", {
      fields: { outcome: "taken", userId: `@dave:${server.serverName}` },
    });
    await expectError(taken.response, 409, "user_exists");
    const limited = await answered(server, post(usersOf(server), { localpart: "erin" }, { cookie: server.owner.cookie }), "homeserver.users.create", {
      fields: { outcome: "user_limit", users: 20, reserved: 5, maxUsers: 25 },
    });
    expect(limited.response.status).toBe(409);
    const { error } = (await limited.response.json()) as { error: { code: string; message: string } };
    expect(error.code).toBe("user_limit");
    expect(error.message).toContain("Starter plan allows 25 users");
    expect(
      await env.DB.prepare("SELECT count(*) AS n FROM admin_password_links WHERE user_id IN (?, ?)")
        .bind(`@dave:${server.serverName}`, `@erin:${server.serverName}`)
        .first("n"),
    ).toBe(0);
  });

  it("makes and unmakes admins, logs out, deactivates (saying what erasing removes)", async () => {
    const userId = `@frank:${server.serverName}`;
    const cookie = server.owner.cookie;
    for (const [action, jobAction] of [
      ["admin", "make_admin"],
      ["unadmin", "unmake_admin"],
      ["log-out", "log_out"],
    ] as const) {
      const { response, job } = await answered(server, post(userPath(server, userId, action), undefined, { cookie }), "homeserver.users.update");
      expect(job.payload).toEqual({ serverId: server.id, userId, action: jobAction });
      expect(response.status).toBe(200);
      expect(await response.json()).toMatchObject({ user: { userId, admin: jobAction === "make_admin" }, devicesLoggedOut: 3, removed: [] });
    }
    const kept = await answered(server, post(userPath(server, userId, "deactivate"), { erase: false }, { cookie }), "homeserver.users.update");
    expect(kept.job.payload.action).toBe("deactivate");
    const keptBody = (await kept.response.json()) as { removed: string[]; user: { deactivated: boolean } };
    expect(keptBody.user.deactivated).toBe(true);
    const erased = await answered(server, post(userPath(server, userId, "deactivate"), { erase: true }, { cookie }), "homeserver.users.update");
    expect(erased.job.payload.action).toBe("deactivate_and_erase");
    const erasedBody = (await erased.response.json()) as { removed: string[] };
    expect(erasedBody.removed.length).toBeGreaterThan(keptBody.removed.length);
    expect(erasedBody.removed.join(" ")).toMatch(/media/);
    await expectError(await post(userPath(server, userId, "deactivate"), {}, { cookie }), 400, "validation_failed");
    await expectError(await post(userPath(server, userId, "deactivate"), { erase: "yes" }, { cookie }), 400, "validation_failed");
  });

  it("answers a failure on the host in our words (502 homeserver_error), never the agent's", async () => {
    const { response } = await answered(server, call(usersOf(server), { cookie: server.owner.cookie }), "homeserver.users.list", {
      error: "synapse at /var/lib/berth/data/secret-host-path said 500",
    });
    const text = await response.clone().text();
    await expectError(response, 502, "homeserver_error");
    expect(text).not.toContain("/var/lib");
    expect(text).toMatch(ERROR_SHAPE_WITHOUT_AGENT_TEXT);
  });

  it("audits each change with who, which server and the Matrix user, and never a secret", async () => {
    const { userId, passwordLink } = await createdUser(server, "grace");
    const { job } = await answered(server, post(userPath(server, userId, "admin"), undefined, { cookie: server.owner.cookie }), "homeserver.users.update");
    const owner = `user:${await userIdOf(server.owner.email)}`;
    // Written with the job it names.
    expect((await auditEntries(server.id, "homeserver_user.make_admin")).at(-1)).toMatchObject({ detail: { jobId: job.id } });
    for (const action of ["homeserver_user.create", "homeserver_user.password_link_created", "homeserver_user.make_admin"]) {
      expect((await auditEntries(server.id, action)).at(-1)).toMatchObject({ actor: owner, target: server.id, detail: { userId } });
    }
    const { response } = await answered(
      server,
      post(userPath(server, userId, "password"), { token: tokenOf(passwordLink.url), password: PASSWORD }),
      "homeserver.users.set_password",
    );
    expect(response.status).toBe(200);
    expect((await auditEntries(server.id, "homeserver_user.password_set_through_link")).at(-1)).toMatchObject({ actor: owner, detail: { userId } });
    const text = await auditText(server.id);
    expect(text).not.toContain(tokenOf(passwordLink.url));
    expect(text).not.toContain(PASSWORD);
    expect(text).not.toContain("$2");
  });
});

describe("a user's one-time password link", () => {
  let server: AdministeredServer;

  beforeAll(async () => {
    server = await administeredServer();
  });

  const setPassword = (userId: string, body: unknown, on: { id: string } = server) => post(userPath(on, userId, "password"), body);

  it("sets the password once: the host gets a bcrypt hash, never the password, and the user's sessions end", async () => {
    const { userId, passwordLink } = await createdUser(server);
    const token = tokenOf(passwordLink.url);
    const { response, job } = await answered(server, setPassword(userId, { token, password: PASSWORD }), "homeserver.users.set_password");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: "set", userId, sessionsEnded: 2 });
    expect(job.payload).toEqual({ serverId: server.id, userId, passwordHash: expect.stringMatching(/^\$2[aby]\$12\$/) });
    expect(await bcrypt.compare(PASSWORD, job.payload.passwordHash)).toBe(true);
    const stored = await env.DB.prepare("SELECT payload FROM jobs WHERE id = ?").bind(job.id).first<{ payload: string }>();
    expect(stored!.payload).not.toContain(PASSWORD);

    await expectError(await setPassword(userId, { token, password: PASSWORD }), 400, "invalid_token");
    expect(await jobCount(server.id, "homeserver.users.set_password")).toBe(1);
  });

  it("is refused for another server, another user, a wrong token, or once expired; nothing is sent", async () => {
    const { userId, passwordLink } = await createdUser(server);
    const token = tokenOf(passwordLink.url);
    const other = await administeredServer();
    await expectError(await setPassword(userId, { token, password: PASSWORD }, other), 400, "invalid_token");
    await expectError(await setPassword(`@someone-else:${server.serverName}`, { token, password: PASSWORD }), 400, "invalid_token");
    await expectError(await setPassword(userId, { token: `${token.slice(0, -2)}xx`, password: PASSWORD }), 400, "invalid_token");
    await expectError(await setPassword(userId, { token, password: "short" }), 400, "validation_failed");
    await expectError(await setPassword(userId, { token, password: PASSWORD }, { id: crypto.randomUUID() }), 400, "invalid_token");
    expect(await jobCount(server.id, "homeserver.users.set_password")).toBe(1);
    expect(await jobCount(other.id, "homeserver.users.set_password")).toBe(0);

    advance(DAY + 1000);
    await expectError(await setPassword(userId, { token, password: PASSWORD }), 400, "invalid_token");
    vi.useRealTimers();
    expect(await jobCount(server.id, "homeserver.users.set_password")).toBe(1);
  });

  it("resets an existing user's password through a new link; only the newest link works", async () => {
    const userId = `@henry:${server.serverName}`;
    const link = async () => {
      const response = await post(userPath(server, userId, "password-link"), undefined, { cookie: server.owner.cookie });
      expect(response.status).toBe(201);
      return (await response.json()) as { userId: string; url: string; expiresAt: string };
    };
    const first = await link();
    const second = await link();
    expect(second.userId).toBe(userId);
    await expectError(await setPassword(userId, { token: tokenOf(first.url), password: PASSWORD }), 400, "invalid_token");
    const { response, job } = await answered(server, setPassword(userId, { token: tokenOf(second.url), password: PASSWORD }), "homeserver.users.set_password");
    expect(response.status).toBe(200);
    expect(job.payload.userId).toBe(userId);
  });

  it("works again when the host failed to set the password", async () => {
    const { userId, passwordLink } = await createdUser(server);
    const token = tokenOf(passwordLink.url);
    const failed = await answered(server, setPassword(userId, { token, password: PASSWORD }), "homeserver.users.set_password", { error: "synapse down" });
    await expectError(failed.response, 502, "homeserver_error");
    const { response } = await answered(server, setPassword(userId, { token, password: PASSWORD }), "homeserver.users.set_password");
    expect(response.status).toBe(200);
  });

  it("has a page that works without JavaScript, and a page that refuses a link that does not work", async () => {
    const { userId, passwordLink } = await createdUser(server);
    const page = await call(new URL(passwordLink.url).pathname + new URL(passwordLink.url).search, { headers: { accept: "text/html" } });
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain(userId);
    expect(html).toContain(`action="/homeservers/${server.id}/set-password"`);

    const form = new URLSearchParams({ token: tokenOf(passwordLink.url), password: PASSWORD });
    const submitted = answered(
      server,
      call(`/homeservers/${server.id}/set-password`, {
        method: "POST",
        rawBody: form.toString(),
        headers: { "content-type": "application/x-www-form-urlencoded", accept: "text/html", origin: "null", "sec-fetch-site": "same-origin" },
      }),
      "homeserver.users.set_password",
    );
    const { response, job } = await submitted;
    expect(response.status).toBe(200);
    expect(await response.text()).toContain("is set");
    expect(job.payload.userId).toBe(userId);

    const used = await call(new URL(passwordLink.url).pathname + new URL(passwordLink.url).search, { headers: { accept: "text/html" } });
    expect(used.status).toBe(400);
    expect(await used.text()).toContain('role="alert"');
  });
});

describe("waiting for the host", () => {
  it("answers 202 with the job when the host has not answered in time; the job route gives the answer once it has", async () => {
    const server = await administeredServer();
    // The agent does not answer while the request waits.
    const response = await call(usersOf(server), { cookie: server.owner.cookie });
    expect(response.status).toBe(202);
    const { job } = (await response.json()) as { job: { id: string; status: string; poll: string } };
    expect(job).toMatchObject({ status: "pending", poll: `/api/servers/${server.id}/jobs/${job.id}` });

    const delivered = await nextJob(server, "homeserver.users.list");
    expect(delivered.id).toBe(job.id);
    server.agent.send({ type: "job.result", id: job.id, ok: true, result: { users: [], total: 0, nextFrom: null } });
    await vi.waitFor(async () => {
      const polled = await call(job.poll, { cookie: server.owner.cookie });
      expect(await polled.json()).toEqual({
        job: { id: job.id, kind: "homeserver.users.list", poll: job.poll, status: "succeeded", result: { users: [], total: 0, nextFrom: null }, error: null },
      });
    });
    // A lifecycle job is not an administration job to poll here.
    const provision = await env.DB.prepare("SELECT id FROM jobs WHERE server_id = ? AND kind = 'homeserver.provision'").bind(server.id).first<{ id: string }>();
    await expectError(await call(`/api/servers/${server.id}/jobs/${provision!.id}`, { cookie: server.owner.cookie }), 404, "not_found");
  });
});

describe("rate limits", () => {
  it("limit changes per homeserver with 429 rate_limited", async () => {
    const server = await administeredServer();
    const tight = { RATE_LIMITS: JSON.stringify({ homeserver_changes_server: { limit: 1 } }) };
    const link = () => post(userPath(server, `@ivy:${server.serverName}`, "password-link"), undefined, { cookie: server.owner.cookie, env: tight });
    expect((await link()).status).toBe(201);
    const refused = await link();
    await expectError(refused, 429, "rate_limited");
    expect(refused.headers.get("retry-after")).toMatch(/^\d+$/);
  });

  it("limit refused links per client", async () => {
    const server = await administeredServer();
    const tight = { RATE_LIMITS: JSON.stringify({ password_link_ip: { limit: 2 } }) };
    const ip = "10.99.0.1";
    const guess = () => post(userPath(server, `@ivy:${server.serverName}`, "password"), { token: "t".repeat(43), password: PASSWORD }, { env: tight, ip });
    await expectError(await guess(), 400, "invalid_token");
    await expectError(await guess(), 400, "invalid_token");
    await expectError(await guess(), 429, "rate_limited");
  });
});
