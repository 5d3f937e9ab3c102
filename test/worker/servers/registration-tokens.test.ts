import { beforeAll, describe, expect, it, vi } from "vitest";
import { advance, call, expectError, MINUTE, post, runCron } from "../helpers";
import { administeredServer, answered, auditEntries, auditText, jobCount, nextJob, userIdOf, type AdministeredServer } from "./administration-helpers";

const TOKEN = "Tk3nAbCdEfGhIjKl";

describe("a homeserver's registration tokens", () => {
  let server: AdministeredServer;
  let tokens: string;

  beforeAll(async () => {
    server = await administeredServer();
    tokens = `/api/servers/${server.id}/registration-tokens`;
  });

  it("are created bounded by the plan, with their uses and expiry, and audited without their value", async () => {
    const expiresAt = new Date(Date.now() + 7 * 24 * 3600_000);
    const { response, job } = await answered(
      server,
      post(tokens, { usesAllowed: 5, expiresAt: expiresAt.toISOString() }, { cookie: server.owner.cookie }),
      "homeserver.registration_tokens.create",
    );
    expect(job.payload).toEqual({ serverId: server.id, usesAllowed: 5, expiresAt: expiresAt.getTime(), maxUsers: 25 });
    expect(response.status).toBe(201);
    expect(await response.json()).toEqual({
      token: { token: TOKEN, usesAllowed: 5, pending: 0, completed: 0, usesLeft: 5, expiresAt: expiresAt.toISOString() },
    });
    const [entry] = await auditEntries(server.id, "registration_token.create");
    expect(entry).toMatchObject({ actor: `user:${await userIdOf(server.owner.email)}`, target: server.id, detail: { usesAllowed: 5 } });
    expect(await auditText(server.id)).not.toContain(TOKEN);
  });

  it("are refused past the plan's bound on users with 409 user_limit naming it", async () => {
    const { response } = await answered(server, post(tokens, { usesAllowed: 30 }, { cookie: server.owner.cookie }), "homeserver.registration_tokens.create", {
      fields: { outcome: "user_limit", users: 3, reserved: 5, maxUsers: 25 },
    });
    expect(response.status).toBe(409);
    const { error } = (await response.json()) as { error: { code: string; message: string } };
    expect(error).toMatchObject({ code: "user_limit", message: expect.stringContaining("Starter plan allows 25 users") });
  });

  it("refuse bad bodies with 400, without sending a job", async () => {
    const before = await jobCount(server.id, "homeserver.registration_tokens.create");
    for (const body of [
      {},
      { usesAllowed: 0 },
      { usesAllowed: 1001 },
      { usesAllowed: 1.5 },
      { usesAllowed: "5" },
      { usesAllowed: 5, expiresAt: "tomorrow" },
      { usesAllowed: 5, expiresAt: new Date(Date.now() - 60_000).toISOString() },
      { usesAllowed: 5, token: "chosen" },
    ]) {
      await expectError(await post(tokens, body, { cookie: server.owner.cookie }), 400, "validation_failed");
    }
    expect(await jobCount(server.id, "homeserver.registration_tokens.create")).toBe(before);
  });

  it("are listed with the uses each has left", async () => {
    const listed = { token: TOKEN, usesAllowed: 5, pending: 1, completed: 2, expiresAt: null };
    const { response } = await answered(server, call(tokens, { cookie: server.owner.cookie }), "homeserver.registration_tokens.list", {
      fields: { tokens: [listed] },
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ tokens: [{ ...listed, usesLeft: 2 }] });
  });

  it("are revoked, audited by a short prefix at most; an unknown one is a 404, a malformed one a 400 without a job", async () => {
    const { response, job } = await answered(
      server,
      call(`${tokens}/${TOKEN}`, { method: "DELETE", cookie: server.owner.cookie }),
      "homeserver.registration_tokens.revoke",
    );
    expect(job.payload).toEqual({ serverId: server.id, token: TOKEN });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ revoked: true });
    const [entry] = await auditEntries(server.id, "registration_token.revoke");
    expect(String(entry!.detail!.tokenPrefix).length).toBeLessThanOrEqual(4);
    expect(await auditText(server.id)).not.toContain(TOKEN);

    const unknown = await answered(
      server,
      call(`${tokens}/NoSuchToken`, { method: "DELETE", cookie: server.owner.cookie }),
      "homeserver.registration_tokens.revoke",
      {
        fields: { revoked: false },
      },
    );
    await expectError(unknown.response, 404, "not_found");

    const before = await jobCount(server.id, "homeserver.registration_tokens.revoke");
    for (const junk of ["a%20b", "%E2%80%AE", "x".repeat(65), "a%2Fb"]) {
      await expectError(await call(`${tokens}/${junk}`, { method: "DELETE", cookie: server.owner.cookie }), 400, "validation_failed");
    }
    expect(await jobCount(server.id, "homeserver.registration_tokens.revoke")).toBe(before);
  });

  it("answer a host that did not finish in time with 503 homeserver_unavailable, in our words", async () => {
    const request = call(tokens, { cookie: server.owner.cookie });
    await nextJob(server, "homeserver.registration_tokens.list");
    // The job's deadline passes while the request waits; the cron fails it.
    advance(6 * MINUTE);
    await runCron();
    vi.useRealTimers();
    await expectError(await request, 503, "homeserver_unavailable");
  });
});
