import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { HOUR, advance, call, expectError, logIn, post, verifiedUser } from "../helpers";
import { enrollBody, joinToken, newKeys, operatorCookie, refusalsSince } from "./fleet-helpers";

afterEach(() => vi.useRealTimers());

describe("join tokens", () => {
  it("are for operators only", async () => {
    await expectError(await post("/api/admin/join-tokens", { region: "us-east" }), 401);
    const customer = await logIn((await verifiedUser()).email);
    await expectError(await post("/api/admin/join-tokens", { region: "us-east" }, { cookie: customer }), 403, "operator_only");
    await expectError(await call("/api/admin/hosts", { cookie: customer }), 403, "operator_only");
  });

  it("are stored hashed, name a region, and expire", async () => {
    const cookie = await operatorCookie();
    const response = await post("/api/admin/join-tokens", { region: "us-west", expiresInMinutes: 30 }, { cookie });
    expect(response.status).toBe(201);
    const { token, region, expiresAt } = (await response.json()) as { token: string; region: string; expiresAt: string };
    expect(region).toBe("us-west");
    expect(new Date(expiresAt).getTime() - Date.now()).toBeGreaterThan(29 * 60_000);
    const stored = await env.DB.prepare("SELECT id FROM join_tokens").all<{ id: string }>();
    expect(stored.results.map((row) => row.id)).not.toContain(token);
    await expectError(await post("/api/admin/join-tokens", { region: "eu-west" }, { cookie }), 400, "validation_failed");
    // Also offered under /hosts.
    expect((await post("/api/admin/hosts/join-tokens", { region: "us-east" }, { cookie })).status).toBe(201);
  });
});

describe("enrollment", () => {
  it("exchanges a join token for a host identity keyed by the host's own public key", async () => {
    const cookie = await operatorCookie();
    const { publicKey } = await newKeys();
    const body = enrollBody(await joinToken(cookie, "us-west"), publicKey);
    const response = await post("/api/agent/enroll", body);
    expect(response.status).toBe(201);
    const enrolled = (await response.json()) as { hostId: string; region: string; connectUrl: string };
    expect(enrolled.region).toBe("us-west");
    expect(enrolled.connectUrl).toBe(`ws://localhost/api/agent/connect?host=${enrolled.hostId}`);
    const row = await env.DB.prepare("SELECT * FROM hosts WHERE id = ?").bind(enrolled.hostId).first<Record<string, unknown>>();
    expect(row).toMatchObject({ name: body.name, region: "us-west", public_key: publicKey, status: "offline", memory_mib: 8192 });
    // Nothing in D1 could act as the host: no private key, no shared secret.
    expect(Object.keys(row!).filter((key) => /secret|private|password|token/i.test(key))).toEqual([]);
  });

  it("refuses a reused join token", async () => {
    const cookie = await operatorCookie();
    const token = await joinToken(cookie);
    expect((await post("/api/agent/enroll", enrollBody(token, (await newKeys()).publicKey))).status).toBe(201);
    const refusals = await refusalsSince("host.enroll_refused");
    await expectError(await post("/api/agent/enroll", enrollBody(token, (await newKeys()).publicKey)), 400, "invalid_join_token");
    expect(await refusals()).toEqual({ "invalid join token": 1 });
  });

  it("refuses an expired or unknown join token", async () => {
    const cookie = await operatorCookie();
    const token = await joinToken(cookie);
    advance(HOUR + 1000);
    await expectError(await post("/api/agent/enroll", enrollBody(token, (await newKeys()).publicKey)), 400, "invalid_join_token");
    await expectError(await post("/api/agent/enroll", enrollBody("bjt_nonsense", (await newKeys()).publicKey)), 400, "invalid_join_token");
  });

  it("refuses a key that is not Ed25519, and keeps the token for a corrected try", async () => {
    const cookie = await operatorCookie();
    const token = await joinToken(cookie);
    await expectError(await post("/api/agent/enroll", enrollBody(token, "AAAA")), 400, "invalid_public_key");
    expect((await post("/api/agent/enroll", enrollBody(token, (await newKeys()).publicKey))).status).toBe(201);
  });

  it("refuses a taken host name without spending the token", async () => {
    const cookie = await operatorCookie();
    const first = enrollBody(await joinToken(cookie), (await newKeys()).publicKey);
    expect((await post("/api/agent/enroll", first)).status).toBe(201);
    const token = await joinToken(cookie);
    await expectError(await post("/api/agent/enroll", { ...enrollBody(token, (await newKeys()).publicKey), name: first.name }), 409, "host_name_taken");
    expect((await post("/api/agent/enroll", enrollBody(token, (await newKeys()).publicKey))).status).toBe(201);
  });

  it("spends the token only with the host written: a failed write leaves it for the agent's next try", async () => {
    const cookie = await operatorCookie();
    const token = await joinToken(cookie);
    const body = enrollBody(token, (await newKeys()).publicKey);
    // The database itself fails the host's row (as a busy or full one would), after every check passed.
    await env.DB.exec(
      `CREATE TRIGGER fail_host_write BEFORE INSERT ON hosts WHEN NEW.name = '${body.name}' BEGIN SELECT RAISE(ABORT, 'the write failed'); END`,
    );
    try {
      await expectError(await post("/api/agent/enroll", body), 500, "internal_error");
    } finally {
      await env.DB.exec("DROP TRIGGER fail_host_write");
    }
    const hostsNamed = await env.DB.prepare("SELECT count(*) AS n FROM hosts WHERE name = ?").bind(body.name).first<{ n: number }>();
    expect(hostsNamed?.n).toBe(0);
    expect((await post("/api/agent/enroll", body)).status).toBe(201);
  });

  it("tells nobody without a valid token whether a host name exists", async () => {
    const cookie = await operatorCookie();
    const first = enrollBody(await joinToken(cookie), (await newKeys()).publicKey);
    expect((await post("/api/agent/enroll", first)).status).toBe(201);
    await expectError(
      await post("/api/agent/enroll", { ...enrollBody("bjt_guess", (await newKeys()).publicKey), name: first.name }),
      400,
      "invalid_join_token",
    );
  });

  it("validates the request", async () => {
    await expectError(await post("/api/agent/enroll", { joinToken: "x" }), 400, "validation_failed");
    await expectError(await post("/api/agent/enroll", { ...enrollBody("x", "AAAA"), name: "Bad Name!" }), 400, "validation_failed");
  });
});
