// The pure parts of the proxy: settings validation, the Caddy JSON it builds, the
// Content-Length pattern, expiry flagging. (caddy.test.ts runs the config in a real Caddy.)
import { describe, expect, it } from "vitest";
import { CaddyProxy, expiringSoon } from "../../../agent/proxy/caddy.ts";
import { CaddyAdmin } from "../../../agent/proxy/caddy-admin.ts";
import { buildConfig, buildRoute, greaterThanPattern, isLoopbackAdminAddress, parseProxyConfig, sameConfig } from "../../../agent/proxy/caddy-config.ts";

describe("proxy settings", () => {
  it("accepts only loopback or unix-socket admin endpoints", () => {
    for (const ok of ["127.0.0.1:2019", "127.1.2.3:2019", "localhost:2019", "[::1]:2019", "unix//run/caddy/admin.sock"]) {
      expect(isLoopbackAdminAddress(ok), ok).toBe(true);
    }
    for (const bad of [":2019", "0.0.0.0:2019", "10.0.0.1:2019", "[::]:2019", "example.com:2019", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ""]) {
      expect(isLoopbackAdminAddress(bad), bad).toBe(false);
    }
    expect(() => parseProxyConfig({ adminAddress: "0.0.0.0:2019", tls: "internal" })).toThrow(/must be on loopback/);
    expect(() => new CaddyAdmin({ address: "192.168.1.5:2019" })).toThrow(/not on loopback/);
    expect(() => new CaddyProxy({ stateDir: "/nonexistent", config: { adminAddress: ":2019", tls: "internal" } })).toThrow(/loopback/);
  });

  it("requires an ACME contact in production mode and has production defaults", () => {
    expect(() => parseProxyConfig({})).toThrow(/acmeEmail/);
    const config = parseProxyConfig({ acmeEmail: "ops@example.org" });
    expect(config).toMatchObject({ adminAddress: "127.0.0.1:2019", tls: "acme", httpsPort: 443, httpPort: 80, listenHost: "", maxBodyBytes: 50 * 1024 * 1024 });
    expect(() => parseProxyConfig({ tls: "internal", httpPort: 8443, httpsPort: 8443 })).toThrow(/must differ/);
  });
  it("stands in for customers' domains only in development: names under .test, with the internal CA", () => {
    const standInDomains = { "acme.test": { host: "127.0.0.1", port: 20_001 } };
    expect(parseProxyConfig({ tls: "internal", standInDomains }).standInDomains).toEqual(standInDomains);
    expect(() => parseProxyConfig({ acmeEmail: "ops@example.org", standInDomains })).toThrow(/standInDomains: .*tls "internal"/);
    for (const domain of ["acme.com", "test", "acme.test.example.org", "-acme.test", "ACME.test"]) {
      expect(() => parseProxyConfig({ tls: "internal", standInDomains: { [domain]: { host: "127.0.0.1", port: 20_001 } } }), domain).toThrow(/under \.test/);
    }
  });
});

describe("the Caddy config", () => {
  it("production: Caddy's default issuers with the contact address, :443 on all interfaces, no storage override", () => {
    const config = buildConfig(parseProxyConfig({ acmeEmail: "ops@example.org" }), {});
    expect(config).toEqual({
      admin: { listen: "127.0.0.1:2019" },
      apps: {
        http: {
          http_port: 80,
          https_port: 443,
          servers: {
            berth: { listen: [":443"], routes: [expect.objectContaining({ "@id": "berth-fallback" })], errors: { routes: expect.any(Array) } },
          },
        },
        tls: {
          automation: {
            policies: [
              {
                issuers: [
                  { module: "acme", email: "ops@example.org" },
                  { module: "zerossl", email: "ops@example.org" },
                ],
              },
            ],
          },
        },
        pki: { certificate_authorities: { local: { install_trust: false } } },
      },
    });
    const staging = buildConfig(
      parseProxyConfig({ acmeEmail: "ops@example.org", acmeCa: "https://acme-staging-v02.api.letsencrypt.org/directory" }),
      {},
    ) as any;
    expect(staging.apps.tls.automation.policies).toEqual([
      { issuers: [{ module: "acme", ca: "https://acme-staging-v02.api.letsencrypt.org/directory", email: "ops@example.org" }] },
    ]);
    expect(staging.apps.tls.automation).not.toHaveProperty("renew_interval");
  });

  it("a private ACME CA: its directory, the root its HTTPS is verified against, a faster renewal check", () => {
    const ca = "https://acme.internal.example:14000/dir";
    const config = buildConfig(
      parseProxyConfig({ acmeEmail: "ops@example.org", acmeCa: ca, acmeCaRootsFile: "/etc/caddy/acme-ca-root.pem", renewCheckIntervalSeconds: 2 }),
      {},
    ) as any;
    expect(config.apps.tls.automation).toEqual({
      policies: [{ issuers: [{ module: "acme", ca, email: "ops@example.org", trusted_roots_pem_files: ["/etc/caddy/acme-ca-root.pem"] }] }],
      renew_interval: "2s",
    });
    // A roots file trusts one CA's directory: meaningless without that directory, or with Caddy's internal CA.
    expect(() => parseProxyConfig({ acmeEmail: "ops@example.org", acmeCaRootsFile: "/etc/caddy/acme-ca-root.pem" })).toThrow(/acmeCaRootsFile needs/);
    expect(() => parseProxyConfig({ tls: "internal", acmeCa: ca, acmeCaRootsFile: "/etc/caddy/acme-ca-root.pem" })).toThrow(/acmeCaRootsFile needs/);
    expect(() => parseProxyConfig({ acmeEmail: "ops@example.org", acmeCa: ca, acmeCaRootsFile: "acme-ca-root.pem" })).toThrow(/acmeCaRootsFile/);
    expect(() => parseProxyConfig({ tls: "internal", renewCheckIntervalSeconds: 0 })).toThrow(/renewCheckIntervalSeconds/);
  });

  it("a route: host match, well-knowns, body limit, proxy; suspended: 503 instead of the proxy", () => {
    const config = parseProxyConfig({ tls: "internal" });
    const active = buildRoute("alice.example.org", { upstream: { host: "172.18.0.5", port: 8008 }, suspended: false }, config) as any;
    expect(active["@id"]).toBe("berth-alice.example.org");
    expect(active.match).toEqual([{ host: ["alice.example.org"] }]);
    expect(active.terminal).toBe(true);
    const sub = active.handle[0].routes;
    expect(sub.map((r: any) => r.handle.map((h: any) => h.handler).join("+"))).toEqual([
      "static_response",
      "static_response",
      "static_response",
      "request_body+reverse_proxy",
    ]);
    expect(sub[3].handle[0].max_size).toBe(50 * 1024 * 1024);
    expect(sub[3].handle[1].upstreams).toEqual([{ dial: "172.18.0.5:8008" }]);

    const suspended = buildRoute("alice.example.org", { upstream: { host: "172.18.0.5", port: 8008 }, suspended: true }, config) as any;
    const last = suspended.handle[0].routes.at(-1).handle[0];
    expect(last).toMatchObject({ handler: "static_response", status_code: 503 });
    expect(JSON.parse(last.body)).toEqual({ errcode: "M_UNAVAILABLE", error: "This homeserver is suspended" });
    expect(suspended.handle[0].routes.slice(0, 2)).toEqual(active.handle[0].routes.slice(0, 2));

    const v6 = buildRoute("bob.example.org", { upstream: { host: "fd00::5", port: 8008 }, suspended: false }, config) as any;
    expect(v6.handle[0].routes.at(-1).handle[1].upstreams).toEqual([{ dial: "[fd00::5]:8008" }]);
  });

  it("the well-knowns announce a non-default public port when configured", () => {
    const route = buildRoute(
      "a.test",
      { suspended: false, upstream: { host: "127.0.0.1", port: 1 } },
      parseProxyConfig({ tls: "internal", publicHttpsPort: 8448 }),
    ) as any;
    expect(JSON.parse(route.handle[0].routes[0].handle[0].body)).toEqual({ "m.server": "a.test:8448" });
    expect(JSON.parse(route.handle[0].routes[1].handle[0].body)).toEqual({ "m.homeserver": { base_url: "https://a.test:8448" } });
  });

  it("a stand-in domain's route proxies everything to its local server, after the homeservers' routes and before the catch-all", () => {
    const config = buildConfig(parseProxyConfig({ tls: "internal", standInDomains: { "acme.test": { host: "127.0.0.1", port: 20_001 } } }), {
      "a.berth.localhost": { upstream: { host: "10.1.0.2", port: 8008 }, suspended: false },
    }) as any;
    const routes = config.apps.http.servers.berth.routes;
    expect(routes.map((route: { "@id": string }) => route["@id"])).toEqual(["berth-a.berth.localhost", "stand-in-acme.test", "berth-fallback"]);
    expect(routes[1]).toEqual({
      "@id": "stand-in-acme.test",
      match: [{ host: ["acme.test"] }],
      handle: [{ handler: "reverse_proxy", upstreams: [{ dial: "127.0.0.1:20001" }] }],
      terminal: true,
    });
  });

  it("sameConfig ignores the order of host routes but not their content", () => {
    const config = parseProxyConfig({ tls: "internal" });
    const routes = {
      "a.test": { upstream: { host: "127.0.0.1", port: 1 }, suspended: false },
      "b.test": { upstream: { host: "127.0.0.1", port: 2 }, suspended: false },
    };
    const built = buildConfig(config, routes) as any;
    const swapped = structuredClone(built);
    swapped.apps.http.servers.berth.routes = [
      built.apps.http.servers.berth.routes[1],
      built.apps.http.servers.berth.routes[0],
      built.apps.http.servers.berth.routes[2],
    ];
    expect(sameConfig(built, swapped)).toBe(true);
    expect(sameConfig(built, buildConfig(config, { ...routes, "b.test": { ...routes["b.test"], suspended: true } }))).toBe(false);
    expect(sameConfig(built, null)).toBe(false);
  });
});

describe("greaterThanPattern", () => {
  it("matches exactly the integers above the limit", () => {
    for (const limit of [0, 7, 9, 10, 99, 100, 1024, 52428800, 52428799]) {
      const re = new RegExp(greaterThanPattern(limit));
      const samples = [0, 1, limit - 1, limit, limit + 1, limit + 9, limit * 10, limit + 10 ** String(limit).length, 99999999999];
      let seed = limit + 1;
      for (let i = 0; i < 200; i++) {
        seed = (seed * 1103515245 + 12345) % 2 ** 31; // deterministic spread
        samples.push(seed % (limit * 3 + 1));
      }
      for (const n of samples.filter((x) => x >= 0)) {
        expect(re.test(String(n)), `${n} > ${limit}`).toBe(n > limit);
        expect(re.test(`00${n}`), `00${n} > ${limit}`).toBe(n > limit);
      }
      expect(re.test("")).toBe(false);
      expect(re.test("12a")).toBe(false);
    }
  });
});

describe("expiringSoon", () => {
  it("flags certificates expiring within the window, and expired ones", () => {
    const now = Date.UTC(2030, 0, 1);
    const day = 86_400_000;
    const reports = [
      { serverName: "a.test", notAfter: now + 30 * day, issuer: "R3" },
      { serverName: "b.test", notAfter: now + 13 * day, issuer: "R3" },
      { serverName: "c.test", notAfter: now - day, issuer: "R3" },
    ];
    expect(expiringSoon(reports, 14, now).map((r) => r.serverName)).toEqual(["b.test", "c.test"]);
    expect(expiringSoon(reports, 31, now)).toHaveLength(3);
    expect(expiringSoon(reports, 0, now).map((r) => r.serverName)).toEqual(["c.test"]);
  });
});
