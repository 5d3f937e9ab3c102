// The hosts `npm run dev` runs on this machine (scripts/local-hosts.mjs): one, as always, or N,
// each with its own directories, host namespace, Caddy address and HTTP port, one HTTPS port.
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { localAgentConfigDirs, localHosts, parseStandInDomains } from "../../scripts/local-hosts.mjs";

const state = mkdtempSync(join(tmpdir(), "berth-local-hosts-"));
afterAll(() => rmSync(state, { recursive: true, force: true }));

describe("npm run dev's local hosts", () => {
  it("one host is the single host of old: its directories, every interface, no namespace", () => {
    expect(localHosts(state, 1, 8443)).toEqual([
      {
        index: 1,
        name: "dev-host",
        configDir: join(state, "agent"),
        dataRoot: join(state, "agent-data"),
        caddyDir: join(state, "caddy"),
        httpsPort: 8443,
        httpPort: 8444,
      },
    ]);
  });

  it("--hosts N: each host its own directories, namespace h<i>, Caddy on 127.0.0.<i+1> at the shared HTTPS port, HTTP port + i", () => {
    const hosts = localHosts(state, 3, 20_000);
    expect(hosts.map((h) => [h.index, h.name, h.hostNamespace, h.address, h.httpsPort, h.httpPort])).toEqual([
      [1, "dev-host-1", "h1", "127.0.0.2", 20_000, 20_001],
      [2, "dev-host-2", "h2", "127.0.0.3", 20_000, 20_002],
      [3, "dev-host-3", "h3", "127.0.0.4", 20_000, 20_003],
    ]);
    expect(hosts[1]).toMatchObject({
      configDir: join(state, "hosts", "h2", "agent"),
      dataRoot: join(state, "hosts", "h2", "agent-data"),
      caddyDir: join(state, "hosts", "h2", "caddy"),
    });
    const dirs = hosts.flatMap((h) => [h.configDir, h.dataRoot, h.caddyDir]);
    expect(new Set(dirs).size).toBe(dirs.length);
  });

  it("refuses a count it cannot run", () => {
    for (const count of [0, 10, 1.5, Number.NaN]) expect(() => localHosts(state, count, 8443)).toThrow(/--hosts: a number from 1 to 9/);
  });

  it("--stand-in-domain: domains under .test, each to a local server's host and port; anything else is refused, saying how", () => {
    expect(parseStandInDomains([])).toBeUndefined();
    expect(parseStandInDomains(["acme.test=127.0.0.1:8080", "shop.example.test=localhost:20001"])).toEqual({
      "acme.test": { host: "127.0.0.1", port: 8080 },
      "shop.example.test": { host: "localhost", port: 20_001 },
    });
    for (const bad of ["acme.com=127.0.0.1:8080", "acme.test", "acme.test=127.0.0.1", "acme.test=127.0.0.1:http"]) {
      expect(() => parseStandInDomains([bad]), bad).toThrow(/--stand-in-domain: <domain under \.test>=<host>:<port>/);
    }
  });

  it("the reset finds every local agent's config directory", () => {
    expect(localAgentConfigDirs(state)).toEqual([join(state, "agent")]);
    for (const host of localHosts(state, 2, 8443)) mkdirSync(host.configDir, { recursive: true });
    expect(localAgentConfigDirs(state).sort()).toEqual([join(state, "agent"), join(state, "hosts", "h1", "agent"), join(state, "hosts", "h2", "agent")].sort());
  });
});
