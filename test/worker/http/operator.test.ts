import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call, emailedToken, expectError, logIn, post, signUp } from "../helpers";

// /api/admin: a logged-in operator whose email address is verified (defence in depth:
// `npm run operator -- grant` refuses unverified accounts too).

describe("operators", () => {
  it("an operator account whose email address is not verified is refused until it is", async () => {
    const { email } = await signUp();
    await env.DB.prepare("UPDATE users SET role = 'operator' WHERE email = ?").bind(email).run();
    const cookie = await logIn(email);
    await expectError(await call("/api/admin/hosts", { cookie }), 403, "email_unverified");
    await expectError(await post("/api/admin/join-tokens", { region: "us-east" }, { cookie }), 403, "email_unverified");

    expect((await post("/api/auth/verify-email", { token: await emailedToken(email, "/verify-email") })).status).toBe(200);
    expect((await call("/api/admin/hosts", { cookie })).status).toBe(200);
  });

  it("a customer is refused, verified or not, and nobody logged in gets 401", async () => {
    const { email } = await signUp();
    await expectError(await call("/api/admin/hosts", { cookie: await logIn(email) }), 403, "operator_only");
    await expectError(await call("/api/admin/hosts"), 401);
  });
});
