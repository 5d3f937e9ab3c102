import { describe, expect, it } from "vitest";
import { call, post } from "../helpers";

describe("security headers", () => {
  it.each([
    ["a page", () => call("/")],
    ["an API response", () => call("/api/health")],
    ["an API error", () => post("/api/auth/login", { nope: true })],
    ["a 404", () => call("/no/such/page")],
    ["the stylesheet", () => call("/assets/app.css")],
  ])("are on %s", async (_label, request) => {
    const response = await request();
    const csp = response.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain("unsafe-inline");
    expect(response.headers.get("strict-transport-security")).toMatch(/^max-age=\d{8,}/);
    expect(response.headers.get("x-content-type-options")).toBe("nosniff");
    expect(response.headers.get("x-frame-options")).toBe("DENY");
    expect(response.headers.get("referrer-policy")).toBe("no-referrer");
  });

  it("responses with account data are never cached", async () => {
    expect((await call("/api/me")).headers.get("cache-control")).toBe("no-store");
    expect((await call("/login")).headers.get("cache-control")).toBe("no-store");
  });
});
