import { describe, expect, it } from "vitest";
import { expectError, logIn, me, post, signUp } from "../helpers";

describe("CSRF protection", () => {
  it.each([
    ["another site's Origin", { origin: "https://evil.example" }],
    ["a customer homeserver's Origin (same site, other origin)", { origin: "https://alice.localhost" }],
    ["our host on another scheme", { origin: "https://localhost" }],
    ["an opaque Origin", { origin: "null" }],
    ["Sec-Fetch-Site: cross-site", { "sec-fetch-site": "cross-site" }],
    ["Sec-Fetch-Site: same-site", { "sec-fetch-site": "same-site" }],
    ["an opaque Origin from a cross-site sandbox", { origin: "null", "sec-fetch-site": "cross-site" }],
  ])("refuses a cookie-authenticated POST with %s, and the session survives", async (_label, headers) => {
    const { email } = await signUp();
    const cookie = await logIn(email);
    await expectError(await post("/api/auth/logout-all", undefined, { cookie, headers }), 403, "csrf_rejected");
    await expectError(
      await post("/api/auth/password-change", { currentPassword: "correct horse battery staple", newPassword: "attacker chosen" }, { cookie, headers }),
      403,
      "csrf_rejected",
    );
    expect((await me(cookie)).status).toBe(200);
  });

  it("refuses cross-site form posts to pages, including log-in (login CSRF)", async () => {
    const { email } = await signUp();
    const response = await post("/login", undefined, {
      rawBody: new URLSearchParams({ email, password: "correct horse battery staple" }),
      headers: { origin: "https://evil.example", "content-type": "application/x-www-form-urlencoded" },
    });
    await expectError(response, 403, "csrf_rejected");
  });

  it("accepts same-origin requests, and clients that are not browsers", async () => {
    const { email } = await signUp();
    const sameOrigin = await logIn(email);
    expect((await post("/api/auth/logout", undefined, { cookie: sameOrigin, headers: { origin: "http://localhost" } })).status).toBe(204);
    const fetchMetadata = await logIn(email);
    expect((await post("/api/auth/logout", undefined, { cookie: fetchMetadata, headers: { "sec-fetch-site": "same-origin" } })).status).toBe(204);
    // Chromium under our Referrer-Policy: no-referrer posts same-origin forms like this.
    const noReferrer = await logIn(email);
    expect((await post("/api/auth/logout", undefined, { cookie: noReferrer, headers: { origin: "null", "sec-fetch-site": "same-origin" } })).status).toBe(204);
    const cli = await logIn(email);
    expect((await post("/api/auth/logout", undefined, { cookie: cli })).status).toBe(204);
  });
});
