import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { JOB_DEADLINE_EXCEEDED } from "../../../worker/fleet/jobs";
import { subscriber } from "../billing/stripe-helpers";
import { succeeded, type DeliveredJob } from "../fleet/fleet-helpers";
import { call, logIn, verifiedUser } from "../helpers";
import { administeredServer, answered, jobCount, nextJob, type AdministeredServer } from "../servers/administration-helpers";
import { expectLabelled, page } from "./page-checks";

// A homeserver's users and registration pages without JavaScript: what they show, each form by
// plain POST with the host's answer played by a fake agent, and who may reach them.

const formHeaders = { "content-type": "application/x-www-form-urlencoded", accept: "text/html" };
const submit = (path: string, fields: Record<string, string>, cookie: string, headers: Record<string, string> = {}) =>
  call(path, { method: "POST", rawBody: new URLSearchParams(fields), headers: { ...formHeaders, ...headers }, cookie });

async function expectStatus(response: Response, status: number): Promise<string> {
  const html = await response.text();
  expect(response.status, html).toBe(status);
  return html;
}

const usersPage = (server: { id: string }) => `/servers/${server.id}/users`;
const registrationPage = (server: { id: string }) => `/servers/${server.id}/registration`;
const userPath = (server: { id: string }, userId: string, action: string) => `${usersPage(server)}/${encodeURIComponent(userId)}/${action}`;

/** A user as the host lists it. */
const listed = (server: AdministeredServer, localpart: string, fields: Record<string, unknown> = {}) => ({
  userId: `@${localpart}:${server.serverName}`,
  displayName: null,
  admin: false,
  deactivated: false,
  createdAt: Date.UTC(2026, 0, 2, 9, 30),
  lastSeenAt: null,
  devices: 0,
  mediaBytes: 0,
  ...fields,
});

/** From now on the agent answers every list of users and of tokens at once with these; other jobs wait for the test. */
function listsAnswered(server: AdministeredServer, users: unknown[] = [], tokens: unknown[] = []) {
  server.agent.answerJobs((job: DeliveredJob) => {
    if (job.kind === "homeserver.users.list") return succeeded(job, { users, total: users.length, nextFrom: null });
    if (job.kind === "homeserver.registration_tokens.list") return succeeded(job, { tokens });
    return undefined;
  });
}

async function administrationJobCount(serverId: string): Promise<number> {
  const row = await env.DB.prepare(
    "SELECT count(*) AS n FROM jobs WHERE server_id = ? AND (kind LIKE 'homeserver.users.%' OR kind LIKE 'homeserver.registration_tokens.%')",
  )
    .bind(serverId)
    .first<{ n: number }>();
  return row!.n;
}

describe("a homeserver's users and registration pages: who may reach them", () => {
  let server: AdministeredServer;
  let stranger: string;

  beforeAll(async () => {
    server = await administeredServer();
    stranger = (await subscriber()).cookie;
  });

  const forms = (id: string, userId: string): [string, Record<string, string>][] => [
    [`/servers/${id}/users`, { localpart: "mallory" }],
    [`/servers/${id}/users/${encodeURIComponent(userId)}/password-link`, {}],
    [`/servers/${id}/users/${encodeURIComponent(userId)}/admin`, {}],
    [`/servers/${id}/users/${encodeURIComponent(userId)}/unadmin`, {}],
    [`/servers/${id}/users/${encodeURIComponent(userId)}/log-out`, {}],
    [`/servers/${id}/users/${encodeURIComponent(userId)}/deactivate`, { erase: "yes", confirm: "yes" }],
    [`/servers/${id}/registration`, { usesAllowed: "5" }],
    [`/servers/${id}/registration/Tk3nAbCdEfGhIjKl/revoke`, {}],
  ];

  it("show another customer's server as the same 404 page as a server that does not exist, and send no job", async () => {
    const missing = crypto.randomUUID();
    for (const path of [usersPage(server), registrationPage(server), `${usersPage(server)}?job=${crypto.randomUUID()}`]) {
      const theirs = await page(path, stranger, 404);
      expect(theirs).toContain("No such server.");
      expect(await page(path.replace(server.id, missing), stranger, 404)).toBe(theirs);
    }
    for (const [path, fields] of forms(server.id, `@alice:${server.serverName}`)) {
      const theirs = await expectStatus(await submit(path, fields, stranger), 404);
      expect(await expectStatus(await submit(path.replace(server.id, missing), fields, stranger), 404)).toBe(theirs);
    }
    expect(await administrationJobCount(server.id)).toBe(0);
  });

  it("ask for a log-in", async () => {
    for (const path of [usersPage(server), registrationPage(server)]) {
      const response = await call(path, { headers: { accept: "text/html" } });
      expect(response.status).toBe(303);
      expect(response.headers.get("location")).toBe("/login");
    }
  });

  it("refuse a form posted from another site (CSRF), sending no job", async () => {
    for (const [path, fields] of forms(server.id, `@alice:${server.serverName}`)) {
      const refused = await submit(path, fields, server.owner.cookie, { origin: "https://evil.example", "sec-fetch-site": "cross-site" });
      expect(await expectStatus(refused, 403)).toContain("Cross-site request refused.");
    }
    expect(await administrationJobCount(server.id)).toBe(0);
  });
});

describe("the users page", () => {
  let server: AdministeredServer;

  beforeAll(async () => {
    server = await administeredServer();
    listsAnswered(server, [
      listed(server, "alice", { displayName: "Alice Liddell", admin: true, devices: 2, mediaBytes: 1_500_000, lastSeenAt: Date.UTC(2026, 1, 3, 12) }),
      listed(server, "bob"),
      listed(server, "carol", { deactivated: true }),
    ]);
  });

  it("lists the users with what the host reports, under the homeserver's navigation, every field labelled", async () => {
    const html = await page(usersPage(server), server.owner.cookie);
    expectLabelled(html);
    expect(html).toContain('<nav aria-label="Homeserver" class="tabs server-nav">');
    expect(html).toContain(`<a href="/servers/${server.id}/users" aria-current="page">Users</a>`);
    for (const [href, label] of [
      [`/servers/${server.id}`, "Overview"],
      [`/servers/${server.id}/registration`, "Registration"],
      [`/servers/${server.id}/rooms`, "Rooms"],
      [`/servers/${server.id}/settings`, "Settings"],
    ]) {
      expect(html).toContain(`<a href="${href}">${label}</a>`);
    }
    expect(html).toContain("Users 1–3 of 3.");
    expect(html).toContain(`<code>@alice:${server.serverName}</code>`);
    expect(html).toContain("Alice Liddell");
    expect(html).toMatch(/<dt>Admin<\/dt><dd>yes<\/dd><dt>Deactivated<\/dt><dd>no<\/dd><dt>Created<\/dt><dd>Jan 2, 2026, 9:30 AM UTC<\/dd>/);
    expect(html).toContain("<dt>Last seen</dt><dd>Feb 3, 2026, 12:00 PM UTC</dd><dt>Devices</dt><dd>2</dd><dt>Media</dt><dd>1.5 MB</dd>");
    // Alice is an admin, Bob is not; Carol is deactivated and offers nothing to do.
    expect(html).toContain(`action="${userPath(server, `@alice:${server.serverName}`, "unadmin")}"`);
    expect(html).toContain(`action="${userPath(server, `@bob:${server.serverName}`, "admin")}"`);
    expect(html).not.toContain(encodeURIComponent(`@carol:${server.serverName}`));
    // Deactivation says what it removes, and what erasing adds, exactly as the service reports it.
    expect(html).toContain("It removes the user&#39;s password, so they can no longer log in, every device and session and their membership of every room.");
    expect(html).toContain("Also erase their display name and avatar, the media they uploaded and their messages, for anyone who joins a room later");
    expect(html).toContain("Setting the password logs out every other session they have.");
  });

  it("searches and pages through the host's list", async () => {
    expect(await page(`${usersPage(server)}?search=ali&from=25`, server.owner.cookie)).toContain('value="ali"');
    const [job] = await env.DB.prepare("SELECT payload FROM jobs WHERE server_id = ? AND kind = 'homeserver.users.list' ORDER BY created_at DESC LIMIT 1")
      .bind(server.id)
      .raw<[string]>();
    expect(JSON.parse(job![0])).toMatchObject({ search: "ali", from: 25, limit: 25 });
  });
});

describe("the users page's forms", () => {
  let server: AdministeredServer;
  const bob = () => `@bob:${server.serverName}`;

  beforeAll(async () => {
    server = await administeredServer();
    listsAnswered(server, [listed(server, "bob")]);
  });

  it("create a user and show the one-time link once, saying it works once and when it expires", async () => {
    const { response, job } = await answered(
      server,
      submit(usersPage(server), { localpart: "dora", displayName: "Dora" }, server.owner.cookie),
      "homeserver.users.create",
      { fields: { userId: `@dora:${server.serverName}` } },
    );
    const html = await expectStatus(response, 201);
    expect(job.payload).toMatchObject({ localpart: "dora", displayName: "Dora", maxUsers: 25 });
    expect(html).toContain(`@dora:${server.serverName} was created`);
    const link = html.match(/href="(http[^"]+\/homeservers\/[^"]+\/set-password\?token=[^"]+)"/)![1]!;
    expect(new URL(link).pathname).toBe(`/homeservers/${server.id}/set-password`);
    expect(html).toMatch(/It works once and expires [A-Z][a-z]+ \d+, \d{4}/);
    expect(html).toContain("It is shown only here, this once");
    // Not on the page again.
    expect(await page(usersPage(server), server.owner.cookie)).not.toContain(link);
  });

  it("refuse a taken name and the plan's limit in plain words, keeping what was typed", async () => {
    const taken = await answered(
      server,
      submit(usersPage(server), { localpart: "bob", displayName: "Bob B" }, server.owner.cookie),
      "homeserver.users.create",
      {
        fields: { outcome: "taken", userId: bob() },
      },
    );
    const html = await expectStatus(taken.response, 409);
    expect(html).toContain(`${bob()} exists already: choose another name, or reset that user&#39;s password.`);
    expect(html).toContain('value="bob"');
    expect(html).toContain('value="Bob B"');
    expectLabelled(html);

    const full = await answered(server, submit(usersPage(server), { localpart: "erin" }, server.owner.cookie), "homeserver.users.create", {
      fields: { outcome: "user_limit", users: 24, reserved: 1, maxUsers: 25 },
    });
    const refused = await expectStatus(full.response, 409);
    expect(refused).toContain("The Starter plan allows 25 users on a homeserver; this one has 24, and its registration tokens may add 1 more.");
    expect(refused).toContain('value="erin"');
  });

  it("refuse a bad username before any job, and say when the homeserver did not answer", async () => {
    const bad = await expectStatus(await submit(usersPage(server), { localpart: "Not Valid" }, server.owner.cookie), 400);
    expect(bad).toContain("localpart: a localpart: lower-case letters, digits and . _ = - / +");
    expect(bad).toContain('value="Not Valid"');

    const late = await answered(server, submit(usersPage(server), { localpart: "fred" }, server.owner.cookie), "homeserver.users.create", {
      error: JOB_DEADLINE_EXCEEDED,
    });
    expect(await expectStatus(late.response, 503)).toContain("Your homeserver did not answer in time while creating the user.");
    const broken = await answered(server, submit(usersPage(server), { localpart: "fred" }, server.owner.cookie), "homeserver.users.create", {
      error: "synapse said no",
    });
    const html = await expectStatus(broken.response, 502);
    expect(html).toContain("Your homeserver could not finish creating the user");
    expect(html).not.toContain("synapse said no");
  });

  it("make a new password link for a user, saying it logs out their other sessions", async () => {
    const html = await expectStatus(await submit(userPath(server, bob(), "password-link"), {}, server.owner.cookie), 201);
    expect(html).toContain(`A new password link for ${bob()}`);
    expect(html).toMatch(/href="http[^"]+\/set-password\?token=/);
    expect(html).toContain(`every session ${bob()} has is logged out`);
  });

  it("make and unmake an admin, and log a user out everywhere", async () => {
    const made = await answered(server, submit(userPath(server, bob(), "admin"), {}, server.owner.cookie), "homeserver.users.update");
    expect(made.job.payload).toMatchObject({ userId: bob(), action: "make_admin" });
    expect(await expectStatus(made.response, 200)).toContain(`${bob()} is now an admin.`);
    const unmade = await answered(server, submit(userPath(server, bob(), "unadmin"), {}, server.owner.cookie), "homeserver.users.update");
    expect(unmade.job.payload.action).toBe("unmake_admin");
    expect(await expectStatus(unmade.response, 200)).toContain(`${bob()} is no longer an admin.`);
    const out = await answered(server, submit(userPath(server, bob(), "log-out"), {}, server.owner.cookie), "homeserver.users.update");
    expect(out.job.payload.action).toBe("log_out");
    expect(await expectStatus(out.response, 200)).toContain(`${bob()} is logged out everywhere (3 devices).`);
  });

  it("deactivate only once confirmed, erasing when asked, and say what was removed", async () => {
    const updatesBefore = await jobCount(server.id, "homeserver.users.update");
    const unconfirmed = await expectStatus(await submit(userPath(server, bob(), "deactivate"), { erase: "yes" }, server.owner.cookie), 400);
    expect(unconfirmed).toContain("Tick the box to confirm that the user can never log in again.");
    expect(await jobCount(server.id, "homeserver.users.update")).toBe(updatesBefore);

    const kept = await answered(server, submit(userPath(server, bob(), "deactivate"), { confirm: "yes" }, server.owner.cookie), "homeserver.users.update");
    expect(kept.job.payload.action).toBe("deactivate");
    expect(await expectStatus(kept.response, 200)).toContain(
      `${bob()} is deactivated. Removed: the user&#39;s password, so they can no longer log in; every device and session; their membership of every room.`,
    );
    const erased = await answered(
      server,
      submit(userPath(server, bob(), "deactivate"), { confirm: "yes", erase: "yes" }, server.owner.cookie),
      "homeserver.users.update",
    );
    expect(erased.job.payload.action).toBe("deactivate_and_erase");
    expect(await expectStatus(erased.response, 200)).toContain("their membership of every room; their display name and avatar; the media they uploaded;");
  });

  it("refuse a user of another homeserver with the reason", async () => {
    const html = await expectStatus(await submit(userPath(server, "@bob:other.example", "admin"), {}, server.owner.cookie), 404);
    expect(html).toContain("No such user on this homeserver.");
  });
});

describe("a job the homeserver has not finished", () => {
  it("is shown as under way with a link that shows its outcome, which the script follows", async () => {
    const server = await administeredServer();
    // The agent answers nothing while the page waits.
    const html = await page(usersPage(server), server.owner.cookie);
    const list = await nextJob(server, "homeserver.users.list");
    expect(html).toContain("Your homeserver is still listing its users. This can take a minute.");
    expect(html).toContain("The list shows once your homeserver has answered.");
    const outcome = `${usersPage(server)}?from=0&amp;job=${list.id}`;
    expect(html).toContain(`data-job="/api/servers/${server.id}/jobs/${list.id}" data-outcome="${outcome}"`);
    expect(html).toContain(`<a href="${outcome}">Check again</a>`);
    expect(html).not.toContain("http-equiv");
    expect(await page(`${usersPage(server)}?from=0&job=${list.id}`, server.owner.cookie)).toContain("still listing its users");

    server.agent.send(succeeded(list, { users: [listed(server, "gail")], total: 1, nextFrom: null }));
    await vi.waitFor(async () => expect(await page(`${usersPage(server)}?from=0&job=${list.id}`, server.owner.cookie)).toContain(`@gail:${server.serverName}`));
  }, 30_000);

  it("after creating a user, offers the password link once the user exists", async () => {
    const server = await administeredServer();
    listsAnswered(server);
    const response = await submit(usersPage(server), { localpart: "hana" }, server.owner.cookie);
    const create = await nextJob(server, "homeserver.users.create");
    expect(await expectStatus(response, 202)).toContain("Your homeserver is still creating the user.");
    server.agent.send(succeeded(create, { userId: `@hana:${server.serverName}` }));
    await vi.waitFor(async () => {
      const html = await page(`${usersPage(server)}?job=${create.id}`, server.owner.cookie);
      expect(html).toContain(`@hana:${server.serverName} was created.`);
      expect(html).toContain(`action="${userPath(server, `@hana:${server.serverName}`, "password-link")}"`);
    });
  }, 30_000);

  it("that failed shows why; a job of nothing says so", async () => {
    const server = await administeredServer();
    listsAnswered(server);
    const { job } = await answered(server, submit(usersPage(server), { localpart: "ivan" }, server.owner.cookie), "homeserver.users.create", {
      fields: { outcome: "taken", userId: `@ivan:${server.serverName}` },
    });
    expect(await page(`${usersPage(server)}?job=${job.id}`, server.owner.cookie)).toContain(`@ivan:${server.serverName} exists already`);
    expect(await page(`${usersPage(server)}?job=${crypto.randomUUID()}`, server.owner.cookie, 404)).toContain("No such job.");
  });
});

describe("the registration page", () => {
  let server: AdministeredServer;

  beforeAll(async () => {
    server = await administeredServer();
    listsAnswered(
      server,
      [],
      [
        { token: "Tk3nAbCdEfGhIjKl", usesAllowed: 5, pending: 1, completed: 2, expiresAt: Date.UTC(2026, 5, 1) },
        { token: "OpenEndedToken01", usesAllowed: null, pending: 0, completed: 0, expiresAt: null },
      ],
    );
  });

  it("lists the tokens with their uses and expiry, and says they need registration by token in Settings", async () => {
    const html = await page(registrationPage(server), server.owner.cookie);
    expectLabelled(html);
    expect(html).toContain(`<a href="/servers/${server.id}/registration" aria-current="page">Registration</a>`);
    expect(html).toContain(`Tokens work only while registration is set to “by token” in <a href="/servers/${server.id}/settings">Settings</a>.`);
    expect(html).toContain("<td><code>Tk3nAbCdEfGhIjKl</code></td><td>5</td><td>2</td><td>1</td><td>Jun 1, 2026, 12:00 AM UTC</td>");
    expect(html).toContain("<td><code>OpenEndedToken01</code></td><td>unlimited</td><td>unlimited</td><td>0</td><td>never</td>");
    expect(html).toContain(`action="/servers/${server.id}/registration/Tk3nAbCdEfGhIjKl/revoke"`);
    expect(html).toContain("Uses not yet taken count toward the Starter plan&#39;s 25 users.");
  });

  it("creates a token with its uses and expiry, and shows it", async () => {
    const before = Date.now();
    const { response, job } = await answered(
      server,
      submit(registrationPage(server), { usesAllowed: "3", expiresInDays: "7" }, server.owner.cookie),
      "homeserver.registration_tokens.create",
    );
    const html = await expectStatus(response, 201);
    expect(job.payload).toMatchObject({ usesAllowed: 3, maxUsers: 25 });
    expect(job.payload.expiresAt).toBeGreaterThanOrEqual(before + 7 * 86_400_000 - 60_000);
    expect(job.payload.expiresAt).toBeLessThanOrEqual(Date.now() + 7 * 86_400_000 + 60_000);
    expect(html).toContain("New registration token");
    expect(html).toMatch(/Registers up to 3 accounts, until [A-Z][a-z]+ \d+, \d{4}/);

    const forever = await answered(
      server,
      submit(registrationPage(server), { usesAllowed: "1", expiresInDays: "" }, server.owner.cookie),
      "homeserver.registration_tokens.create",
    );
    expect(forever.job.payload).not.toHaveProperty("expiresAt");
    expect(await expectStatus(forever.response, 201)).toContain("Registers up to 1 accounts, until its uses are spent.");
  });

  it("refuses what the plan does not allow and bad figures in plain words, keeping what was typed", async () => {
    const full = await answered(
      server,
      submit(registrationPage(server), { usesAllowed: "30", expiresInDays: "2" }, server.owner.cookie),
      "homeserver.registration_tokens.create",
      {
        fields: { outcome: "user_limit", users: 3, reserved: 0, maxUsers: 25 },
      },
    );
    const html = await expectStatus(full.response, 409);
    expect(html).toContain("The Starter plan allows 25 users on a homeserver; this one has 3");
    expect(html).toContain('value="30"');
    expect(html).toContain('value="2"');
    const bad = await expectStatus(await submit(registrationPage(server), { usesAllowed: "0" }, server.owner.cookie), 400);
    expect(bad).toContain("usesAllowed:");
    expect(bad).toContain('value="0"');
  });

  it("revokes a token", async () => {
    const { response, job } = await answered(
      server,
      submit(`${registrationPage(server)}/Tk3nAbCdEfGhIjKl/revoke`, {}, server.owner.cookie),
      "homeserver.registration_tokens.revoke",
    );
    expect(job.payload.token).toBe("Tk3nAbCdEfGhIjKl");
    expect(await expectStatus(response, 200)).toContain("The registration token Tk3nAbCdEfGhIjKl is revoked");
    const gone = await answered(
      server,
      submit(`${registrationPage(server)}/Tk3nAbCdEfGhIjKl/revoke`, {}, server.owner.cookie),
      "homeserver.registration_tokens.revoke",
      {
        fields: { revoked: false },
      },
    );
    expect(await expectStatus(gone.response, 404)).toContain("No such registration token on this homeserver.");
  });

  it("says why it cannot list while the homeserver is stopped", async () => {
    const stopped = await administeredServer();
    await env.DB.prepare("UPDATE servers SET status = 'stopped' WHERE id = ?").bind(stopped.id).run();
    expect(await page(registrationPage(stopped), stopped.owner.cookie, 409)).toContain("can be managed while it is running");
    expect(await page(usersPage(stopped), stopped.owner.cookie, 409)).toContain("can be managed while it is running");
  });
});

describe("the overview page", () => {
  it("shows the homeserver's navigation with Overview current", async () => {
    const server = await administeredServer();
    const html = await page(`/servers/${server.id}`, server.owner.cookie);
    expect(html).toContain(`<a href="/servers/${server.id}" aria-current="page">Overview</a>`);
    expect(html).toContain(`<a href="/servers/${server.id}/users">Users</a>`);
    const stranger = await logIn((await verifiedUser()).email);
    expect(await page(`/servers/${server.id}/users`, stranger, 404)).toContain("No such server.");
  });
});
