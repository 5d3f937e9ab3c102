import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call, post, PRODUCTION } from "../helpers";

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

describe("form-action", () => {
  it("allows our own forms and Stripe's hosted pages, which our billing forms redirect to", async () => {
    const csp = (await call("/billing")).headers.get("content-security-policy")!;
    const formAction = csp.split("; ").find((directive) => directive.startsWith("form-action"))!;
    expect(formAction.split(" ")).toEqual(expect.arrayContaining(["'self'", "https://checkout.stripe.com", "https://billing.stripe.com"]));
  });

  it("allows the local Stripe emulator in development only", async () => {
    const emulatorOrigin = new URL(env.STRIPE_API_URL!).origin;
    expect((await call("/")).headers.get("content-security-policy")).toContain(emulatorOrigin);
    const production = await call("/", { env: PRODUCTION });
    expect(production.headers.get("content-security-policy")).not.toContain(emulatorOrigin);
  });
});
