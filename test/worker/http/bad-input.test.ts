import { describe, expect, it } from "vitest";
import { MAX_BODY_BYTES } from "../../../worker/http/validation";
import { signStripe } from "../billing/stripe-helpers";
import { call, expectError, logIn, post, signUp, uniqueEmail, verifiedUser, PASSWORD } from "../helpers";

const json = { "content-type": "application/json" };

describe("bad input gets a clear 4xx in the error shape, never a 5xx", () => {
  it.each([
    ["malformed JSON", '{"email": ', json, 400, "invalid_json"],
    ["an empty body", "", json, 400, "invalid_json"],
    ["a JSON array", "[]", json, 400, "validation_failed"],
    ["JSON null", "null", json, 400, "validation_failed"],
    ["a JSON string", '"hello"', json, 400, "validation_failed"],
    ["a form body", "email=a%40b.com&password=x", { "content-type": "application/x-www-form-urlencoded" }, 415, "unsupported_media_type"],
    ["no content type", "{}", {}, 415, "unsupported_media_type"],
    ["text/plain JSON", JSON.stringify({ email: "a@example.com", password: PASSWORD }), { "content-type": "text/plain" }, 415, "unsupported_media_type"],
  ])("%s", async (_label, body, headers, status, code) => {
    await expectError(await call("/api/auth/signup", { method: "POST", rawBody: body, headers }), status, code);
  });

  it("an oversized body", async () => {
    const huge = JSON.stringify({ email: uniqueEmail(), password: "x".repeat(MAX_BODY_BYTES + 1) });
    await expectError(await call("/api/auth/signup", { method: "POST", rawBody: huge, headers: json }), 413, "payload_too_large");
  });

  it.each([
    ["missing password", { email: "a@example.com" }],
    ["missing email", { password: PASSWORD }],
    ["an extra field", { email: "a@example.com", password: PASSWORD, admin: true }],
    ["email of the wrong type", { email: 42, password: PASSWORD }],
    ["password of the wrong type", { email: "a@example.com", password: ["x"] }],
    ["a too-short password", { email: "a@example.com", password: "short" }],
    ["a 257-character password", { email: "a@example.com", password: "p".repeat(257) }],
    ["an email with a zero-width space", { email: "a\u200b@example.com", password: PASSWORD }],
    ["an email with a bidi override", { email: "\u202eadmin@example.com", password: PASSWORD }],
    ["an email with CRLF", { email: "a@example.com\r\nBcc: b@example.com", password: PASSWORD }],
    ["an email with a lone surrogate", { email: "a\ud800@example.com", password: PASSWORD }],
    ["a 10 kB email", { email: `${"a".repeat(10_000)}@example.com`, password: PASSWORD }],
  ])("sign-up with %s", async (_label, body) => {
    const response = await post("/api/auth/signup", body);
    const code = await expectError(response, 400, "validation_failed");
    expect(code).toBe("validation_failed");
  });

  it("names the unexpected field without echoing values", async () => {
    const response = await post("/api/auth/signup", { email: "a@example.com", password: "s3cret-value-here", role: "operator" });
    const body = (await response.json()) as { error: { message: string } };
    expect(body.error.message).toContain("role");
    expect(body.error.message).not.toContain("s3cret-value-here");
  });

  it.each([
    ["/api/auth/login", { email: "a@example.com" }],
    ["/api/auth/verify-email", { token: "" }],
    ["/api/auth/verify-email", { token: "t".repeat(300) }],
    ["/api/auth/password-reset/request", { email: "not-an-email" }],
    ["/api/auth/password-reset/confirm", { token: "abc" }],
    ["/api/auth/email-change/confirm", {}],
  ])("%s with %j", async (path, body) => {
    await expectError(await post(path, body), 400, "validation_failed");
  });

  it("authenticated routes validate too", async () => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    await expectError(await post("/api/auth/email-change/request", { newEmail: "nope", password: PASSWORD }, { cookie }), 400, "validation_failed");
    await expectError(await post("/api/auth/password-change", { currentPassword: PASSWORD }, { cookie }), 400, "validation_failed");
  });

  it("unknown routes and wrong methods are JSON 404s", async () => {
    await expectError(await call("/api/nope"), 404, "not_found");
    await expectError(await call("/api/auth/login"), 404, "not_found");
    await expectError(await call("/api/me", { method: "PATCH" }), 404, "not_found");
  });

  it("forms with bad input re-render with the reason, never a 5xx", async () => {
    const form = { "content-type": "application/x-www-form-urlencoded" };
    const response = await call("/signup", { method: "POST", rawBody: "email=nope&password=x", headers: form });
    expect(response.status).toBe(400);
    expect(await response.text()).toContain("must be a valid email address");
    const garbage = await call("/login", { method: "POST", rawBody: "%%%", headers: form });
    expect(garbage.status).toBe(400);
  });

  describe("a form body that cannot be read", () => {
    const browser = { accept: "text/html", origin: "null", "sec-fetch-site": "same-origin" };

    /** Asserts a page (not JSON) with `status` that says `reason`. */
    async function expectPage(response: Response, status: number, reason: string) {
      expect(response.status).toBe(status);
      expect(response.headers.get("content-type")).toMatch(/^text\/html/);
      expect(await response.text()).toMatch(new RegExp(`role="alert">[^<]*${reason}`));
    }

    it.each([
      ["a boundary that is not the body's", "multipart/form-data; boundary=another"],
      ["no boundary", "multipart/form-data"],
    ])("multipart with %s is a 400 page, logged in or not", async (_label, contentType) => {
      const body = '--real\r\nContent-Disposition: form-data; name="email"\r\n\r\na@example.com\r\n--real--\r\n';
      const headers = { ...browser, "content-type": contentType };
      await expectPage(await call("/login", { method: "POST", rawBody: body, headers }), 400, "The form could not be read");
      const cookie = await logIn((await signUp()).email);
      await expectPage(await call("/account/password", { method: "POST", rawBody: body, headers, cookie }), 400, "The form could not be read");
    });

    it("a body that is not a form at all is a 415 page", async () => {
      const response = await call("/signup", {
        method: "POST",
        rawBody: JSON.stringify({ email: "a@example.com", password: PASSWORD }),
        headers: { ...browser, "content-type": "application/json" },
      });
      await expectPage(response, 415, "This form must be sent from its page");
    });

    it("checkout without a plan re-renders the billing page with the reason, whatever the body", async () => {
      const cookie = await logIn((await verifiedUser()).email);
      for (const [rawBody, contentType] of [
        ["", "application/x-www-form-urlencoded"],
        ["plan[]=starter", "application/x-www-form-urlencoded"],
      ]) {
        await expectPage(
          await call("/billing/checkout", { method: "POST", rawBody, headers: { ...browser, "content-type": contentType! }, cookie }),
          400,
          "plan: choose one of the plans",
        );
      }
      for (const [rawBody, contentType] of [
        ["", "application/json"],
        ['{"plan": "starter"}', "text/plain"],
      ]) {
        await expectPage(
          await call("/billing/checkout", { method: "POST", rawBody, headers: { ...browser, "content-type": contentType! }, cookie }),
          415,
          "This form must be sent from its page",
        );
      }
    });

    it("a browser gets the middleware's refusals as pages too; other clients keep the error shape", async () => {
      const oversized = new URLSearchParams({ email: "a@example.com", password: "x".repeat(MAX_BODY_BYTES) });
      const form = { "content-type": "application/x-www-form-urlencoded" };
      await expectPage(await call("/login", { method: "POST", rawBody: oversized, headers: { ...browser, ...form } }), 413, "The request body is over");
      await expectPage(
        await call("/login", {
          method: "POST",
          rawBody: "email=a",
          headers: { ...browser, ...form, origin: "https://evil.example", "sec-fetch-site": "cross-site" },
        }),
        403,
        "Cross-site request refused",
      );
      await expectError(await call("/login", { method: "POST", rawBody: oversized, headers: form }), 413, "payload_too_large");
    });
  });

  it("a Stripe-signed body that is not an event is refused, not stored", async () => {
    for (const payload of ["[]", "{}", '{"id": 42, "type": "invoice.paid", "data": {}}']) {
      const response = await call("/webhooks/stripe", {
        method: "POST",
        rawBody: payload,
        headers: { "content-type": "application/json", "stripe-signature": await signStripe(payload, Math.floor(Date.now() / 1000)) },
      });
      await expectError(response, 400, "invalid_event");
    }
  });
});
