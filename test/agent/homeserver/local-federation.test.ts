// The hosts files of --allow-local-federation (development only), against the real Docker Engine:
// each homeserver's file resolves every homeserver of the host to the host's address on that
// server's own bridge, and is rewritten in place (a running Synapse's bind mount keeps the file it
// was made with) as homeservers come and go.
import { existsSync, readFileSync, statSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalFederationHosts } from "../../../agent/homeserver/local-federation.ts";
import { HomeserverRecords } from "../../../agent/homeserver/records.ts";
import { TestRun, dockerUsable } from "./helpers.ts";

const unusable = await dockerUsable();
if (unusable) console.warn(`local federation tests skipped: ${unusable}`);

describe.skipIf(unusable)("local federation's hosts files (real Docker Engine)", () => {
  let run: TestRun;
  let records: HomeserverRecords;
  let hosts: LocalFederationHosts;

  beforeAll(() => {
    run = new TestRun();
    records = new HomeserverRecords(run.stateDir);
    hosts = new LocalFederationHosts(run.stateDir, run.runtime, records, { caRootFile: "/nonexistent/root.crt" });
  });
  afterAll(() => run?.cleanup());

  /** A homeserver's record and, unless `withNetwork` is false, its -hs network; returns its id, name and gateway. */
  async function homeserver(name: string, withNetwork = true): Promise<{ serverId: string; serverName: string; gateway?: string }> {
    const { serverId, serverName, publicBaseUrl, resources, images } = run.spec(name);
    records.write({ serverId, serverName, publicBaseUrl, uid: 200_000, images, resources, suspended: false });
    if (!withNetwork) return { serverId, serverName };
    const network = await run.runtime.ensureNetwork(run.names(serverId).hsNetwork, { labels: run.labels });
    return { serverId, serverName, gateway: network.gateways[0]! };
  }

  const entries = (serverId: string) =>
    readFileSync(hosts.hostsFile(serverId), "utf8")
      .split("\n")
      .filter((line) => line && !line.startsWith("#"));

  it("each file names every homeserver at the host's address on that server's own bridge; files change in place as homeservers come and go", async () => {
    const a = await homeserver("a");
    const b = await homeserver("b");
    const pending = await homeserver("pending", false);
    await hosts.refresh();
    expect(a.gateway).not.toBe(b.gateway);
    const names = [a.serverName, b.serverName, pending.serverName].sort();
    expect(entries(a.serverId)).toEqual(["127.0.0.1\tlocalhost", "::1\tlocalhost", ...names.map((name) => `${a.gateway}\t${name}`)]);
    expect(entries(b.serverId)).toEqual(["127.0.0.1\tlocalhost", "::1\tlocalhost", ...names.map((name) => `${b.gateway}\t${name}`)]);
    // A server whose network is not made yet gets its file when it is.
    expect(existsSync(hosts.hostsFile(pending.serverId))).toBe(false);
    const stat = statSync(hosts.hostsFile(a.serverId));
    expect({ mode: stat.mode & 0o777, uid: stat.uid }).toEqual({ mode: 0o644, uid: 0 });

    const c = await homeserver("c");
    await hosts.refresh();
    expect(entries(a.serverId)).toContain(`${a.gateway}\t${c.serverName}`);
    expect(statSync(hosts.hostsFile(a.serverId)).ino).toBe(stat.ino);

    records.remove(c.serverId);
    await hosts.forget(c.serverId);
    expect(existsSync(hosts.hostsFile(c.serverId))).toBe(false);
    expect(entries(a.serverId).join("\n")).not.toContain(c.serverName);
    expect(statSync(hosts.hostsFile(a.serverId)).ino).toBe(stat.ino);
  });

  it("a homeserver named by a customer's own domain is listed under the host it is served at, never under that domain", async () => {
    const a = await homeserver("own-a");
    const { serverId, publicBaseUrl, resources, images } = run.spec("own-domain");
    const servedHost = new URL(publicBaseUrl).hostname;
    records.write({ serverId, serverName: "acme.test", publicBaseUrl, uid: 200_001, images, resources, suspended: false });
    await hosts.refresh();
    expect(entries(a.serverId)).toContain(`${a.gateway}\t${servedHost}`);
    expect(entries(a.serverId).join("\n")).not.toContain("acme.test");
  });
});
