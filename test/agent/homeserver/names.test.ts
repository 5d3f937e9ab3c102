// Host namespaces: several agents on one Docker Engine (`npm run dev -- --hosts N`) each name
// and label what they make with their own, so the same server on two of them (a migration)
// never shares a container, network, bridge, chain, firewall tag or uid, and an agent never
// counts another's containers as its own. Without a namespace, today's names exactly.
import { describe, expect, it } from "vitest";
import { agentConfigSchema } from "../../../agent/config.ts";
import { HOST_NAMESPACE_LABEL, homeserverNames, hostNamespaceLabels, inHostNamespace, type HomeserverNames } from "../../../agent/homeserver/names.ts";
import { DEFAULT_UID_RANGE, uidRangeOf } from "../../../agent/homeserver/uids.ts";
import { chainNames, firewallRules } from "../../../agent/network/firewall.ts";

const SERVER_ID = "3f2a9c1e-7b4d-4e8f-9a01-23456789abcd";

/** Every name a server's pieces get on the host, as a list. */
function allNames(names: HomeserverNames): string[] {
  const { forward, input } = chainNames(names.chainId);
  return [
    names.dbNetwork,
    names.hsNetwork,
    names.dbBridge,
    names.hsBridge,
    names.postgres,
    names.synapse,
    names.synapsePrevious,
    forward,
    input,
    names.firewallTag,
  ];
}

describe("host namespaces", () => {
  it("an agent without one names everything as before", () => {
    expect(homeserverNames(SERVER_ID)).toEqual({
      serverId: SERVER_ID,
      shortId: "3f2a9c1e7b4d",
      dbNetwork: "berth-3f2a9c1e7b4d-db",
      hsNetwork: "berth-3f2a9c1e7b4d-hs",
      dbBridge: "bdb3f2a9c1e7b4d",
      hsBridge: "bhs3f2a9c1e7b4d",
      postgres: "berth-3f2a9c1e7b4d-postgres",
      synapse: "berth-3f2a9c1e7b4d-synapse",
      synapsePrevious: "berth-3f2a9c1e7b4d-synapse-previous",
      chainId: "3f2a9c1e7b4d",
      firewallTag: "berth:3f2a9c1e7b4d",
    });
    expect(chainNames(homeserverNames(SERVER_ID).chainId)).toEqual({ forward: "BERTH-F-3f2a9c1e7b4d", input: "BERTH-I-3f2a9c1e7b4d" });
    expect(hostNamespaceLabels(undefined)).toEqual({});
    expect(uidRangeOf(undefined)).toEqual(DEFAULT_UID_RANGE);
  });

  it("the same server on two namespaced agents and the default one shares no name", () => {
    const h2 = homeserverNames(SERVER_ID, "h2");
    expect(h2).toMatchObject({
      dbNetwork: "berth-h2-3f2a9c1e7b4d-db",
      hsNetwork: "berth-h2-3f2a9c1e7b4d-hs",
      dbBridge: "bdbh23f2a9c1e7b",
      hsBridge: "bhsh23f2a9c1e7b",
      postgres: "berth-h2-3f2a9c1e7b4d-postgres",
      synapse: "berth-h2-3f2a9c1e7b4d-synapse",
      synapsePrevious: "berth-h2-3f2a9c1e7b4d-synapse-previous",
      chainId: "h23f2a9c1e7b4d",
      firewallTag: "berth:h2:3f2a9c1e7b4d",
    });
    const sets = [undefined, "h2", "h3", "zz"].map((ns) => allNames(homeserverNames(SERVER_ID, ns)));
    const flat = sets.flat();
    expect(new Set(flat).size).toBe(flat.length);
    for (const names of sets) {
      const [, , dbBridge, hsBridge, , , , forward, input] = names;
      // Linux interface names, iptables chain names
      expect(dbBridge!.length).toBeLessThanOrEqual(15);
      expect(hsBridge!.length).toBeLessThanOrEqual(15);
      expect(forward!.length).toBeLessThanOrEqual(28);
      expect(input!.length).toBeLessThanOrEqual(28);
    }
  });

  it("every agent's bridges fall under the wildcards each server's firewall drops traffic to (other customers, whichever agent runs them)", () => {
    const h3 = homeserverNames(SERVER_ID, "h3");
    const rules = firewallRules({ chainId: h3.chainId, tag: h3.firewallTag, hsBridge: h3.hsBridge, dbBridge: h3.dbBridge });
    const drops = rules.forward.map((rule) => rule.join(" ")).filter((rule) => rule.startsWith(`-i ${h3.hsBridge} -o `) && rule.endsWith("-j DROP"));
    const wildcards = drops.map((rule) => rule.split(" ")[3]!).filter((name) => name.endsWith("+"));
    for (const ns of [undefined, "h2", "h3"]) {
      const other = homeserverNames("0b5e1f7c-2a3d-4c5e-8f90-123456789abc", ns);
      for (const bridge of [other.hsBridge, other.dbBridge]) {
        expect(wildcards.some((wildcard) => bridge.startsWith(wildcard.slice(0, -1)))).toBe(true);
      }
    }
    expect(rules.forward.every((rule) => rule.join(" ").includes("--comment berth:h3:3f2a9c1e7b4d"))).toBe(true);
  });

  it("an agent owns only what carries its namespace: the default agent none of a namespaced one's, and no namespace another's", () => {
    expect(hostNamespaceLabels("h2")).toEqual({ [HOST_NAMESPACE_LABEL]: "h2" });
    const h2 = { "berth.workload": SERVER_ID, ...hostNamespaceLabels("h2") };
    const unmarked = { "berth.workload": SERVER_ID };
    expect(inHostNamespace(h2, "h2")).toBe(true);
    expect(inHostNamespace(h2, "h3")).toBe(false);
    expect(inHostNamespace(h2, undefined)).toBe(false);
    expect(inHostNamespace(unmarked, undefined)).toBe(true);
    expect(inHostNamespace(unmarked, "h2")).toBe(false);
    expect(inHostNamespace({ [HOST_NAMESPACE_LABEL]: "" }, undefined)).toBe(false);
  });

  it("each namespace has uids of its own, none another agent's", () => {
    const ranges = [undefined, "g0", "h1", "h2", "h3", "zz"].map(uidRangeOf);
    expect(uidRangeOf("h2")).toEqual({ first: 300_000 + 100_000 * Number.parseInt("h2", 36), last: 300_000 + 100_000 * Number.parseInt("h2", 36) + 99_999 });
    for (const [i, a] of ranges.entries()) {
      expect(a.last - a.first).toBe(99_999);
      expect(a.last).toBeLessThan(2 ** 31);
      for (const b of ranges.slice(i + 1)) expect(a.last < b.first || b.last < a.first).toBe(true);
    }
  });

  it("only two characters, a letter g–z first: never a hex digit, so a namespaced bridge never takes a default one's name", () => {
    for (const bad of ["", "h", "h22", "H2", "a1", "f0", "9h", "h-", "../", "h\n"]) {
      expect(() => homeserverNames(SERVER_ID, bad), bad).toThrow(/not a host namespace/);
      expect(() => hostNamespaceLabels(bad), bad).toThrow(/not a host namespace/);
      expect(() => uidRangeOf(bad), bad).toThrow(/not a host namespace/);
    }
    const config = { controlPlaneUrl: "http://localhost:8787", hostId: "h", connectUrl: "ws://localhost:8787/agent" };
    expect(agentConfigSchema.parse({ ...config, hostNamespace: "h2" }).hostNamespace).toBe("h2");
    expect(agentConfigSchema.parse(config).hostNamespace).toBeUndefined();
    for (const bad of ["a1", "h22", "H2"]) expect(agentConfigSchema.safeParse({ ...config, hostNamespace: bad }).success).toBe(false);
  });
});
