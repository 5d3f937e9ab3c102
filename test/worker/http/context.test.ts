import { env } from "cloudflare:workers";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { requestContext, type AppEnv } from "../../../worker/http/context";
import { call, expectError, PRODUCTION } from "../helpers";

// One middleware gives every handler its context: the clock, the configuration, the client, and
// the links we email, which never come from the request's Host header.

const probe = new Hono<AppEnv>().use(requestContext).get("*", (c) => c.json({ link: c.var.ctx.link("/reset-password?token=t"), client: c.var.ctx.client }));

async function ask(url: string, settings = {}, headers: Record<string, string> = {}) {
  const response = await probe.request(url, { headers }, { ...env, ...settings });
  return (await response.json()) as { link: string; client: string };
}

describe("the request context", () => {
  it("builds links from PUBLIC_URL in production, whatever host the request names", async () => {
    expect((await ask("https://attacker.example/x", PRODUCTION)).link).toBe("https://berth.example/reset-password?token=t");
  });

  it("builds links from the request's own origin in development, which runs on any port", async () => {
    expect((await ask("http://localhost:9123/x")).link).toBe("http://localhost:9123/reset-password?token=t");
  });

  it("knows the client by the network Cloudflare reports", async () => {
    expect((await ask("http://localhost/x", {}, { "cf-connecting-ip": "2001:db8:1:2:3:4:5:6" })).client).toBe("2001:db8:1:2::/64");
    expect((await ask("http://localhost/x")).client).toBe("unknown");
  });
});

describe("routes that need a session", () => {
  it("refuse a caller without one before reading what it sent", async () => {
    const malformed = { rawBody: "{not json", headers: { "content-type": "application/json" } };
    await expectError(await call("/api/servers/some-server/restore", { method: "POST", ...malformed }), 401, "unauthorized");
    await expectError(await call("/api/servers/some-server/admin-password", { method: "POST", ...malformed }), 401, "unauthorized");
  });
});
