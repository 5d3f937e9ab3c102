// Caddy restarting (with only its boot config, as `caddy run` without --resume would)
// loses the routes; the agent's record in its state dir puts them back. The admin
// endpoint here is a unix socket.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CaddyAdminError, CaddyProxy } from "../../../agent/proxy/caddy.ts";
import { captureLog } from "../helpers.ts";
import {
  httpsWhenReady,
  internalCaProxyConfig,
  makeTempDir,
  requireCaddy,
  startCaddy,
  startUpstream,
  type CaddyProcess,
  type Upstream,
} from "./caddy-harness.ts";

let temp: ReturnType<typeof makeTempDir>;
let caddy: CaddyProcess;
let adminAddress: string;
let config: ConstructorParameters<typeof CaddyProxy>[0]["config"];
let upstream: Upstream;

const stateDir = () => join(temp.dir, "state");
const proxyFor = () => new CaddyProxy({ stateDir: stateDir(), config, log: captureLog().log });

async function get(proxy: CaddyProxy, serverName: string, ca: string) {
  return httpsWhenReady({ port: proxy.config.httpsPort, serverName, ca });
}

async function restartCaddy(): Promise<void> {
  await caddy.stop();
  caddy = await startCaddy(temp.dir, adminAddress, "caddy-restarted");
}

beforeAll(async () => {
  requireCaddy();
  temp = makeTempDir("berth-caddy-restart-");
  adminAddress = `unix/${join(temp.dir, "admin.sock")}`;
  config = await internalCaProxyConfig(temp.dir, adminAddress);
  caddy = await startCaddy(temp.dir, adminAddress);
  upstream = await startUpstream("synapse");
});

afterAll(async () => {
  await caddy?.stop();
  await upstream?.close();
  temp?.remove();
});

describe("CaddyProxy when Caddy restarts", () => {
  it("re-ensures the recorded routes (active and suspended) at start, with the same CA", async () => {
    const first = proxyFor();
    await first.ensureBaseConfig();
    await first.route("dave.test", { host: "127.0.0.1", port: upstream.port });
    await first.route("erin.test", { host: "127.0.0.1", port: upstream.port });
    await first.suspend("erin.test");
    const root = await first.internalRootCertificate();
    expect((await get(first, "dave.test", root)).status).toBe(200);
    expect((await get(first, "erin.test", root)).status).toBe(503);

    await restartCaddy();
    expect(await caddy.admin.get("/config/")).toEqual({ admin: { listen: adminAddress } });
    expect(await caddy.admin.find("/id/berth-dave.test")).toBeUndefined();

    // A new agent process: a fresh CaddyProxy over the same state dir.
    const second = proxyFor();
    expect(await second.ensureBaseConfig()).toEqual({ changed: true });
    expect(await second.ensureBaseConfig()).toEqual({ changed: false });
    const ids = ((await caddy.admin.get("/config/apps/http/servers/berth/routes")) as Array<{ "@id": string }>).map((r) => r["@id"]);
    expect(ids).toEqual(["berth-dave.test", "berth-erin.test", "berth-fallback"]);
    expect(await second.internalRootCertificate()).toBe(root); // same storage, same CA
    expect((await get(second, "dave.test", root)).status).toBe(200);
    const erin = await get(second, "erin.test", root);
    expect(erin.status).toBe(503);
    expect(erin.json()).toMatchObject({ errcode: "M_UNAVAILABLE" });
  });

  it("a route change on an emptied Caddy loads the base config with every recorded route", async () => {
    await restartCaddy();
    const proxy = proxyFor();
    await proxy.route("frank.test", { host: "127.0.0.1", port: upstream.port }); // no ensureBaseConfig first
    const ids = ((await caddy.admin.get("/config/apps/http/servers/berth/routes")) as Array<{ "@id": string }>).map((r) => r["@id"]);
    expect(ids).toEqual(["berth-dave.test", "berth-erin.test", "berth-frank.test", "berth-fallback"]);
    const root = await proxy.internalRootCertificate();
    expect((await get(proxy, "frank.test", root)).status).toBe(200);
    expect((await get(proxy, "dave.test", root)).status).toBe(200);
  });

  it("keepConfigured repairs a restarted Caddy on its own", async () => {
    const proxy = proxyFor();
    const stop = proxy.keepConfigured(100);
    try {
      await restartCaddy();
      const started = Date.now();
      while ((await caddy.admin.find("/id/berth-frank.test")) === undefined) {
        if (Date.now() - started > 10_000) throw new Error("keepConfigured did not restore the routes");
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      stop();
    }
  });

  it("fails clearly when Caddy is not running, keeping the wish in the record", async () => {
    await caddy.stop();
    const proxy = proxyFor();
    const attempt = proxy.route("gina.test", { host: "127.0.0.1", port: upstream.port });
    await expect(attempt).rejects.toBeInstanceOf(CaddyAdminError);
    await expect(attempt).rejects.toThrow(/cannot reach the Caddy admin API at unix\/.*ENOENT|ECONNREFUSED/);
    expect(proxy.recordedRoutes()["gina.test"]).toEqual({ upstream: { host: "127.0.0.1", port: upstream.port }, suspended: false });

    caddy = await startCaddy(temp.dir, adminAddress, "caddy-again");
    await proxy.ensureBaseConfig();
    const root = await proxy.internalRootCertificate();
    expect((await get(proxy, "gina.test", root)).status).toBe(200);
  });
});
