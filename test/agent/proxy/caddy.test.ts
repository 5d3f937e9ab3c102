// CaddyProxy against a real Caddy (started here on ports from test/ports.ts, internal CA), with tiny
// HTTP servers standing in for Synapse. Requests go to 127.0.0.1 with SNI
// `<name>.test` and trust only Caddy's internal root.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CaddyAdminError, CaddyProxy, ROUTES_FILE, expiringSoon } from "../../../agent/proxy/caddy.ts";
import { DEFAULT_MAX_BODY_BYTES } from "../../../agent/proxy/caddy-config.ts";
import { reservePort } from "../../ports.ts";
import {
  https,
  httpsWhenReady,
  makeTempDir,
  requireCaddy,
  startCaddy,
  startUpstream,
  type CaddyProcess,
  type HttpsOptions,
  type Upstream,
} from "./caddy-harness.ts";

let temp: ReturnType<typeof makeTempDir>;
let caddy: CaddyProcess;
let proxy: CaddyProxy;
let httpsPort: number;
let root: string;
let upA: Upstream;
let upB: Upstream;

const stateDir = () => join(temp.dir, "state");
const get = (serverName: string, extra: Partial<HttpsOptions> = {}) => httpsWhenReady({ port: httpsPort, serverName, ca: root, ...extra });

async function berthRoutes(): Promise<Array<{ "@id"?: string }>> {
  return (await caddy.admin.get("/config/apps/http/servers/berth/routes")) as Array<{ "@id"?: string }>;
}

beforeAll(async () => {
  requireCaddy();
  temp = makeTempDir("berth-caddy-test-");
  const adminAddress = `127.0.0.1:${await reservePort()}`;
  httpsPort = await reservePort();
  caddy = await startCaddy(temp.dir, adminAddress);
  proxy = new CaddyProxy({
    stateDir: stateDir(),
    config: {
      adminAddress,
      tls: "internal",
      httpsPort,
      httpPort: await reservePort(),
      listenHost: "127.0.0.1",
      storageDir: join(temp.dir, "storage"),
    },
  });
  upA = await startUpstream("A");
  upB = await startUpstream("B");
});

afterAll(async () => {
  await caddy?.stop();
  await upA?.close();
  await upB?.close();
  temp?.remove();
});

describe("CaddyProxy against a real Caddy", () => {
  it("applies the base config once (internal CA, no trust-store install, loopback admin)", async () => {
    expect(await proxy.ensureBaseConfig()).toEqual({ changed: true });
    const config = (await caddy.admin.get("/config/")) as any;
    expect(config.admin).toEqual({ listen: proxy.config.adminAddress });
    expect(config.apps.http.https_port).toBe(httpsPort);
    expect(config.apps.http.servers.berth.listen).toEqual([`127.0.0.1:${httpsPort}`]);
    expect(config.apps.http.servers.berth.routes.map((r: any) => r["@id"])).toEqual(["berth-fallback"]);
    expect(config.apps.tls.automation.policies).toEqual([{ issuers: [{ module: "internal" }] }]);
    expect(config.apps.pki.certificate_authorities.local.install_trust).toBe(false);
    expect(config.storage).toEqual({ module: "file_system", root: join(temp.dir, "storage") });
    // A second call finds nothing to change.
    expect(await proxy.ensureBaseConfig()).toEqual({ changed: false });

    // The internal root: from the admin API, and the same PEM in Caddy's storage.
    root = await proxy.internalRootCertificate();
    expect(root).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(readFileSync(proxy.internalRootPath()!, "utf8").trim()).toBe(root.trim());
  });

  it("proxies a routed name over HTTPS (SNI, internal CA only) with X-Forwarded-For/Proto", async () => {
    await proxy.route("alice.test", { host: "127.0.0.1", port: upA.port });
    const res = await get("alice.test", { path: "/_matrix/client/versions", headers: { "X-Forwarded-For": "6.6.6.6" } });
    expect(res.status).toBe(200);
    const seen = res.json() as { upstream: string; url: string; headers: Record<string, string> };
    expect(seen.upstream).toBe("A");
    expect(seen.url).toBe("/_matrix/client/versions");
    expect(seen.headers.host).toBe("alice.test");
    expect(seen.headers["x-forwarded-proto"]).toBe("https");
    expect(seen.headers["x-forwarded-for"]).toBe("127.0.0.1"); // the client's spoofed value is replaced
    expect(res.certificate.subjectaltname).toContain("DNS:alice.test");
    expect(res.certificate.issuer.CN).toBe("Caddy Local Authority - ECC Intermediate");

    // Node's default trust store does not know the internal CA.
    await expect(https({ port: httpsPort, serverName: "alice.test", ca: undefined })).rejects.toThrow(/certificate/i);
  });

  it("serves the Matrix well-knowns itself, as JSON with CORS", async () => {
    const before = upA.requests.length;
    const server = await get("alice.test", { path: "/.well-known/matrix/server" });
    expect(server.status).toBe(200);
    expect(server.headers["content-type"]).toBe("application/json");
    expect(server.headers["access-control-allow-origin"]).toBe("*");
    expect(server.json()).toEqual({ "m.server": "alice.test:443" });

    const client = await get("alice.test", { path: "/.well-known/matrix/client" });
    expect(client.status).toBe(200);
    expect(client.headers["content-type"]).toBe("application/json");
    expect(client.headers["access-control-allow-origin"]).toBe("*");
    expect(client.json()).toEqual({ "m.homeserver": { base_url: "https://alice.test" } });
    expect(upA.requests.length).toBe(before); // not proxied
  });

  it("route is idempotent: repeated and concurrent calls leave one route; a new upstream replaces it", async () => {
    await proxy.route("alice.test", { host: "127.0.0.1", port: upA.port });
    await Promise.all([1, 2, 3].map(() => proxy.route("alice.test", { host: "127.0.0.1", port: upA.port })));
    let ids = (await berthRoutes()).map((r) => r["@id"]);
    expect(ids.filter((id) => id === "berth-alice.test")).toHaveLength(1);
    expect(ids.at(-1)).toBe("berth-fallback");
    expect(Object.keys(proxy.recordedRoutes())).toEqual(["alice.test"]);

    await proxy.route("alice.test", { host: "127.0.0.1", port: upB.port });
    expect(((await get("alice.test")).json() as { upstream: string }).upstream).toBe("B");
    await proxy.route("alice.test", { host: "127.0.0.1", port: upA.port });
    expect(((await get("alice.test")).json() as { upstream: string }).upstream).toBe("A");
    ids = (await berthRoutes()).map((r) => r["@id"]);
    expect(ids).toEqual(["berth-alice.test", "berth-fallback"]);
    expect(await proxy.ensureBaseConfig()).toEqual({ changed: false }); // the record and Caddy agree
  });

  it("limits request bodies to Synapse's upload limit with a Matrix 413", async () => {
    const exact = await get("alice.test", {
      method: "POST",
      path: "/_matrix/media/v3/upload",
      body: Buffer.alloc(DEFAULT_MAX_BODY_BYTES),
    });
    expect(exact.status).toBe(200);
    expect((exact.json() as { bodyBytes: number }).bodyBytes).toBe(DEFAULT_MAX_BODY_BYTES);

    const before = upA.requests.length;
    const tooBig = await get("alice.test", { method: "POST", path: "/_matrix/media/v3/upload", announceOnly: DEFAULT_MAX_BODY_BYTES + 1 });
    expect(tooBig.status).toBe(413);
    expect(tooBig.json()).toMatchObject({ errcode: "M_TOO_LARGE" });
    expect(tooBig.headers["access-control-allow-origin"]).toBe("*");
    expect(upA.requests.length).toBe(before);

    // Without a Content-Length (chunked), request_body cuts the stream at the limit; the
    // server's error routes turn Caddy's bare 413 into the same Matrix error.
    const chunked = await get("alice.test", {
      method: "POST",
      path: "/_matrix/media/v3/upload",
      headers: { "Transfer-Encoding": "chunked" },
      body: Buffer.alloc(DEFAULT_MAX_BODY_BYTES + 1),
    });
    expect(chunked.status).toBe(413);
    expect(chunked.json()).toMatchObject({ errcode: "M_TOO_LARGE" });
    expect(upA.requests.length).toBe(before); // the upstream never saw a complete request
  });

  it("limits a route to its own homeserver's upload size when the route names one; other routes keep the default", async () => {
    const limit = 2 * 1024 * 1024;
    await proxy.route("small.test", { host: "127.0.0.1", port: upA.port }, { maxBodyBytes: limit });
    const upload = (host: string, bytes: number) => get(host, { method: "POST", path: "/_matrix/media/v3/upload", announceOnly: bytes });
    expect((await get("small.test", { method: "POST", path: "/_matrix/media/v3/upload", body: Buffer.alloc(limit) })).status).toBe(200);
    expect((await upload("small.test", limit + 1)).status).toBe(413);
    // Other routes keep the proxy's default.
    expect((await get("alice.test", { method: "POST", path: "/_matrix/media/v3/upload", body: Buffer.alloc(limit + 1) })).status).toBe(200);
    await expect(proxy.route("small.test", { host: "127.0.0.1", port: upA.port }, { maxBodyBytes: 1.5 })).rejects.toThrow(/not a valid body limit/);
    await proxy.remove("small.test");
  });

  it("answers a Matrix-style 502 with CORS when the upstream is down", async () => {
    await proxy.route("down.test", { host: "127.0.0.1", port: await reservePort() });
    const res = await get("down.test", { path: "/_matrix/client/versions" });
    expect(res.status).toBe(502);
    expect(res.headers["content-type"]).toBe("application/json");
    expect(res.headers["access-control-allow-origin"]).toBe("*");
    expect(res.json()).toEqual({ errcode: "M_UNKNOWN", error: "Bad Gateway" });
    await proxy.remove("down.test");
  });

  it("suspend answers 503 M_UNAVAILABLE but keeps the well-knowns; route again resumes", async () => {
    await proxy.suspend("alice.test");
    await proxy.suspend("alice.test"); // idempotent
    const before = upA.requests.length;
    const suspended = await get("alice.test", { path: "/_matrix/client/v3/sync" });
    expect(suspended.status).toBe(503);
    expect(suspended.headers["content-type"]).toBe("application/json");
    expect(suspended.json()).toEqual({ errcode: "M_UNAVAILABLE", error: "This homeserver is suspended" });
    expect((await get("alice.test", { path: "/.well-known/matrix/server" })).json()).toEqual({ "m.server": "alice.test:443" });
    expect(upA.requests.length).toBe(before);
    expect(proxy.recordedRoutes()["alice.test"]).toEqual({ upstream: { host: "127.0.0.1", port: upA.port }, suspended: true });
    expect((await berthRoutes()).filter((r) => r["@id"] === "berth-alice.test")).toHaveLength(1);

    await proxy.route("alice.test", { host: "127.0.0.1", port: upA.port });
    const resumed = await get("alice.test", { path: "/_matrix/client/v3/sync" });
    expect(resumed.status).toBe(200);
    expect((resumed.json() as { upstream: string }).upstream).toBe("A");
  });

  it("routes two homeservers independently", async () => {
    await proxy.route("bob.test", { host: "127.0.0.1", port: upB.port });
    const a = await get("alice.test");
    const b = await get("bob.test");
    expect((a.json() as { upstream: string }).upstream).toBe("A");
    expect((b.json() as { upstream: string }).upstream).toBe("B");
    expect(b.certificate.subjectaltname).toBe("DNS:bob.test");
    expect((await get("bob.test", { path: "/.well-known/matrix/server" })).json()).toEqual({ "m.server": "bob.test:443" });

    await proxy.suspend("bob.test");
    expect((await get("bob.test")).status).toBe(503);
    expect((await get("alice.test")).status).toBe(200);
    await proxy.route("bob.test", { host: "127.0.0.1", port: upB.port });
    expect((await get("bob.test")).status).toBe(200);
  });

  it("certificates() reports each routed name's notAfter and the internal issuer", async () => {
    const now = Date.now();
    const reports = await proxy.certificates();
    expect(reports.map((r) => r.serverName)).toEqual(["alice.test", "bob.test"]);
    for (const report of reports) {
      expect(report.notAfter).toBeGreaterThan(now);
      expect(report.notAfter).toBeLessThan(now + 8 * 24 * 60 * 60 * 1000); // internal leaves live 12 h
      expect(report.issuer).toBe("Caddy Local Authority - ECC Intermediate");
    }
    const checks = await proxy.checkCertificates();
    expect(checks.every((c) => c.trusted && !c.error)).toBe(true);
    // 12-hour internal certificates are always "expiring soon" by the 14-day rule.
    expect(expiringSoon(reports)).toHaveLength(2);
    expect(expiringSoon(reports, 0)).toHaveLength(0);
  });

  it("remove drops the route (TLS handshake for the name then fails; other names are unaffected)", async () => {
    await proxy.route("carol.test", { host: "127.0.0.1", port: upA.port });
    expect((await get("carol.test")).status).toBe(200);
    await proxy.remove("carol.test");
    await proxy.remove("carol.test"); // idempotent
    expect(await caddy.admin.find("/id/berth-carol.test")).toBeUndefined();
    expect(Object.keys(proxy.recordedRoutes()).sort()).toEqual(["alice.test", "bob.test"]);
    expect(JSON.parse(readFileSync(join(stateDir(), ROUTES_FILE), "utf8")).routes["carol.test"]).toBeUndefined();
    // Caddy no longer manages a certificate for the name: the handshake is refused.
    await expect(https({ port: httpsPort, serverName: "carol.test", ca: root })).rejects.toThrow(/alert|handshake|socket/i);
    // A request reaching Caddy for a name without a route (here: another name's SNI) gets the 404.
    const orphan = await get("alice.test", { host: "carol.test" });
    expect(orphan.status).toBe(404);
    expect(orphan.json()).toMatchObject({ errcode: "M_NOT_FOUND" });
    expect((await get("alice.test")).status).toBe(200);
  });

  it("surfaces Caddy's own error messages", async () => {
    const bogus = caddy.admin.request("POST", "/config/apps/http/servers/berth/routes", { handle: [{ handler: "nope" }] });
    await expect(bogus).rejects.toBeInstanceOf(CaddyAdminError);
    await expect(bogus).rejects.toThrow(/unknown module: http\.handlers\.nope/);
    expect((await berthRoutes()).map((r) => r["@id"])).toEqual(["berth-bob.test", "berth-alice.test", "berth-fallback"]); // unchanged
    await expect(proxy.route("Alice.test", { host: "127.0.0.1", port: 1 })).rejects.toThrow(/not a valid homeserver host name/);
    await expect(proxy.route("alice.test", { host: "127.0.0.1", port: 0 })).rejects.toThrow(/not a valid upstream/);
  });
});
